"""Golden outputs at export: a few held-out inputs, their FP32 outputs and consistency scores, and the
tolerance each backend and precision earns on them here (the format: runtime/artifact/golden.py).

The references are the runtime's own FP32 outputs (onnxruntime on the CPU, clipping and all), so a site
compares like with like: `recon verify` runs the same inputs through the same runtime on its machine. Each
tolerance is what that backend/precision measured here against the references, times a margin, never below a
floor per precision (another CPU's SIMD paths, threads and library builds round differently):

    max_abs  = max(measured max |error| x margin, FLOOR[precision])
    min_psnr = min(measured PSNR - 20 log10(margin), PSNR of an error of FLOOR everywhere)

A backend or precision that does not start here (no OpenVINO, a CPU without bf16, no GPU) is left out and
named in the returned notes; a site running it then borrows the loosest tolerance measured at its precision.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

import numpy as np

from recon.runtime.artifact.golden import check_golden_entry
from recon.runtime.artifact.manifest import GOLDEN_FOLDER, Manifest
from recon.runtime.environment import environment
from recon.runtime.verify import psnr_db

INPUTS, OUTPUTS = f"{GOLDEN_FOLDER}/inputs.npy", f"{GOLDEN_FOLDER}/outputs.npy"
DEFAULT_IMAGES = 4
MARGIN = 4.0
FLOOR = {"fp32": 1e-4, "fp16": 1e-3, "bf16": 1e-2, "int8": 1e-2}  # max |error| on outputs in [0, 1]
REFERENCE = ("onnxruntime-cpu", "fp32")


def golden_inputs(task_cfg: Any, n: int = DEFAULT_IMAGES) -> tuple[np.ndarray, str]:
    """(measurements, where they come from): the first n of the held-out set (never trained on, and apart
    from the parity and calibration inputs), simulated at the deployed geometry."""
    from recon.training.data import heldout_set

    heldout = heldout_set(task_cfg, n=n, size=task_cfg.image_size)
    measurements = np.ascontiguousarray(heldout.measurements.numpy(), np.float32)
    return measurements, f"recon.training.data.heldout_set(n={n}) at the deployed task config"


def candidates(manifest: Manifest) -> list[tuple[str, str]]:
    """Every backend/precision worth a tolerance: each ONNX file on both CPU engines (and onnxruntime's CUDA
    provider where there is one), bf16, the plan."""
    from recon.runtime.backends.openvino import openvino_available

    onnx = [e.precision for e in manifest.files.values() if e.kind == "onnx" and e.precision]
    pairs = [("onnxruntime-cpu", p) for p in onnx]
    if openvino_available():
        pairs += [("openvino", p) for p in onnx] + [("openvino", "bf16")] * ("fp32" in onnx)
    from recon.runtime.backends.onnxruntime import available_providers

    if "CUDAExecutionProvider" in available_providers():  # GPU FP16 rounds unlike the CPU's FP16 path
        pairs += [("onnxruntime-cuda", p) for p in onnx if p != "int8"]
    plan = manifest.plan_file()
    if plan is not None:
        pairs.append(("tensorrt", manifest.files[plan].precision or "fp32"))
    return pairs


def tolerance(measured_max_abs: float, measured_psnr: float, precision: str, margin: float) -> dict[str, Any]:
    floor = FLOOR.get(precision, FLOOR["int8"])
    floor_psnr = -20.0 * math.log10(floor)
    return {
        "max_abs": max(measured_max_abs * margin, floor),
        "min_psnr": round(min(measured_psnr - 20.0 * math.log10(margin), floor_psnr), 3),
        "measured_max_abs": measured_max_abs,
        "measured_psnr": None if math.isinf(measured_psnr) else round(measured_psnr, 3),
    }


def _save_npy(path: Path, array: np.ndarray) -> None:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array, np.float32), allow_pickle=False)
    path.write_bytes(buffer.getvalue())


def _run(
    directory: Path,
    backend: str,
    precision: str,
    inputs: np.ndarray,
    threads: int | None,
    scores: bool = False,
):
    from recon.runtime.reconstructor import Reconstructor

    options = {"backend": backend, "precision": precision, "threads": threads, "consistency": scores}
    with Reconstructor.from_artifact(directory, **options) as rec:
        outputs, scores = rec.run(inputs, return_scores=True)
    return np.asarray(outputs, np.float32), scores


def write_golden(
    directory: str | Path,
    manifest: Manifest,
    inputs: np.ndarray,
    *,
    source: str,
    margin: float = MARGIN,
    threads: int | None = None,
    only: list[tuple[str, str]] | None = None,
) -> list[str]:
    """Write golden/ into the (temp) artifact, list it, measure the tolerances, save the manifest.

    Returns notes: the backends/precisions that could not be measured here, and why.
    """
    from recon.runtime.backends import BackendError

    directory = Path(directory)
    (directory / GOLDEN_FOLDER).mkdir(exist_ok=True)
    _save_npy(directory / INPUTS, inputs)
    manifest.add_file(directory, INPUTS, "golden")
    manifest.save(directory)
    references, scores = _run(directory, *REFERENCE, inputs, threads, scores=True)
    _save_npy(directory / OUTPUTS, references)
    manifest.add_file(directory, OUTPUTS, "golden")
    value_range = manifest.output.value_range or (0.0, 1.0)
    peak = float(value_range[1] - value_range[0])
    tolerances, notes = {}, []
    for backend, precision in only if only is not None else candidates(manifest):
        if (backend, precision) == REFERENCE:
            outputs = references  # itself: error 0; the floor covers other machines
        else:
            try:
                manifest.save(directory)  # the files listed so far, so the runtime can open it
                outputs, _ = _run(directory, backend, precision, inputs, threads)
            except (BackendError, ValueError, RuntimeError) as error:
                notes.append(f"golden: no tolerance for {backend}/{precision} ({str(error).splitlines()[0]})")
                continue
        measured = float(np.abs(outputs.astype(np.float64) - references).max())
        tolerances[f"{backend}/{precision}"] = tolerance(
            measured, psnr_db(references, outputs, peak), precision, margin
        )
    manifest.golden = {
        "inputs": INPUTS,
        "outputs": OUTPUTS,
        "source": source,
        "reference": {"backend": REFERENCE[0], "precision": REFERENCE[1], "environment": environment()},
        "scores": None
        if scores is None
        else [{"residual": s.residual, "flagged": s.flagged} for s in scores],
        "margin": margin,
        "tolerances": tolerances,
    }
    check_golden_entry(manifest.golden, manifest, str(directory / "manifest.json"))
    manifest.save(directory)
    return notes
