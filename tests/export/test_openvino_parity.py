"""OpenVINO on really exported artifacts: FP32 within 1e-4 of onnxruntime for every model, deblur and CT (the
FBP inside the graph), and the INT8 QDQ file within the same tolerance to FP32 as onnxruntime's INT8."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from cpu_backends import OPENVINO  # noqa: E402

from recon.training.models import list_models  # noqa: E402

pytestmark = pytest.mark.skipif(
    not OPENVINO, reason="OpenVINO is not installed (pip install recon[openvino])"
)


def run(directory: Path, backend: str, precision: str, x: np.ndarray) -> np.ndarray:
    from recon.runtime.reconstructor import Reconstructor

    with Reconstructor.from_artifact(directory, backend=backend, precision=precision, clip=False) as rec:
        assert rec.backend_name == backend and rec.precision == precision
        return rec.run(x)


@pytest.mark.parametrize("task", ["deblur", "ct"])
@pytest.mark.parametrize("model", list_models())
def test_openvino_fp32_matches_onnxruntime_within_1e4(exported, simulated, model, task):
    directory, _ = exported(model, task, weights=False)  # the same artifacts test_export_models checks
    measurements, _ = simulated(task, 3, seed=21)
    ov = run(directory, "openvino", "fp32", measurements)
    ort = run(directory, "onnxruntime-cpu", "fp32", measurements)
    assert np.abs(ov - ort).max() <= 1e-4


def test_openvino_runs_the_int8_qdq_file_as_closely_to_fp32_as_onnxruntime(exported, simulated):
    directory, _ = exported("cnn", "ct", int8=True, fp16=False)  # the artifact test_int8.py checks
    sinograms, _ = simulated("ct", 3, seed=11)
    fp32 = run(directory, "onnxruntime-cpu", "fp32", sinograms)

    def psnr(images: np.ndarray) -> float:
        return float(10 * np.log10(1 / np.mean((images - fp32) ** 2)))

    ov, ort = (
        run(directory, "openvino", "int8", sinograms),
        run(directory, "onnxruntime-cpu", "int8", sinograms),
    )
    assert psnr(ov) >= 35 and abs(psnr(ov) - psnr(ort)) <= 3


def test_export_with_bf16_records_its_held_out_loss_or_why_not(exported):
    import json

    from recon.runtime.artifact.manifest import load_manifest
    from recon.runtime.backends.openvino import bf16_refusal_here

    directory, summary = exported("cnn", "deblur", weights=False, fp16=False, bf16=True)
    report = json.loads((directory / "parity.json").read_text())["bf16"]
    why = bf16_refusal_here()
    if why is not None:
        assert report == {"measured": False, "reason": why}
        assert any("bf16 not measured" in note for note in summary["notes"])
        return
    assert report["measured"] and report["images"] == 32 and report["engine"].startswith("openvino")
    assert report["loss_db"] == pytest.approx(report["psnr_fp32"] - report["psnr_bf16"], abs=2e-3)
    assert abs(report["loss_db"]) < 0.5 and 0 < report["max_abs_vs_fp32"] < 0.05  # bf16 ran, and closely
    assert load_manifest(directory).parity["bf16_heldout_loss_db"] == report["loss_db"]
