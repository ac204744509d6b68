"""`recon verify`'s check: run an artifact's golden inputs here and hold the outputs to its references.

Installation/operational qualification in one step: the artifact carries held-out inputs, the FP32 outputs
the export machine gave for them and a tolerance per backend and precision measured there
(artifact/golden.py). `check_golden(reconstructor)` runs them on the reconstructor's backend and precision and
reports the max |error| and PSNR against the references, pass or fail, and why. It fails too when a golden
image the export scored in-distribution is flagged by the consistency check here.

Uses only the reconstructor's public surface (run, manifest, directory, backend_name, precision), so the
Reconstructor can offer it as `verify()` without an import circle.
"""

from __future__ import annotations

import datetime
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from recon.runtime.artifact.golden import GoldenSet, load_golden
from recon.runtime.artifact.manifest import MANIFEST_NAME
from recon.runtime.environment import environment
from recon.runtime.io.files import sha256_of


@dataclass
class GoldenResult:
    """One backend/precision on the golden set."""

    backend: str
    precision: str | None
    passed: bool
    reason: str
    images: int = 0
    max_abs: float | None = None
    psnr: float | None = None  # dB against the reference over all images (inf: identical)
    worst_image: int | None = None
    tolerance: dict[str, Any] | None = None
    flagged: list[int] = field(default_factory=list)  # golden images the consistency check flags here
    max_residual_change: float | None = None  # relative change of the consistency residual

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        if self.psnr is not None and math.isinf(self.psnr):
            data["psnr"] = "inf"  # JSON has no Infinity; identical outputs
        return data

    def line(self) -> str:
        """One line for people: PASS/FAIL, backend/precision, the numbers against the tolerance, why."""
        status = "PASS" if self.passed else "FAIL"
        head = f"{status}  {self.backend}/{self.precision}"
        if self.max_abs is None:
            return f"{head}: {self.reason}"
        tol = self.tolerance or {}
        psnr = "inf" if self.psnr is not None and math.isinf(self.psnr) else f"{self.psnr:.2f}"
        return (
            f"{head}: max |error| {self.max_abs:.3g} (tolerance {tol.get('max_abs', float('nan')):.3g}), "
            f"PSNR {psnr} dB (at least {tol.get('min_psnr', float('nan')):.2f}) on {self.images} golden "
            f"images; {self.reason}"
        )


def psnr_db(reference: np.ndarray, output: np.ndarray, peak: float) -> float:
    """PSNR of `output` against `reference` for signals of that peak (inf when identical)."""
    mse = float(np.mean((output.astype(np.float64) - reference.astype(np.float64)) ** 2))
    return math.inf if mse == 0.0 else 10.0 * math.log10(peak * peak / mse)


def _peak(manifest: Any) -> float:
    value_range = manifest.output.value_range
    return float(value_range[1] - value_range[0]) if value_range else 1.0


def compare(golden: GoldenSet, outputs: np.ndarray, backend: str, precision: str | None, peak: float,
            scores: list[Any] | None = None) -> GoldenResult:  # fmt: skip
    """The golden references against `outputs` (same shape), held to this backend/precision's tolerance."""
    result = GoldenResult(backend, precision, False, "", images=int(golden.outputs.shape[0]))
    if outputs.shape != golden.outputs.shape:
        result.reason = (
            f"outputs have shape {outputs.shape}, the references {golden.outputs.shape}: the artifact's "
            "graph no longer gives the validated images"
        )
        return result
    error = np.abs(outputs.astype(np.float64) - golden.outputs.astype(np.float64))
    per_image = error.reshape(error.shape[0], -1).max(axis=1)
    result.max_abs = float(per_image.max())
    result.worst_image = int(per_image.argmax())
    result.psnr = psnr_db(golden.outputs, outputs, peak)
    tolerance = golden.tolerance(backend, precision)
    if tolerance is None:
        result.reason = (
            f"the artifact holds no tolerance for {precision} (measured at export: "
            f"{', '.join(golden.entry.get('tolerances', {}))}); re-export on a machine that runs {precision}"
        )
        return result
    result.tolerance = tolerance.to_json()
    standing_in = tolerance.key != f"{backend}/{precision}"
    _compare_scores(result, golden.scores, scores)
    problems = []
    if result.max_abs > tolerance.max_abs:
        problems.append(
            f"max |error| {result.max_abs:.3g} > {tolerance.max_abs:.3g} (image {result.worst_image})"
        )
    if result.psnr < tolerance.min_psnr:
        problems.append(f"PSNR {result.psnr:.2f} dB < {tolerance.min_psnr:.2f} dB")
    if result.flagged:
        problems.append(f"the consistency check flags golden image(s) {result.flagged} it passed at export")
    result.passed = not problems
    borrowed = (
        f"; tolerance of {tolerance.key} (this backend was not measured at export)" if standing_in else ""
    )
    result.reason = ("; ".join(problems) if problems else "within tolerance") + borrowed
    return result


def _compare_scores(result: GoldenResult, reference: list[Any] | None, scores: list[Any] | None) -> None:
    if not reference or scores is None or len(reference) != len(scores):
        return
    changes = []
    for index, (then, now) in enumerate(zip(reference, scores, strict=True)):
        if now.flagged and not then.get("flagged"):
            result.flagged.append(index)
        base = then.get("residual")
        if isinstance(base, (int, float)) and base > 0:
            changes.append(abs(now.residual - base) / base)
    result.max_residual_change = max(changes) if changes else None


def check_golden(reconstructor: Any) -> GoldenResult:
    """Run the golden set through `reconstructor` (its backend and precision) and compare."""
    manifest = reconstructor.manifest
    backend, precision = reconstructor.backend_name, reconstructor.precision
    golden = load_golden(reconstructor.directory, manifest)
    if golden is None:
        return GoldenResult(
            backend, precision, False,
            f"the artifact (format v{manifest.format_version}) carries no golden outputs; re-export it with "
            "this recon to qualify it",
        )  # fmt: skip
    outputs, scores = reconstructor.run(golden.inputs, return_scores=True)
    return compare(golden, np.asarray(outputs, np.float32), backend, precision, _peak(manifest), scores)


def manifest_sha256(directory: str | Path) -> str:
    """The manifest's sha256: it lists every file's sha256, so it names the artifact's whole content."""
    return sha256_of(Path(directory) / MANIFEST_NAME)


def verification_report(directory: str | Path, name: str, results: list[GoldenResult]) -> dict[str, Any]:
    """The record `recon verify` prints and keeps: what was checked, where, when, and the outcome."""
    return {
        "artifact": str(directory),
        "name": name,
        "manifest_sha256": manifest_sha256(directory),
        "passed": bool(results) and all(r.passed for r in results),
        "results": [r.to_json() for r in results],
        "environment": environment(),
        "verified_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
