"""The trust signal: per-image data-consistency scores from the artifact's companion graph.

`consistency.onnx` (written and calibrated by recon-export, listed and hash-checked in the manifest like
every file) takes the runtime's clipped output x̂ and the measurement y as fed to the network, and returns
per image r = ‖A(x̂) − y‖ / ‖y‖ (A: the task's physics) and companion statistics. Each statistic has the
interval the calibration found for in-distribution inputs (manifest "consistency" → "bounds"); an image is
flagged when any statistic leaves its interval, and `reasons` says which and by how much.

The image output is never changed: the check only reads it. See docs/embedding.md for what a flag means.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from recon.runtime.artifact.consistency_entry import Bound, ConsistencyEntry, check_consistency_entry
from recon.runtime.artifact.manifest import ArtifactError, Manifest, check_self_contained, read_verified
from recon.runtime.backends.base import BackendError
from recon.runtime.backends.onnxruntime import new_session, session_options
from recon.runtime.backends.openvino import (
    CompiledShapes,
    borrowed_request,
    import_openvino,
    openvino_available,
)
from recon.runtime.io.dicom_derived import flag_note  # noqa: F401 - re-exported: one line for a flagged file

ENGINES = ("auto", "openvino", "onnxruntime")


def engine_missing() -> str:
    """ "" when onnxruntime or OpenVINO can run the check here; else why not and what to do. A `recon[lean]`
    install (the TensorRT lean runtime alone) has neither: the network then runs, unchecked, and says so."""
    import importlib

    for module in ("openvino", "onnxruntime"):  # the guard imports one of them next anyway
        try:
            importlib.import_module(module)
            return ""
        except ImportError:
            continue
    return (
        "the consistency check needs onnxruntime or OpenVINO and neither is installed (a recon[lean]-only "
        "install); the output is not checked: pip install 'recon[cpu]' for the check, or pass "
        "--no-consistency (consistency=False) to say so"
    )


@dataclass
class ImageScore:
    """One image's consistency: the residual r, every statistic, the flag and why."""

    residual: float
    statistics: dict[str, float]
    flagged: bool
    reasons: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "residual": self.residual,
            "flagged": self.flagged,
            "reasons": list(self.reasons),
            "statistics": dict(self.statistics),
        }


def _fmt(value: float) -> str:
    return f"{value:.4g}"


class _OpenVinoScorer:
    """The graph in OpenVINO on the CPU, compiled once per pair of input shapes (static graphs ran it ~1.4x
    faster than the dynamic one), up to MAX_STATIC_SHAPES, then on the dynamic one; f32 throughout."""

    def __init__(self, graph: bytes, threads: int | None) -> None:
        core = import_openvino().Core()
        model = core.read_model(graph)
        config: dict[str, Any] = {
            "INFERENCE_PRECISION_HINT": "f32",  # the CPU default is bf16 on bf16 CPUs
            "PERFORMANCE_HINT": "LATENCY",
            "NUM_STREAMS": "1",
        }
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        self._shapes = CompiledShapes(core, model, config, core.compile_model(model, "CPU", config))

    def run(self, output: str, feed: dict[str, np.ndarray]) -> np.ndarray:
        key = tuple((name, array.shape) for name, array in feed.items())
        entry = self._shapes.get(key, {name: list(array.shape) for name, array in feed.items()})
        with borrowed_request(entry) as request:
            return np.array(request.infer(feed, share_inputs=True)[output])


class ConsistencyGuard:
    """Runs `consistency.onnx` on the CPU and judges each image against the bounds.

    The companion graph is small (a blur and a spectrum; a coarse projector for CT) and runs on the CPU
    whatever backend ran the network, so it needs no GPU memory and behaves the same on every machine.
    Engine: OpenVINO where it is installed (it ran these graphs 2-5x faster than onnxruntime here:
    docs/benchmarks.md, "Consistency check cost"), else onnxruntime; both compute it in f32.
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        manifest: Manifest,
        threads: int | None = None,
        engine: str = "auto",
    ) -> None:
        if engine not in ENGINES:
            raise ValueError(f"consistency engine must be one of {ENGINES}, got {engine!r}")
        entry = manifest.consistency
        if entry is None:
            raise ArtifactError(f"{directory}: the artifact carries no consistency check; re-export it")
        # load_manifest checked it; a Manifest built in code is checked here
        check_consistency_entry(entry.to_json(), manifest.files, f"{directory}/manifest.json")
        self.entry: ConsistencyEntry = entry
        self.statistics: list[str] = list(entry.statistics)
        self.bounds: dict[str, Bound] = dict(entry.bounds)
        self.image_name, self.measurement_name = entry.image_input, entry.measurement_input
        self.output_name = entry.output
        path = Path(directory) / entry.file
        # the very bytes loaded are hashed (a file swapped after load_manifest is refused), read without
        # following links and bounded by the listed size; and, like the network's graph, self-contained:
        # either engine would read a tensor kept as external data from elsewhere, unhashed
        graph = read_verified(directory, manifest, entry.file)
        check_self_contained(path, graph)
        if engine == "auto":
            engine = "openvino" if openvino_available() else "onnxruntime"
        self.engine = engine
        self.session: Any = None
        self._openvino: _OpenVinoScorer | None = None
        try:
            if self.engine == "openvino":
                self._openvino = _OpenVinoScorer(graph, threads)
            else:
                self.session = new_session(graph, session_options(threads=threads))  # CPU
        except Exception as error:  # both engines raise their own types; one line with the cause
            first = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise ArtifactError(
                f"{path}: {self.engine} cannot load the consistency graph ({first})"
            ) from None
        self.max_batch = 32
        # the graph's temporaries grow with the pixels it sees at once (the blur spectrum's windows, the
        # projector's gathers): runs of at most this many pixels, one image at least
        self.max_pixels = 1 << 22

    def score(self, images: np.ndarray, measurements: np.ndarray) -> list[ImageScore]:
        """images (B, 1, H, W) as returned (clipped), measurements (B, 1, ...) as fed to the network."""
        rows = []
        per_image = max(1, int(np.prod(images.shape[1:])), int(np.prod(measurements.shape[1:])))
        step = max(1, min(self.max_batch, self.max_pixels // per_image))
        for lo in range(0, len(images), step):
            feed = {
                self.image_name: np.ascontiguousarray(images[lo : lo + step], np.float32),
                self.measurement_name: np.ascontiguousarray(measurements[lo : lo + step], np.float32),
            }
            try:
                if self._openvino is not None:
                    rows.append(self._openvino.run(self.output_name, feed))
                else:
                    rows.append(self.session.run([self.output_name], feed)[0])
            except Exception as error:  # the engines' own exception types, as one line
                first = (str(error).strip().splitlines() or [type(error).__name__])[0]
                raise BackendError(
                    f"consistency check: {self.engine} failed to run its graph ({first})"
                ) from None
        table = np.concatenate(rows).astype(np.float64)
        if table.shape != (len(images), len(self.statistics)):
            raise ArtifactError(
                f"the consistency graph returned shape {table.shape}, expected "
                f"({len(images)}, {len(self.statistics)}); re-export the artifact"
            )
        return [self.judge(dict(zip(self.statistics, map(float, row), strict=True))) for row in table]

    def judge(self, values: dict[str, float]) -> ImageScore:
        reasons = []
        for stat, bound in self.bounds.items():
            value = values[stat]
            if not math.isfinite(value):
                reasons.append(f"{stat} is {value}")
                continue
            low, high = bound.low, bound.high
            if bound.check in ("lower", "both") and value < low:
                reasons.append(f"{stat} {_fmt(value)} < {_fmt(low)}")
            if bound.check in ("upper", "both") and value > high:
                reasons.append(f"{stat} {_fmt(value)} > {_fmt(high)}")
        return ImageScore(values["residual"], values, bool(reasons), reasons)

    def describe(self) -> dict[str, Any]:
        return {
            "file": self.entry.file,
            "engine": self.engine,
            "threshold": self.entry.threshold,
            "statistics": self.statistics,
            "rule": self.entry.rule,
        }
