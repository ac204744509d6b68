"""Artifact checks, backend selection (explicit never falls back), TensorRT compatibility rules."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from cpu_backends import OPENVINO
from runtime_artifacts import H, W, build_artifact

from recon.runtime import ArtifactError, BackendError, Reconstructor
from recon.runtime.artifact.manifest import load_manifest
from recon.runtime.backends import create_backend, resolve_name, select_backend
from recon.runtime.backends.tensorrt import check_engine_compatible

PLAN = {"version": "11.4.0", "compute_capability": "9.0", "version_compatible": False, "device_name": "H100"}


def test_a_file_whose_sha256_does_not_match_is_refused_before_any_inference(tmp_path, monkeypatch):
    artifact = build_artifact(tmp_path / "a")
    data = bytearray((artifact / "model.onnx").read_bytes())
    data[-1] ^= 0xFF  # same size, different content
    (artifact / "model.onnx").write_bytes(bytes(data))
    started = []
    monkeypatch.setattr("recon.runtime.reconstructor.select_backend", lambda *a, **k: started.append(1))
    with pytest.raises(ArtifactError, match="sha256 does not match.*re-export"):
        Reconstructor.from_artifact(artifact)
    assert not started


def test_a_graph_changed_after_the_manifest_check_is_refused_by_the_backend(tmp_path, cpu_backend):
    # the backend hashes the very bytes it hands to onnxruntime, not the file load_manifest read earlier
    artifact = build_artifact(tmp_path / "a")
    manifest = load_manifest(artifact)  # verified here
    data = bytearray((artifact / "model.onnx").read_bytes())
    data[-1] ^= 0xFF
    (artifact / "model.onnx").write_bytes(bytes(data))
    backend = create_backend(cpu_backend, artifact, manifest, threads=1)
    with pytest.raises(ArtifactError, match="model.onnx: sha256 does not match the manifest; refusing"):
        backend.activate()
    assert not backend.is_active


def test_an_unknown_format_version_is_refused(tmp_path):
    artifact = build_artifact(tmp_path / "a")
    data = json.loads((artifact / "manifest.json").read_text())
    data["format_version"] = 99
    (artifact / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(ArtifactError, match="format version 99 is not known"):
        Reconstructor.from_artifact(artifact)


def test_a_missing_file_is_refused(tmp_path):
    artifact = build_artifact(tmp_path / "a", with_fp16=True)
    (artifact / "model.fp16.onnx").unlink()
    with pytest.raises(ArtifactError, match="model.fp16.onnx: listed in the manifest but missing"):
        Reconstructor.from_artifact(artifact)


def test_a_folder_without_manifest_is_refused(tmp_path):
    with pytest.raises(ArtifactError, match="no manifest.json"):
        Reconstructor.from_artifact(tmp_path)


def test_precision_picks_the_file_and_a_missing_precision_says_what_exists(
    deblur_artifact, ct_artifact, cpu_backend
):
    for precision, file in (
        ("auto", "model.onnx"),
        ("fp32", "model.onnx"),
        ("int8", "model.int8.onnx"),
        ("fp16", "model.fp16.onnx"),
    ):
        with Reconstructor.from_artifact(deblur_artifact, backend=cpu_backend, precision=precision) as rec:
            assert rec.backend.file == file
            assert rec.run(np.zeros((H, W), np.float32)).shape == (H, W)
    with pytest.raises(ArtifactError, match=r"no int8 ONNX file \(it has: fp32\)"):
        Reconstructor.from_artifact(ct_artifact, backend=cpu_backend, precision="int8")


def test_an_explicit_gpu_backend_on_a_cpu_only_machine_raises_instead_of_falling_back(deblur_artifact):
    for name in ("cuda", "onnxruntime-cuda", "onnxruntime-tensorrt"):
        with pytest.raises(BackendError, match="offers only .*CPUExecutionProvider.*--backend cpu"):
            Reconstructor.from_artifact(deblur_artifact, backend=name)


def test_auto_picks_the_cpu_here_and_says_why(deblur_artifact):
    with Reconstructor.from_artifact(deblur_artifact) as rec:
        assert rec.backend_name == ("openvino" if OPENVINO else "onnxruntime-cpu")
        assert rec.precision == "fp32"
        assert ("OpenVINO is installed" if OPENVINO else "OpenVINO is not installed") in rec.backend_reason
        assert "no TensorRT plan" in rec.backend_reason
        assert "no CUDA provider" in rec.backend_reason


def test_auto_explains_why_a_plan_was_not_used(tmp_path):
    artifact = build_artifact(tmp_path / "a", plan=PLAN)
    with Reconstructor.from_artifact(artifact) as rec:
        assert rec.backend_name in ("onnxruntime-cpu", "openvino")
        assert "TensorRT plan not usable" in rec.backend_reason


def test_the_tensorrt_backend_without_a_gpu_fails_with_one_clear_error(tmp_path):
    artifact = build_artifact(tmp_path / "a", plan=PLAN)
    code = (
        "import sys\nfrom recon.runtime import Reconstructor, BackendError\n"
        f"try:\n    Reconstructor.from_artifact({str(artifact)!r}, backend='tensorrt')\n"
        "except BackendError as e:\n    print('ERR', e); sys.exit(3)\n"
    )
    # a subprocess: were TensorRT touched without a GPU, the crash would not take pytest down
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 3, result.stdout + result.stderr
    assert "needs an NVIDIA GPU" in result.stdout and "--backend cpu" in result.stdout


def test_the_tensorrt_backend_needs_a_plan(deblur_artifact):
    with pytest.raises(ArtifactError, match="has no TensorRT plan"):
        Reconstructor.from_artifact(deblur_artifact, backend="tensorrt")


VC = {**PLAN, "version_compatible": True, "lean_runtime_excluded": True, "cuda_major": 13}
EMBEDDED = {**VC, "lean_runtime_excluded": False}


@pytest.mark.parametrize(
    ("info", "runtime", "lean", "cc", "message"),
    [
        (PLAN, "11.5.0", False, (9, 0), "built with TensorRT 11.4.0 and this is TensorRT 11.5.0"),
        (PLAN, "11.4.0", True, (9, 0), "lean runtime runs only version-compatible engines"),
        (PLAN, "11.4.0.106", False, (8, 9), "compute capability 9.0 and this GPU is 8.9"),
        # --lean plans carry no lean runtime: only exactly the builder's release runs them (finding 2)
        (VC, "11.3.0", True, (9, 0), r"install exactly tensorrt-lean-cu13==11\.4\.0"),
        (VC, "11.6.1", True, (9, 0), "no lean runtime in the plan"),
        (VC, "11.6.1", False, (9, 0), "no lean runtime in the plan"),
        ({**VC, "version": "11.4.0.106"}, "11.4.0.107", True, (9, 0), r"tensorrt-lean-cu13==11\.4\.0\.106"),
        (EMBEDDED, "11.3.0", False, (9, 0), "older TensorRT 11.3.0 cannot run"),
        (EMBEDDED, "11.5.0", True, (9, 0), "a lean runtime runs its release only"),
    ],
)
def test_engines_built_for_another_tensorrt_or_gpu_are_refused(info, runtime, lean, cc, message):
    with pytest.raises(ArtifactError, match=message):
        check_engine_compatible(info, runtime, lean, cc)


def test_compatible_engines_are_accepted():
    check_engine_compatible(PLAN, "11.4.0.106", False, (9, 0))
    check_engine_compatible(VC, "11.4.0.106", True, (9, 0))
    check_engine_compatible({**VC, "version": "11.4.0.106"}, "11.4.0.106.post1", True, (9, 0))
    check_engine_compatible(EMBEDDED, "11.6.1", False, (9, 0))  # a full runtime loads the embedded one
    check_engine_compatible({**PLAN, "hardware_compatibility_level": "AMPERE_PLUS"}, "11.4.0", False, (8, 6))


def test_backend_names_aliases_and_options_are_checked(deblur_artifact):
    assert resolve_name("CPU") == "onnxruntime-cpu" and resolve_name("cuda") == "onnxruntime-cuda"
    with pytest.raises(ValueError, match="unknown backend 'gpu'; choose one of: auto"):
        resolve_name("gpu")
    manifest = load_manifest(deblur_artifact)
    with pytest.raises(ValueError, match=r"takes no option\(s\) \['threads'\]"):
        create_backend("tensorrt", deblur_artifact, manifest, threads=2)
    with pytest.raises(ValueError, match="unknown backend option"):
        select_backend(deblur_artifact, manifest, "auto", colour="red")


def test_the_backend_interface_guards_its_state(deblur_artifact, cpu_backend):
    manifest = load_manifest(deblur_artifact)
    backend = create_backend(cpu_backend, deblur_artifact, manifest, threads=1)
    x = np.zeros((2, 1, H, W), np.float32)
    with pytest.raises(BackendError, match="not active"):
        backend.infer(x)
    with backend:
        assert backend.infer(x).shape == (2, 1, H, W)
        assert backend.last_timings["compute"] > 0 and "total" in backend.last_timings
        with pytest.raises(BackendError, match="already active"):
            backend.activate()
        with pytest.raises(ValueError, match="C-contiguous float32"):
            backend.infer(x.astype(np.float64))
    assert not backend.is_active


def test_each_output_belongs_to_its_caller_and_outlives_the_next_call(deblur_artifact, cpu_backend):
    # OpenVINO hands out views of the request's output tensor (share_outputs=True); the backend must copy
    # them, or the next call on the same request rewrites an output the caller still holds
    manifest = load_manifest(deblur_artifact)
    rng = np.random.default_rng(0)
    first_in, second_in = (rng.random((1, 1, H, W), dtype=np.float32) for _ in range(2))
    with create_backend(cpu_backend, deblur_artifact, manifest, threads=1) as backend:
        first = backend.infer(first_in)
        kept = first.copy()
        second = backend.infer(second_in)
        assert not np.shares_memory(first, second)
        np.testing.assert_array_equal(first, kept)
        assert not np.array_equal(first, second)
        first[...] = -1  # the caller may write into it: the next call still gives the right output
        np.testing.assert_array_equal(backend.infer(first_in), kept)


def test_a_manifest_without_usable_shapes_is_an_artifact_error(tmp_path):
    artifact = build_artifact(tmp_path / "a")
    data = json.loads((artifact / "manifest.json").read_text())
    del data["input"]["shape"]
    (artifact / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(ArtifactError, match=r"input needs a name and a shape \[batch, 1, H, W\]"):
        Reconstructor.from_artifact(artifact)
