"""The artifact manifest: the one contract between `recon.export` and `recon.runtime`.

An artifact is a directory holding `manifest.json` plus the files it lists. Layout of manifest.json
(format version 2; every key below is required unless marked optional):

    {
      "format_version": 2,
      "recon_version": "0.1.0",
      "name": "resunet-deblur",
      "task": "deblur" | "ct",
      "model": {"name": "resunet", "config": {...}, "weights_sha256": "<hex>" | null,
                "trained_task_config": {...} | null},     # optional: the task the weights were trained on
      "task_config": {"task": "ct", "image_size": 256, "n_views": 60, "n_detectors": 363,
                      "detector_spacing": 1.0, "angle_range": 3.14159, "filter": "ram-lak",
                      "noise_level": 0.01, "oversample": 2},  # the deployed task (runtime/task_config.py)
      "input":  {"name": "measurement", "shape": ["batch", 1, H_in, W_in], "dtype": "float32",
                 "layout": "NCHW" (deblur: an image) | "N1AD" (ct: (B, 1, n_views, n_detectors)),
                 "value_range": [lo, hi] | null},           # null: unbounded (sinograms)
      "output": {"name": "image", "shape": ["batch", 1, H, W], "dtype": "float32",
                 "value_range": [0.0, 1.0], "clip": true},  # runtime clips to value_range when clip
      "batch": {"min": 1, "opt": 8, "max": 32},             # the dynamic-batch profile
      "spatial": {"whole_image": true, "min": 64, ...},     # optional: image sizes taken (runtime/spatial.py)
      "files": {
        "model.onnx":      {"sha256": "<hex>", "size": n, "kind": "onnx", "precision": "fp32"},
        "model.fp16.onnx": {"sha256": "<hex>", "size": n, "kind": "onnx", "precision": "fp16"},
        "model.int8.onnx": {"sha256": "<hex>", "size": n, "kind": "onnx", "precision": "int8"},
        "model.plan":      {"sha256": "<hex>", "size": n, "kind": "tensorrt", "precision": "fp16",
                            "tensorrt": {"version": "11.4.0", "compute_capability": "9.0",
                                         "version_compatible": false, "device_name": "..."}},
        "parity.json":     {"sha256": "<hex>", "size": n, "kind": "report"}
      },
      "parity": {"passed": true, ...summary...}             # optional
    }

Optional keys of a plan's "tensorrt" entry: "hardware_compatibility_level" ("none" | "ampere_plus": then any
GPU of compute capability >= 8.0 may run it) and "lean_runtime_excluded" (a version-compatible plan built with
EXCLUDE_LEAN_RUNTIME: it carries no host code, so the runtime need not allow any).

Format version 1 (recon before the typed task config) is still read: its "physics" entry gives way to
"task_config" (taken from "physics"."task_config"; its legacy key "n_angles" is read as "n_views").

Integer inputs are scaled to [0, 1] by their dtype's maximum before they reach the graph; float inputs are
taken as they are. Everything here is plain JSON and numpy-free, so any host (C++ included) can read it.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recon.runtime.files import sha256_of, write_json_atomic
from recon.runtime.spatial import SpatialError, parse_spatial
from recon.runtime.task_config import TaskConfig, task_config_from_json

FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)  # 1: the task config sat in "physics"."task_config"
MANIFEST_NAME = "manifest.json"
TASKS = ("deblur", "ct")
FILE_KINDS = ("onnx", "tensorrt", "report")
PRECISIONS = ("fp32", "fp16", "int8")


class ArtifactError(ValueError):
    """An artifact cannot be used as it is; the message says why and what to do."""


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_io_spec(spec: Any, side: str, source: str = "manifest.json") -> None:
    """An "input"/"output" entry: a name, a shape [batch, 1, H, W], a value range lo < hi, a bool clip."""
    shape = spec.get("shape") if isinstance(spec, dict) else None
    if not (
        isinstance(spec, dict)
        and isinstance(spec.get("name"), str)
        and spec["name"]
        and isinstance(shape, list)
        and len(shape) == 4
        and shape[1] == 1
        and _is_int(shape[1])
        # H and W: positive integers, or a name / null for "any size"
        and all((_is_int(d) and d > 0) or isinstance(d, str) or d is None for d in shape)
    ):
        raise ArtifactError(
            f"{source}: {side} needs a name and a shape [batch, 1, H, W], got {spec!r}; "
            "re-export the artifact"
        )
    value_range = spec.get("value_range")
    if value_range is not None and not (
        isinstance(value_range, list)
        and len(value_range) == 2
        and all(map(_is_number, value_range))
        and value_range[0] < value_range[1]
    ):
        raise ArtifactError(
            f"{source}: {side} value_range must be null or [low, high] with low < high, got "
            f"{value_range!r}; re-export the artifact"
        )
    if not isinstance(spec.get("clip", True), bool):
        raise ArtifactError(f"{source}: {side} clip must be true or false, got {spec['clip']!r}; re-export")


def read_task_config(data: dict[str, Any], version: int, source: str = "manifest.json") -> TaskConfig:
    """The deployed task configuration, stored once as "task_config" (v1: "physics"."task_config")."""
    stored = data["task_config"] if version >= 2 else data["physics"].get("task_config")
    try:
        task_cfg = task_config_from_json(stored)
    except ValueError as error:
        raise ArtifactError(
            f"{source}: task_config: {error}; the artifact is damaged, re-export it"
        ) from None
    if task_cfg.task != data["task"]:
        raise ArtifactError(
            f"{source}: task_config is for task {task_cfg.task!r} but the artifact's task is "
            f"{data['task']!r}; the artifact is damaged, re-export it"
        )
    return task_cfg


def check_batch(batch: dict[str, Any], source: str = "manifest.json") -> dict[str, int]:
    """The batch profile: positive integers, "max" required, min <= opt <= max where given."""
    if not (
        "max" in batch
        and all(_is_int(v) and v >= 1 for v in batch.values())
        and batch.get("min", 1) <= batch.get("opt", batch["max"]) <= batch["max"]
    ):
        raise ArtifactError(
            f"{source}: batch profile {batch!r} must hold positive integers min <= opt <= max (max "
            "required); re-export the artifact"
        )
    return dict(batch)


@dataclass
class FileEntry:
    sha256: str
    size: int
    kind: str
    precision: str | None = None
    tensorrt: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"sha256": self.sha256, "size": self.size, "kind": self.kind}
        if self.precision is not None:
            data["precision"] = self.precision
        if self.tensorrt is not None:
            data["tensorrt"] = self.tensorrt
        return data


@dataclass
class Manifest:
    name: str
    task: str
    model: dict[str, Any]
    input: dict[str, Any]
    output: dict[str, Any]
    task_config: TaskConfig
    batch: dict[str, int]
    files: dict[str, FileEntry] = field(default_factory=dict)
    parity: dict[str, Any] | None = None
    spatial: dict[str, Any] | None = None  # see recon.runtime.spatial
    recon_version: str = "0.1.0"
    format_version: int = FORMAT_VERSION

    # -- serialization -------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "format_version": FORMAT_VERSION,  # the layout written here, whatever version was read
            "recon_version": self.recon_version,
            "name": self.name,
            "task": self.task,
            "model": self.model,
            "input": self.input,
            "output": self.output,
            "task_config": self.task_config.to_json(),
            "batch": self.batch,
            "files": {name: entry.to_json() for name, entry in self.files.items()},
        }
        if self.parity is not None:
            data["parity"] = self.parity
        if self.spatial is not None:
            data["spatial"] = self.spatial
        return data

    @classmethod
    def from_json(cls, data: Any, source: str = "manifest.json") -> Manifest:
        if not isinstance(data, dict):
            raise ArtifactError(f"{source}: expected a JSON object, got {type(data).__name__}")
        version = data.get("format_version")
        if not _is_int(version) or version not in READABLE_VERSIONS:
            raise ArtifactError(
                f"{source}: artifact format version {version!r} is not known to this recon "
                f"(it reads versions {', '.join(map(str, READABLE_VERSIONS))}); re-export the model with "
                "this recon version or "
                f"install the recon version that wrote it ({data.get('recon_version', 'unknown')})"
            )
        task_key = "task_config" if version >= 2 else "physics"
        required = ("name", "task", "model", "input", "output", task_key, "batch", "files")
        missing = [key for key in required if key not in data]
        if missing:
            raise ArtifactError(f"{source}: missing keys {missing}; the artifact is damaged, re-export it")
        if data["task"] not in TASKS:
            raise ArtifactError(f"{source}: task must be one of {TASKS}, got {data['task']!r}")
        # every entry the runtime reads is checked here, so a damaged manifest is one ArtifactError
        # rather than a KeyError/TypeError later, or a silent misreading (e.g. a reversed clip range)
        kinds = {"name": str, "model": dict, task_key: dict, "batch": dict, "files": dict}
        for key, kind in kinds.items():
            if not isinstance(data[key], kind):
                raise ArtifactError(
                    f"{source}: {key!r} must be a JSON {'object' if kind is dict else 'string'}, got "
                    f"{data[key]!r}; the artifact is damaged, re-export it"
                )
        if data.get("parity") is not None and not isinstance(data["parity"], dict):
            raise ArtifactError(f"{source}: 'parity' must be a JSON object; re-export the artifact")
        check_io_spec(data["input"], "input", source)
        check_io_spec(data["output"], "output", source)
        batch = check_batch(data["batch"], source)
        task_cfg = read_task_config(data, version, source)
        if data.get("spatial") is not None:
            try:
                parse_spatial(data["spatial"])
            except SpatialError as error:
                raise ArtifactError(f"{source}: {error}; re-export the artifact") from None
        files = {}
        for name, entry in data["files"].items():
            if Path(name).name != name or name in ("", ".", ".."):
                raise ArtifactError(f"{source}: file name {name!r} must be a plain name inside the artifact")
            try:
                if not isinstance(entry, dict):
                    raise TypeError(f"expected an object, got {entry!r}")
                size, precision, tensorrt = entry["size"], entry.get("precision"), entry.get("tensorrt")
                if not (_is_int(size) and size >= 0):  # JSON also holds 1e3, Infinity, "12"
                    raise ValueError(f"size must be a non-negative integer, got {size!r}")
                if not (precision is None or isinstance(precision, str)):
                    raise ValueError(f"precision must be a string, got {precision!r}")
                if not (tensorrt is None or isinstance(tensorrt, dict)):
                    raise ValueError(f"tensorrt must be an object, got {tensorrt!r}")
                files[name] = FileEntry(
                    sha256=str(entry["sha256"]),
                    size=size,
                    kind=str(entry["kind"]),
                    precision=precision,
                    tensorrt=tensorrt,
                )
            except (KeyError, TypeError, ValueError) as error:
                raise ArtifactError(f"{source}: file entry {name!r} is malformed ({error})") from None
        return cls(
            name=data["name"],
            task=data["task"],
            model=data["model"],
            input=data["input"],
            output=data["output"],
            task_config=task_cfg,
            batch=batch,
            files=files,
            parity=data.get("parity"),
            spatial=data.get("spatial"),
            recon_version=data.get("recon_version", "unknown"),
            format_version=version,
        )

    # -- files ---------------------------------------------------------------------------------------
    def add_file(
        self,
        directory: str | os.PathLike,
        name: str,
        kind: str,
        precision: str | None = None,
        tensorrt: dict[str, Any] | None = None,
    ) -> FileEntry:
        """Hash a file already written into `directory` and list it."""
        path = Path(directory) / name
        entry = FileEntry(
            sha256=sha256_of(path),
            size=path.stat().st_size,
            kind=kind,
            precision=precision,
            tensorrt=tensorrt,
        )
        self.files[name] = entry
        return entry

    def onnx_file(self, precision: str) -> str | None:
        """Name of the ONNX file of that precision, or None."""
        for name, entry in self.files.items():
            if entry.kind == "onnx" and entry.precision == precision:
                return name
        return None

    def plan_file(self) -> str | None:
        for name, entry in self.files.items():
            if entry.kind == "tensorrt":
                return name
        return None

    def save(self, directory: str | os.PathLike) -> Path:
        path = Path(directory) / MANIFEST_NAME
        write_json_atomic(path, self.to_json())
        return path


def load_manifest(directory: str | os.PathLike, verify: bool = True) -> Manifest:
    """Read `directory/manifest.json`; with `verify`, check that every listed file is there and whole."""
    directory = Path(directory)
    path = directory / MANIFEST_NAME
    if not directory.is_dir():
        raise ArtifactError(
            f"{directory}: not an artifact directory (expected a folder made by recon-export)"
        )
    if not path.is_file():
        raise ArtifactError(
            f"{directory}: no {MANIFEST_NAME}; this is not a recon artifact, run recon-export"
        )
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ArtifactError(
            f"{path}: not valid JSON ({error}); the artifact is damaged, re-export it"
        ) from None
    manifest = Manifest.from_json(data, source=str(path))
    if verify:
        verify_files(directory, manifest)
    return manifest


def verify_files(directory: str | os.PathLike, manifest: Manifest, names: list[str] | None = None) -> None:
    directory = Path(directory)
    for name in names if names is not None else list(manifest.files):
        entry = manifest.files[name]
        path = directory / name
        if not path.is_file():
            raise ArtifactError(f"{path}: listed in the manifest but missing; re-export the artifact")
        size = path.stat().st_size
        if size != entry.size:
            raise ArtifactError(
                f"{path}: {size} bytes, the manifest says {entry.size}; the file is damaged or truncated, "
                "re-export the artifact"
            )
        if sha256_of(path) != entry.sha256:
            raise ArtifactError(
                f"{path}: sha256 does not match the manifest; the file was changed or damaged, "
                "re-export the artifact"
            )
