"""The artifact manifest: the one contract between `recon.export` and `recon.runtime`.

An artifact is a directory holding `manifest.json` plus the files it lists. Layout of manifest.json
(format version 3; every key below is required unless marked optional):

    {
      "format_version": 2,
      "recon_version": "0.1.0",
      "name": "resunet-deblur",
      "task": "deblur" | "ct",
      "model": {"name": "resunet", "config": {...}, "weights_sha256": "<hex>" | null,
                "trained_task_config": {...} | null},     # optional: the task the weights were trained on
      "task_config": {"task": "ct", "image_size": 256, "n_views": 60, "n_detectors": 363,
                      "detector_spacing": 1.0, "angle_range": 3.14159, "filter": "ram-lak",
                      "noise_level": 0.01, "oversample": 2},  # the deployed task (artifact/task_config.py)
      "input":  {"name": "measurement", "shape": ["batch", 1, H_in, W_in], "dtype": "float32",
                 "layout": "NCHW" (deblur: an image) | "N1AD" (ct: (B, 1, n_views, n_detectors)),
                 "value_range": [lo, hi] | null},           # ct: what the geometry allows; null: unbounded
      "output": {"name": "image", "shape": ["batch", 1, H, W], "dtype": "float32",
                 "value_range": [0.0, 1.0], "clip": true},  # runtime clips to value_range when clip
      "batch": {"min": 1, "opt": 8, "max": 32},             # the dynamic-batch profile
      "spatial": {"whole_image": true, "min": 64, ...},  # optional: sizes taken (artifact/spatial.py)
      "files": {
        "model.onnx":      {"sha256": "<hex>", "size": n, "kind": "onnx", "precision": "fp32"},
        "model.fp16.onnx": {"sha256": "<hex>", "size": n, "kind": "onnx", "precision": "fp16"},
        "model.int8.onnx": {"sha256": "<hex>", "size": n, "kind": "onnx", "precision": "int8"},
        "model.plan":      {"sha256": "<hex>", "size": n, "kind": "tensorrt", "precision": "fp16",
                            "tensorrt": {"version": "11.4.0", "compute_capability": "9.0",
                                         "version_compatible": false, "device_name": "..."}},
        "parity.json":     {"sha256": "<hex>", "size": n, "kind": "report"},
        "consistency.onnx": {"sha256": "<hex>", "size": n, "kind": "consistency", "precision": "fp32"}
      },
      "parity": {"passed": true, ...summary...},            # optional
      "consistency": {"file": "consistency.onnx",           # optional: the trust signal (consistency.py)
                      "inputs": ["image", "measurement"], "output": "scores",
                      "statistics": ["residual", ...],      # the columns of "scores"
                      "bounds": {"residual": {"check": "upper", "low": null, "high": 0.02}, ...},
                      "percentiles": {...}, "threshold": 0.02, "rule": "...", "calibration": {...}}
    }

Optional keys of a plan's "tensorrt" entry: "hardware_compatibility_level" ("none" | "ampere_plus": then any
GPU of compute capability >= 8.0 may run it), "lean_runtime_excluded" (a version-compatible plan built with
EXCLUDE_LEAN_RUNTIME: only a runtime of exactly "version" runs it), "cuda_major" (of the builder's TensorRT
wheels, so the runtime can name the lean package) and "tf32" (false: cleared at build). docs/gpu.md.

Every number is bounded (runtime/limits.py: batch <= MAX_BATCH, H and W <= MAX_IMAGE_SIDE, value ranges within
float32, file sizes <= MAX_ARTIFACT_FILE_BYTES), the name is a plain folder name, the JSON holds no NaN,
Infinity or 20+ digit integer and nests at most MAX_JSON_DEPTH deep; listed files are regular files inside
the artifact (no links), read up to their size and hashed as read; ONNX files hold all their tensors.

Format version 3 adds the optional "golden" entry (golden outputs, tolerances per backend and precision: see
artifact/golden.py; its files are listed as kind "golden" under golden/, the one sub-folder allowed) and
"lineage" (what produced the artifact: see export/lineage.py). Versions 1 and 2 are still read.

Format version 1 (recon before the typed task config) is still read: its "physics" entry gives way to
"task_config" (taken from "physics"."task_config"; its legacy key "n_angles" is read as "n_views").

`load_manifest` parses it once into typed, frozen entries that every part reads: `IOSpec` (input, output)
and `BatchProfile` (artifact/io_spec.py), `Spatial` (artifact/spatial.py), `ConsistencyEntry`
(artifact/consistency_entry.py), `FileEntry` (artifact/file_entry.py) and `TaskConfig`
(artifact/task_config.py). `Manifest.to_json` writes the JSON they were read from.

Integer inputs are scaled to [0, 1] by their dtype's maximum before they reach the graph; float inputs are
taken as they are. Everything here is plain JSON and numpy-free, so any host (C++ included) can read it.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recon.runtime import limits
from recon.runtime.artifact.consistency_entry import ConsistencyEntry, check_consistency_entry
from recon.runtime.artifact.errors import TAMPERED, ArtifactError
from recon.runtime.artifact.file_entry import GOLDEN_FOLDER, FileEntry, check_file_entry
from recon.runtime.artifact.io_spec import BatchProfile, IOSpec, check_batch, check_io_spec
from recon.runtime.artifact.onnx_proto import MalformedModel, external_tensors
from recon.runtime.artifact.spatial import Spatial, SpatialError, parse_spatial
from recon.runtime.artifact.task_config import TaskConfig, task_config_from_json
from recon.runtime.io.files import (
    FileRefused,
    read_at_most,
    read_bounded,
    sha256_bounded,
    sha256_of,
    write_json_atomic,
)

FORMAT_VERSION = 3
# 1: the task config sat in "physics"."task_config"; 2: before golden outputs and lineage (a v2 artifact
# still loads and runs, `recon verify` says it has no golden set to check)
READABLE_VERSIONS = (1, 2, 3)
MANIFEST_NAME = "manifest.json"
TASKS = ("deblur", "ct")
# the typed entries live beside the manifest; these names are re-exported for its readers
__all__ = [
    "ArtifactError",
    "BatchProfile",
    "ConsistencyEntry",
    "FileEntry",
    "GOLDEN_FOLDER",
    "IOSpec",
    "Manifest",
    "Spatial",
    "check_batch",
    "check_consistency_entry",
    "check_io_spec",
    "load_manifest",
    "read_verified",
    "verify_files",
]


NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,127}")  # becomes a folder name (engine caches)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


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


def _json_depth_ok(data: Any, limit: int) -> bool:
    """Whether containers nest at most `limit` deep (iterative: a deep document cannot recurse here)."""
    stack = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, (dict, list)):
            if depth > limit:
                return False
            stack.extend((v, depth + 1) for v in (value.values() if isinstance(value, dict) else value))
    return True


def parse_manifest_json(raw: bytes, source: str) -> Any:
    """manifest.json's bytes as plain JSON: no NaN/Infinity, no float that overflows, no 20+ digit integer,
    nesting at most limits.MAX_JSON_DEPTH deep. Every failure is an ArtifactError naming `source`."""

    def constant(name: str) -> Any:
        raise ValueError(f"{name} is not a JSON number")

    def finite(text: str) -> float:
        value = float(text)
        if not math.isfinite(value):
            raise ValueError(f"number {text[:40]} overflows a float")
        return value

    def bounded_int(text: str) -> int:
        if len(text.lstrip("-")) > 19:  # int64 holds 19 digits; a 5000-digit number is damage or attack
            raise ValueError(f"integer with {len(text)} digits")
        return int(text)

    try:
        data = json.loads(
            raw.decode("utf-8"), parse_constant=constant, parse_float=finite, parse_int=bounded_int
        )
    except (ValueError, RecursionError) as error:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ArtifactError(
            f"{source}: not valid JSON ({reason}); the artifact is damaged, re-export it"
        ) from None
    if not _json_depth_ok(data, limits.MAX_JSON_DEPTH):
        raise ArtifactError(
            f"{source}: JSON nested deeper than {limits.MAX_JSON_DEPTH} levels; the artifact is damaged, "
            "re-export it"
        )
    return data


@dataclass
class Manifest:
    name: str
    task: str
    model: dict[str, Any]
    input: IOSpec
    output: IOSpec
    task_config: TaskConfig
    batch: BatchProfile
    files: dict[str, FileEntry] = field(default_factory=dict)
    parity: dict[str, Any] | None = None
    spatial: Spatial | None = None  # images of any size: recon.runtime.artifact.spatial
    consistency: ConsistencyEntry | None = None  # the trust check: recon.runtime.consistency
    golden: dict[str, Any] | None = None  # golden outputs and tolerances (artifact/golden.py), v3
    lineage: dict[str, Any] | None = None  # what produced the artifact (export/lineage.py), v3
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
            "input": self.input.to_json(),
            "output": self.output.to_json(),
            "task_config": self.task_config.to_json(),
            "batch": self.batch.to_json(),
            "files": {name: entry.to_json() for name, entry in self.files.items()},
        }
        if self.parity is not None:
            data["parity"] = self.parity
        if self.spatial is not None:
            data["spatial"] = self.spatial.to_json()
        if self.consistency is not None:
            data["consistency"] = self.consistency.to_json()
        for key in ("golden", "lineage"):
            if getattr(self, key) is not None:
                data[key] = getattr(self, key)
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
        input_spec = IOSpec.from_json(data["input"], "input", source)
        output_spec = IOSpec.from_json(data["output"], "output", source)
        batch = BatchProfile.from_json(data["batch"], source)
        task_cfg = read_task_config(data, version, source)
        spatial = None
        if data.get("spatial") is not None:
            try:
                spatial = parse_spatial(data["spatial"])
            except SpatialError as error:
                raise ArtifactError(f"{source}: {error}; re-export the artifact") from None
        if not NAME_PATTERN.fullmatch(data["name"]):
            raise ArtifactError(
                f"{source}: name {data['name']!r} must be 1-128 letters, digits, '.', '_', '+' or '-' "
                "(it names cache folders); re-export the artifact"
            )
        if len(data["files"]) > limits.MAX_ARTIFACT_FILES:
            raise ArtifactError(f"{source}: more than {limits.MAX_ARTIFACT_FILES} files listed; re-export")
        files = {name: check_file_entry(name, entry, source) for name, entry in data["files"].items()}
        consistency = data.get("consistency")
        if consistency is not None:
            consistency = ConsistencyEntry.from_json(consistency, files, source)
        for key in ("golden", "lineage"):  # golden: checked in full by artifact/golden.py when used
            if data.get(key) is not None and not isinstance(data[key], dict):
                raise ArtifactError(f"{source}: {key!r} must be a JSON object; re-export the artifact")
        return cls(
            name=data["name"],
            task=data["task"],
            model=data["model"],
            input=input_spec,
            output=output_spec,
            task_config=task_cfg,
            batch=batch,
            files=files,
            parity=data.get("parity"),
            spatial=spatial,
            consistency=consistency,
            golden=data.get("golden"),
            lineage=data.get("lineage"),
            recon_version=str(data.get("recon_version", "unknown"))[:64],
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
    """Read `directory/manifest.json`; with `verify`, check that every listed file is there and whole.

    Everything that can go wrong with the artifact is an ArtifactError naming the file (and the field).
    """
    directory = Path(directory)
    path = directory / MANIFEST_NAME
    if not directory.is_dir():
        raise ArtifactError(
            f"{directory}: not an artifact directory (expected a folder made by recon-export)"
        )
    if not path.exists() and not path.is_symlink():
        raise ArtifactError(
            f"{directory}: no {MANIFEST_NAME}; this is not a recon artifact, run recon-export"
        )
    try:
        raw = read_at_most(path, limits.MAX_MANIFEST_BYTES)
    except FileRefused as error:
        raise ArtifactError(f"{error}; the artifact is damaged or tampered with, re-export it") from None
    manifest = Manifest.from_json(parse_manifest_json(raw, str(path)), source=str(path))
    if verify:
        verify_files(directory, manifest)
    return manifest


def verify_files(directory: str | os.PathLike, manifest: Manifest, names: list[str] | None = None) -> None:
    """Each listed file: a regular file inside `directory` (no link), of the listed size and sha256.

    Reads at most size + 1 bytes of each, so a file that grew (or /proc/..., a device) cannot stall it.
    """
    directory = Path(directory)
    for name in names if names is not None else list(manifest.files):
        entry = manifest.files[name]
        path = inside(directory, name)
        if not path.exists() and not path.is_symlink():
            raise ArtifactError(f"{path}: listed in the manifest but missing; re-export the artifact")
        if entry.kind == "onnx":  # the bytes are needed anyway, for the external-data scan
            read_verified(directory, manifest, name)
            continue
        try:
            digest = sha256_bounded(path, entry.size)
        except FileRefused as error:
            raise ArtifactError(f"{error}; {TAMPERED}") from None
        if digest != entry.sha256:
            raise ArtifactError(
                f"{path}: sha256 does not match the manifest; the file was changed or damaged, "
                "re-export the artifact"
            )


def inside(directory: Path, name: str) -> Path:
    """directory / name, refusing a golden folder that is a link (it could lead out of the artifact)."""
    if "/" in name and (directory / GOLDEN_FOLDER).is_symlink():
        raise ArtifactError(f"{directory / GOLDEN_FOLDER}: is a symbolic link; {TAMPERED}")
    return directory / name


def read_verified(directory: str | os.PathLike, manifest: Manifest, name: str) -> bytes:
    """The bytes of one listed file, checked against its size and sha256: what is checked is what is used.

    A backend loads these bytes, never the path, so a file changed after `load_manifest` (a copy in
    progress, a tampered file) is refused rather than loaded. An ONNX file must also be self-contained:
    a tensor kept as external data would be read by onnxruntime from elsewhere, unhashed.
    """
    path = inside(Path(directory), name)
    entry = manifest.files[name]
    try:
        data = read_bounded(path, entry.size)
    except FileRefused as error:
        raise ArtifactError(f"{error}; {TAMPERED}") from None
    if hashlib.sha256(data).hexdigest() != entry.sha256:
        raise ArtifactError(f"{path}: sha256 does not match the manifest; refusing to load it, re-export")
    if entry.kind == "onnx":
        check_self_contained(path, data)
    return data


def check_self_contained(path: Path, model: bytes) -> None:
    """Refuse an ONNX model that keeps any tensor outside itself (see runtime/artifact/onnx_proto.py)."""
    try:
        external = external_tensors(model)
    except MalformedModel as error:
        raise ArtifactError(f"{path}: not a readable ONNX model ({error}); re-export") from None
    if external:
        raise ArtifactError(
            f"{path}: tensors {external[:3]} keep their data in other files (ONNX external data), which "
            "the manifest does not hash; refusing it, re-export as one self-contained file"
        )
