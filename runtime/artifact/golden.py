"""Golden outputs: the reference set an artifact carries so a site can prove this machine reproduces it.

The manifest's optional "golden" entry (format version 3):

    "golden": {
      "inputs": "golden/inputs.npy",        # (N, 1, H_in, W_in) float32: held-out measurements
      "outputs": "golden/outputs.npy",      # (N, 1, H, W) float32: their FP32 outputs on the export machine
      "source": "...",                      # where the inputs come from (held out from training and parity)
      "reference": {"backend": "onnxruntime-cpu", "precision": "fp32", "environment": {...}},
      "scores": [{"residual": r, "flagged": false}, ...] | null,   # the consistency check on the references
      "margin": 4.0,                        # tolerance = measured error x margin (with a floor)
      "tolerances": {"onnxruntime-cpu/fp32": {"max_abs": t, "min_psnr": p,
                                              "measured_max_abs": e, "measured_psnr": q}, ...}
    }

Both files are listed in "files" with kind "golden", so they are hashed like every other file and read only
through `read_verified`. A tolerance is keyed "backend/precision"; where the export could not measure this
backend (a TensorRT engine built on the site, say) the loosest tolerance measured at the same precision
stands in, and the report says so. A precision measured nowhere has no tolerance: verification refuses it
rather than guess one.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from recon.runtime.artifact.manifest import ArtifactError, Manifest, read_verified

MAX_GOLDEN_IMAGES = 64


@dataclass(frozen=True)
class Tolerance:
    """What a backend/precision must reach on the golden set: max |error| and a PSNR floor (dB)."""

    max_abs: float
    min_psnr: float
    key: str  # the tolerance's own "backend/precision" (another backend's when standing in)
    measured_max_abs: float | None = None
    measured_psnr: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "max_abs": self.max_abs,
            "min_psnr": self.min_psnr,
            "measured_max_abs": self.measured_max_abs,
            "measured_psnr": self.measured_psnr,
        }


@dataclass
class GoldenSet:
    inputs: np.ndarray  # (N, 1, H_in, W_in) float32
    outputs: np.ndarray  # (N, 1, H, W) float32
    entry: dict[str, Any]

    @property
    def scores(self) -> list[dict[str, Any]] | None:
        return self.entry.get("scores")

    def tolerance(self, backend: str, precision: str | None) -> Tolerance | None:
        """The tolerance for this backend/precision, or the loosest measured at that precision, or None."""
        table = self.entry.get("tolerances") or {}
        key = f"{backend}/{precision}"
        if key in table:
            return _tolerance(key, table[key])
        same = [(k, v) for k, v in table.items() if k.rpartition("/")[2] == precision]
        if not same:
            return None
        k, v = max(same, key=lambda item: item[1]["max_abs"])
        return _tolerance(k, v)


def _tolerance(key: str, value: dict[str, Any]) -> Tolerance:
    return Tolerance(
        float(value["max_abs"]),
        float(value["min_psnr"]),
        key,
        value.get("measured_max_abs"),
        value.get("measured_psnr"),
    )


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_golden_entry(entry: Any, manifest: Manifest, source: str = "manifest.json") -> None:
    """The "golden" entry: both files listed as kind "golden", tolerances of finite numbers."""

    def fail(what: str) -> None:
        raise ArtifactError(f"{source}: golden entry {what}; re-export the artifact")

    if not isinstance(entry, dict):
        fail(f"must be a JSON object, got {entry!r}")
    for role in ("inputs", "outputs"):
        name = entry.get(role)
        if not isinstance(name, str) or name not in manifest.files:
            fail(f"names {role} file {name!r}, which the manifest's files do not list")
        if manifest.files[name].kind != "golden":
            fail(f"{role} file {name!r} is listed with kind {manifest.files[name].kind!r}, not 'golden'")
    table = entry.get("tolerances")
    if not isinstance(table, dict) or not table:
        fail(f"needs 'tolerances' (backend/precision -> max_abs, min_psnr), got {table!r}")
    for key, value in table.items():
        if not (isinstance(key, str) and key.count("/") == 1):
            fail(f"tolerance key {key!r} must read 'backend/precision'")
        if not (isinstance(value, dict) and _finite(value.get("max_abs")) and value["max_abs"] >= 0):
            fail(f"tolerance {key!r} needs a finite max_abs >= 0, got {value!r}")
        if not _finite(value.get("min_psnr")):
            fail(f"tolerance {key!r} needs a finite min_psnr, got {value!r}")
    scores = entry.get("scores")
    if scores is not None and not isinstance(scores, list):
        fail(f"scores must be a list or null, got {scores!r}")


def _array(directory: Path, manifest: Manifest, name: str) -> np.ndarray:
    data = read_verified(directory, manifest, name)  # hashed before numpy sees a byte
    try:
        array = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError) as error:
        raise ArtifactError(f"{directory / name}: not a readable .npy array ({error}); re-export") from None
    if not (
        array.dtype == np.float32
        and array.ndim == 4
        and array.shape[1] == 1
        and 1 <= array.shape[0] <= MAX_GOLDEN_IMAGES
        and np.isfinite(array).all()
    ):
        raise ArtifactError(
            f"{directory / name}: golden arrays must be finite float32 (N, 1, H, W) with N <= "
            f"{MAX_GOLDEN_IMAGES}, got {array.dtype} {array.shape}; re-export the artifact"
        )
    return array


def load_golden(directory: str | Path, manifest: Manifest) -> GoldenSet | None:
    """The artifact's golden set, checked (entry, hashes, shapes); None when it has none (format < 3)."""
    if manifest.golden is None:
        return None
    directory = Path(directory)
    source = str(directory / "manifest.json")
    check_golden_entry(manifest.golden, manifest, source)
    inputs = _array(directory, manifest, manifest.golden["inputs"])
    outputs = _array(directory, manifest, manifest.golden["outputs"])
    if inputs.shape[0] != outputs.shape[0]:
        raise ArtifactError(
            f"{source}: golden inputs hold {inputs.shape[0]} images, outputs {outputs.shape[0]}; re-export"
        )
    return GoldenSet(inputs, outputs, manifest.golden)
