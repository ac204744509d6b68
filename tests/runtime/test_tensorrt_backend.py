"""The native TensorRT backend: its decisions as plain data (anywhere), and an engine built by recon-export
running through the Reconstructor on a real GPU.

TensorRT is never replaced by a stand-in here: where TensorRT (builder) or an NVIDIA GPU is missing the GPU
test skips with the reason. The refusals that need no GPU (another TensorRT version or GPU, no plan, no
device) are tested in test_backends.py; the lean runtime itself, installed, in test_gpu_install.py (slow).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest

from recon.runtime.artifact.gpu_profiles import Profile
from recon.runtime.artifact.io_spec import BatchProfile
from recon.runtime.backends.base import BackendError
from recon.runtime.backends.tensorrt import (
    check_cuda_majors,
    copy_plan,
    cuda_major_of,
    engine_host_code_allowed,
    engine_profiles,
    new_runtime,
    no_gpu_message,
    same_release,
    version_tuple,
)


def test_versions_parse_to_their_release_and_compare_as_far_as_both_are_spelled():
    assert version_tuple("10.13.3.9.post1") == (10, 13, 3, 9) and version_tuple("11.4.0") == (11, 4, 0)
    assert version_tuple("") == () and version_tuple("11.rc1") == (11,)
    assert same_release((11, 4, 0, 106), (11, 4, 0)) and same_release((11, 4, 0), (11, 4, 0, 106))
    assert not same_release((11, 4, 0, 106), (11, 4, 0, 107)) and not same_release((11, 4, 0), (11, 4, 1))
    assert same_release((11, 4), (11, 4, 9)) and not same_release((11, 4), (11, 5, 0))


def test_the_cuda_major_of_tensorrt_comes_from_its_wheel_names():
    assert cuda_major_of(["numpy", "tensorrt-cu13", "tensorrt_cu13_libs", "tensorrt-cu13-bindings"]) == 13
    assert cuda_major_of(["tensorrt_lean_cu12", "tensorrt_lean_cu12_libs"]) == 12
    assert cuda_major_of(["tensorrt"]) is None  # the meta package says nothing
    assert cuda_major_of(["tensorrt-cu12", "tensorrt-lean-cu13"]) is None  # mixed: not ours to guess


def test_an_older_cuda_python_than_tensorrt_is_refused_and_a_newer_one_is_taken():
    check_cuda_majors(13, 13)
    check_cuda_majors(None, 12)
    check_cuda_majors(12, 13)  # cuda-python 13 already needs an R580+ driver, which runs CUDA 12 too
    with pytest.raises(BackendError, match=r"built for CUDA 13 but cuda-python is 12\.x.*lean-cu13"):
        check_cuda_majors(13, 12)


def test_a_too_old_driver_is_named_and_other_failures_say_no_gpu():
    old = no_gpu_message("cudaErrorInsufficientDriver", "driver version is insufficient", 13)
    assert "too old for CUDA 13 wheels" in old and "R580" in old and "gpu-cu12" in old
    none = no_gpu_message("cudaErrorNoDevice", "no CUDA-capable device is detected", 13)
    assert "needs an NVIDIA GPU" in none and "--backend cpu" in none
    no_driver = no_gpu_message("cudaErrorInsufficientDriver", "driver version is insufficient", 13, False)
    assert "needs an NVIDIA GPU" in no_driver  # the same error code without any driver: no GPU here


def test_host_code_is_allowed_for_every_version_compatible_plan_and_no_other():
    assert engine_host_code_allowed({"version_compatible": True, "lean_runtime_excluded": True})
    assert engine_host_code_allowed({"version_compatible": True, "lean_runtime_excluded": False})
    assert not engine_host_code_allowed({"version_compatible": False})


class _RecordingRuntime:
    """Stands in for `trt.Runtime` (creating a real one without a GPU can crash the process): keeps what
    recon sets on it."""

    def __init__(self, logger):
        self.logger = logger
        self.engine_host_code_allowed = False


def test_a_version_compatible_plans_runtime_allows_host_code_and_no_other_does():
    trt = SimpleNamespace(Runtime=_RecordingRuntime)
    assert new_runtime(trt, "log", {"version_compatible": True}).engine_host_code_allowed is True
    assert new_runtime(trt, "log", {"version_compatible": False}).engine_host_code_allowed is False
    assert new_runtime(trt, "log", {}).engine_host_code_allowed is False
    lean = pytest.importorskip("tensorrt_lean", reason="tensorrt-lean-cu13 is not installed here")
    assert isinstance(lean.Runtime.engine_host_code_allowed, property)  # the attribute recon sets, real


def test_the_copies_upload_the_batch_before_and_download_the_result_after():
    host_in, dev_in, dev_out, host_out = 0x1000, 0xD000, 0xE000, 0x2000
    upload, download = copy_plan(host_in, dev_in, 64, dev_out, host_out, 32)
    assert (upload.dst, upload.src, upload.nbytes, upload.kind) == (
        dev_in,
        host_in,
        64,
        "cudaMemcpyHostToDevice",
    )
    assert (download.dst, download.src, download.nbytes) == (host_out, dev_out, 32)
    assert download.kind == "cudaMemcpyDeviceToHost"
    runtime = pytest.importorskip("cuda.bindings.runtime", reason="cuda-python is not installed here")
    # the names resolve in the real bindings to the documented values (cudaMemcpyKind: H2D 1, D2H 2)
    assert int(getattr(runtime.cudaMemcpyKind, upload.kind)) == 1
    assert int(getattr(runtime.cudaMemcpyKind, download.kind)) == 2


def test_an_engines_profiles_come_from_its_manifest_entry_or_the_batch_range_before_them():
    entry = {
        "profiles": [
            {"batch": [1, 8, 32], "side": [64, 512, 1024]},
            {"batch": [1, 5, 5], "side": [64, 2048, 2048]},
        ]
    }
    assert engine_profiles(entry, BatchProfile(1, 8, 32)) == [
        Profile((1, 8, 32), (64, 512, 1024)), Profile((1, 5, 5), (64, 2048, 2048))
    ]  # fmt: skip
    assert engine_profiles({}, BatchProfile(1, 4, 16)) == [Profile((1, 4, 16))]


def _gpu_and_tensorrt() -> str | None:
    """Why the TensorRT tests cannot run here, or None when they can."""
    if shutil.which("nvidia-smi") is None:
        return "no NVIDIA GPU (nvidia-smi not found)"
    probe = "import tensorrt; tensorrt.Builder"  # the full package: the lean runtime has no builder
    if subprocess.run([sys.executable, "-c", probe], capture_output=True).returncode != 0:
        return "the full TensorRT package (builder) is not installed"
    return None


SKIP_REASON = _gpu_and_tensorrt()


@pytest.mark.gpu
@pytest.mark.skipif(SKIP_REASON is not None, reason=SKIP_REASON or "")
def test_an_exported_engine_runs_and_matches_onnxruntime(tmp_path):
    from recon.export.cli import main as export_main
    from recon.export.parity import DEFAULT_TOLERANCES, compare_outputs
    from recon.runtime import Reconstructor

    target = tmp_path / "cnn-deblur"
    args = ["--model", "cnn", "--task", "deblur", "--random-init", "--size", "64", "--fp16",
            "--engine", "trt", "--batch", "1:4:8", "--out", str(target)]  # fmt: skip
    with pytest.raises(SystemExit) as exit_info:
        export_main(args)
    assert exit_info.value.code in (0, None)
    batch = np.random.default_rng(0).random((5, 1, 64, 64), dtype=np.float32)
    with Reconstructor.from_artifact(target, backend="onnxruntime-cpu") as reference:
        expected = reference.run(batch)
    with Reconstructor.from_artifact(target, backend="tensorrt") as engine:
        assert engine.backend_name == "tensorrt"
        got = engine.run(batch)
    assert got.shape == expected.shape
    # the export's own TensorRT tolerance and metric (max abs and PSNR), not a second, tighter one
    ok, why = DEFAULT_TOLERANCES["tensorrt"].check(compare_outputs(expected, got))
    assert ok, why
