"""Parity: run every runner on the same inputs first, compare afterwards (Polygraphy's Comparator habit).

Runners are plain callables `(B, 1, H_in, W_in) float32 → (B, 1, H, W) float32`. The deployed path is checked
with the very code that deploys: `recon.runtime.Reconstructor` (clip off, so FP32 differences are not hidden
by clipping).

Metrics per batch size: max |a−b|, mean |a−b|, relative RMSE, PSNR (both clipped to the output's value range,
data range 1, as the course measures PSNR). Tolerances are arguments; the result says pass/fail and why.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

    from recon.runtime.artifact.task_config import TaskConfig

Runner = Callable[["np.ndarray"], "np.ndarray"]


@dataclass(frozen=True)
class Tolerance:
    """Pass when max_abs ≤ atol (if set) and PSNR ≥ min_psnr (if set)."""

    atol: float | None = None
    min_psnr: float | None = None

    def check(self, metrics: Mapping[str, float]) -> tuple[bool, str]:
        if self.atol is not None and not metrics["max_abs"] <= self.atol:
            return False, f"max abs {metrics['max_abs']:.3g} > {self.atol:g}"
        if self.min_psnr is not None and not metrics["psnr"] >= self.min_psnr:
            return False, f"PSNR {metrics['psnr']:.2f} dB < {self.min_psnr:g} dB"
        return True, ""


# The thresholds; the CLI lets a user change each.
DEFAULT_TOLERANCES = {
    "onnxruntime-fp32": Tolerance(atol=1e-4),
    "onnxruntime-fp16": Tolerance(min_psnr=50.0),
    "onnxruntime-int8": Tolerance(min_psnr=35.0),
    "tensorrt": Tolerance(atol=5e-2, min_psnr=45.0),  # FP16 kernels on a GPU (NOTES: ~1e-2 typical)
}


# -- metrics --------------------------------------------------------------------------------------------
def compare_outputs(
    reference: np.ndarray, candidate: np.ndarray, value_range: tuple[float, float] = (0.0, 1.0)
) -> dict:
    """Difference metrics of two (B, 1, H, W) arrays; PSNR on both clipped to `value_range`."""
    import numpy as np

    if reference.shape != candidate.shape:
        raise ValueError(f"shape mismatch: reference {reference.shape}, candidate {candidate.shape}")
    ref = reference.astype(np.float64)
    cand = candidate.astype(np.float64)
    finite = bool(np.isfinite(cand).all())
    diff = np.abs(ref - cand)
    lo, hi = value_range
    mse = float(np.mean((np.clip(ref, lo, hi) - np.clip(cand, lo, hi)) ** 2))
    psnr = math.inf if mse == 0 else 10 * math.log10((hi - lo) ** 2 / mse)
    return {
        "max_abs": float(diff.max()) if finite else math.inf,
        "mean_abs": float(diff.mean()) if finite else math.inf,
        "rel_rmse": float(np.sqrt(np.mean(diff**2)) / max(np.sqrt(np.mean(ref**2)), 1e-12))
        if finite
        else math.inf,
        "psnr": round(psnr, 3) if math.isfinite(psnr) else 999.0,  # JSON has no infinity
        "finite": finite,
    }


def psnr(reference: np.ndarray, estimate: np.ndarray) -> float:
    """PSNR in dB of images in [0, 1] (both clipped), data range 1."""
    return compare_outputs(reference, estimate)["psnr"]


# -- running and comparing ---------------------------------------------------------------------------------
def run_all(
    runners: Mapping[str, Runner], inputs: Mapping[int, np.ndarray]
) -> dict[str, dict[int, np.ndarray]]:
    """Every runner on every batch: {runner: {batch_size: output}}."""
    return {name: {size: run(batch) for size, batch in inputs.items()} for name, run in runners.items()}


@dataclass
class ParityResult:
    candidate: str
    reference: str
    tolerance: Tolerance
    per_batch: dict[int, dict[str, Any]]
    passed: bool
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {
            "candidate": self.candidate,
            "reference": self.reference,
            "tolerance": {k: v for k, v in asdict(self.tolerance).items() if v is not None},
            "per_batch": {str(k): v for k, v in self.per_batch.items()},
            "worst": worst_of(self.per_batch),
            "passed": self.passed,
            "reason": self.reason,
        }


def worst_of(per_batch: Mapping[int, Mapping[str, Any]]) -> dict[str, float]:
    rows = list(per_batch.values())
    return {
        "max_abs": max(r["max_abs"] for r in rows),
        "rel_rmse": max(r["rel_rmse"] for r in rows),
        "psnr": min(r["psnr"] for r in rows),
    }


def compare(
    outputs: Mapping[str, Mapping[int, np.ndarray]],
    reference: str,
    candidate: str,
    tolerance: Tolerance,
    value_range: tuple[float, float] = (0.0, 1.0),
) -> ParityResult:
    per_batch = {}
    failures = []
    for size, ref in outputs[reference].items():
        metrics = compare_outputs(ref, outputs[candidate][size], value_range)
        ok, why = tolerance.check(metrics)
        if not metrics["finite"]:
            ok, why = False, "non-finite output"
        metrics["passed"] = ok
        per_batch[size] = metrics
        if not ok:
            failures.append(f"batch {size}: {why}")
    return ParityResult(candidate, reference, tolerance, per_batch, not failures, "; ".join(failures))


# -- runners ------------------------------------------------------------------------------------------------
def torch_runner(module: Any) -> Runner:
    """The torch reference, FP32 on the CPU."""
    import torch

    def run(batch: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return module(torch.from_numpy(batch)).float().numpy()

    return run


def artifact_runner(
    directory: str | os.PathLike, precision: str, backend: str = "onnxruntime-cpu", threads: int | None = None
) -> tuple[Runner, str, Callable[[], None]]:
    """Run an artifact's file of `precision` with the deployed runtime; returns (runner, what, close)."""
    from recon.runtime.reconstructor import Reconstructor

    rec = Reconstructor.from_artifact(
        directory, backend=backend, precision=precision, threads=threads, clip=False
    )
    return rec.run, f"recon.runtime.Reconstructor[{rec.backend_name}]", rec.close


# -- inputs ------------------------------------------------------------------------------------------------
def simulated_inputs(
    task_cfg: TaskConfig, sizes: Sequence[int], image_size: int, seed: int = 1234
) -> tuple[dict[int, np.ndarray], dict[int, np.ndarray]]:
    """Realistic test measurements: `recon.training.tasks.simulate` of random phantoms (not noise).

    Returns ({batch: measurements}, {batch: clean images}), float32 (B, 1, ·, ·), deterministic in `seed`.
    """
    import numpy as np
    import torch

    from recon.training.data import phantom
    from recon.training.tasks import simulate

    rng = np.random.default_rng(seed)
    generator = torch.Generator().manual_seed(seed)
    measurements, clean = {}, {}
    for size in sizes:
        x = torch.from_numpy(np.stack([phantom(image_size, rng)[None] for _ in range(size)]))
        with torch.no_grad():
            y = simulate(x, task_cfg, generator)
        measurements[size] = np.ascontiguousarray(y.float().numpy())
        clean[size] = x.numpy()
    return measurements, clean
