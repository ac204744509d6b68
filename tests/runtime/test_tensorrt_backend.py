"""The native TensorRT backend on a real GPU: an engine built by recon-export runs through the Reconstructor.

TensorRT is never replaced by a stand-in here: where TensorRT (builder) or an NVIDIA GPU is missing these
tests skip with the reason. The refusals that need no GPU (another TensorRT version or GPU, no plan, no
device) are tested in test_backends.py.
"""

from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import pytest

from recon.runtime.backends import tensorrt as trt_backend


def _gpu_and_tensorrt() -> str | None:
    """Why the TensorRT tests cannot run here, or None when they can."""
    if shutil.which("nvidia-smi") is None:
        return "no NVIDIA GPU (nvidia-smi not found)"
    probe = "import tensorrt; tensorrt.Builder"  # the full package: the lean runtime has no builder
    if subprocess.run([sys.executable, "-c", probe], capture_output=True).returncode != 0:
        return "the full TensorRT package (builder) is not installed"
    return None


SKIP_REASON = _gpu_and_tensorrt()
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(SKIP_REASON is not None, reason=SKIP_REASON or "")]


def test_an_exported_engine_runs_and_matches_onnxruntime(tmp_path):
    from recon.export.cli import main as export_main
    from recon.runtime import Reconstructor

    target = tmp_path / "cnn-deblur"
    with pytest.raises(SystemExit) as exit_info:
        export_main(
            [
                "--model",
                "cnn",
                "--task",
                "deblur",
                "--random-init",
                "--size",
                "64",
                "--fp16",
                "--engine",
                "trt",
                "--batch",
                "1:4:8",
                "--out",
                str(target),
            ],
        )
    assert exit_info.value.code in (0, None)
    batch = np.random.default_rng(0).random((5, 1, 64, 64), dtype=np.float32)
    with Reconstructor.from_artifact(target, backend="onnxruntime-cpu") as reference:
        expected = reference.run(batch)
    with Reconstructor.from_artifact(target, backend="tensorrt") as engine:
        assert engine.backend_name == "tensorrt"
        got = engine.run(batch)
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() < 1e-2  # FP16 engine vs FP32 graph: NOTES.md's GPU tolerance
    assert trt_backend is not None
