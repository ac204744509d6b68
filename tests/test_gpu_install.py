"""The lean runtime, installed for real: a fresh venv with `recon[lean]` (tensorrt-lean-cu13 + cuda-python 13
from PyPI, no onnxruntime, no torch) imports recon's TensorRT backend, reads the versions, applies the
compatibility rules to the installed TensorRT, and refuses without a GPU.

Never creates a TensorRT `Runtime` here: without a GPU that logs CUDA error 35 and can segfault when freed.
Slow: ~70 MB of wheels.
"""

from __future__ import annotations

import json
import subprocess
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

PROBE = r"""
import json, sys
from importlib import metadata
from recon.runtime import BackendError, Reconstructor
from recon.runtime.backends import tensorrt as backend
from recon.runtime.artifact.manifest import ArtifactError

out = {}
trt, lean = backend.import_tensorrt()
out["module"], out["lean"], out["version"] = trt.__name__, lean, trt.__version__
out["has_runtime"], out["has_builder"] = hasattr(trt, "Runtime"), hasattr(trt, "Builder")
out["has_host_code_switch"] = hasattr(trt.Runtime, "engine_host_code_allowed")
out["wheel_version"] = metadata.version("tensorrt-lean-cu13")
out["tensorrt_cuda"] = backend.installed_tensorrt_cuda_major()
out["cuda_python"] = backend.cuda_python_major()
backend.check_cuda_majors(out["tensorrt_cuda"], out["cuda_python"])

built = {"version": trt.__version__, "compute_capability": "9.0", "version_compatible": True,
         "lean_runtime_excluded": True, "cuda_major": 13}
backend.check_engine_compatible(built, trt.__version__, lean, (9, 0))  # the builder's own release: runs
refusals = []
newer = ".".join(str(p + (i == 2)) for i, p in enumerate(backend.version_tuple(trt.__version__)))
for info in ({**built, "version": newer}, {**built, "version_compatible": False}):
    try:
        backend.check_engine_compatible(info, trt.__version__, lean, (9, 0))
    except ArtifactError as error:
        refusals.append(str(error))
out["refusals"] = refusals

try:
    backend.cuda_device(0)
    out["device"] = "found"
except BackendError as error:
    out["device"] = str(error)
try:
    Reconstructor.from_artifact(sys.argv[1], backend="tensorrt")
    out["reconstructor"] = "started"
except BackendError as error:
    out["reconstructor"] = str(error)
heavy = ("torch", "onnxruntime", "recon.training", "recon.export")
out["imported"] = sorted(m for m in heavy if m in sys.modules)
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def lean_runtime_venv(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("trt-lean-venv")
    venv.EnvBuilder(with_pip=True).create(home)
    command = [str(home / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    result = subprocess.run([*command, f"{ROOT}[lean]"], capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return home


@pytest.mark.slow
def test_the_lean_runtime_install_imports_checks_versions_and_refuses_without_a_gpu(
    lean_runtime_venv, tmp_path
):
    import sys

    sys.path.insert(0, str(ROOT / "tests" / "runtime"))
    from runtime_artifacts import build_artifact

    plan = {"version": "10.13.3.9", "compute_capability": "9.0", "version_compatible": True,
            "lean_runtime_excluded": True, "cuda_major": 13}  # fmt: skip
    artifact = build_artifact(tmp_path / "a", plan=plan)
    result = subprocess.run(
        [str(lean_runtime_venv / "bin" / "python"), "-c", PROBE, str(artifact)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["module"] == "tensorrt_lean" and out["lean"] is True
    assert out["has_runtime"] and not out["has_builder"] and out["has_host_code_switch"]
    assert out["version"].split(".")[:3] == out["wheel_version"].split(".")[:3]
    assert out["version"].startswith("10.")  # [lean] matches [gpu]'s TensorRT < 11
    assert out["tensorrt_cuda"] == 13 and out["cuda_python"] == 13
    newer, not_vc = out["refusals"]
    assert "install exactly tensorrt-lean-cu13==" in newer and "no lean runtime in the plan" in newer
    assert "lean runtime runs only version-compatible engines" in not_vc
    for message in (out["device"], out["reconstructor"]):  # no GPU here: one sentence, no Runtime made
        assert "needs an NVIDIA GPU" in message or "driver here is too old" in message, message
    assert out["imported"] == []  # the TensorRT path pulls in neither onnxruntime nor the training side
