"""The OpenVINO backend beyond the tests every CPU backend shares: bf16 (where the CPU has it, refused with
the reason elsewhere), precision hints set rather than left to the device, external data refused, `auto`'s
rule."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from cpu_backends import OPENVINO
from runtime_artifacts import ANGLES, DETECTORS, H, W, build_artifact, conv_reference

from recon.runtime import ArtifactError, BackendError, Reconstructor
from recon.runtime.backends import cpu_engine_rule
from recon.runtime.backends.openvino import bf16_refusal, bf16_refusal_here, cpu_flags

needs_openvino = pytest.mark.skipif(
    not OPENVINO, reason="OpenVINO is not installed (pip install recon[openvino])"
)
AVX2_MACHINE = {"sse4_2", "avx", "avx2", "fma", "f16c"}  # the AMD EPYC build machine of NOTES.md
X = np.random.default_rng(0).random((3, 1, H, W), dtype=np.float32)


def bf16_here() -> str | None:
    return bf16_refusal_here()


# -- the bf16 capability check, a function of the flags ----------------------------------------------------
def test_bf16_is_refused_on_an_avx2_cpu_and_the_reason_names_what_is_missing():
    why = bf16_refusal(["FP32", "INT8", "EXPORT_IMPORT"], AVX2_MACHINE)
    assert why is not None and "no BF16" in why and "AVX512_BF16 or AMX" in why and "fp32 or int8" in why


def test_bf16_is_refused_where_openvino_would_only_emulate_it():
    # AVX-512 without the bf16 extension: OpenVINO may list BF16, but there is no native bf16 arithmetic
    why = bf16_refusal(["BF16", "FP32", "INT8"], AVX2_MACHINE | {"avx512f", "avx512_vnni"})
    assert why is not None and "no native bf16" in why and "avx512_bf16 or amx_bf16" in why


@pytest.mark.parametrize("flag", ["avx512_bf16", "amx_bf16"])
def test_bf16_is_allowed_with_avx512_bf16_or_amx(flag):
    assert bf16_refusal(["BF16", "FP32", "INT8"], AVX2_MACHINE | {"avx512f", flag}) is None
    assert bf16_refusal(["BF16", "FP32"], None) is None  # no /proc/cpuinfo: OpenVINO's word stands


def test_cpu_flags_come_from_proc_cpuinfo(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: Some Xeon\nflags\t\t: fpu avx2 amx_bf16\n")
    assert cpu_flags(cpuinfo) == {"fpu", "avx2", "amx_bf16"}
    assert cpu_flags(tmp_path / "missing") is None


@needs_openvino
def test_bf16_runs_where_the_cpu_has_it_and_is_refused_elsewhere(deblur_artifact):
    why = bf16_here()
    if why is not None:
        with pytest.raises(BackendError, match="precision bf16 refused: .*use precision fp32 or int8"):
            Reconstructor.from_artifact(deblur_artifact, backend="openvino", precision="bf16")
        return
    with Reconstructor.from_artifact(deblur_artifact, backend="openvino", precision="bf16", threads=1) as rec:
        assert rec.precision == "bf16" and rec.backend.file == "model.onnx"
        assert "bfloat16" in rec.describe()["inference_precision"]
        out = rec.run(X)
    reference = np.clip(conv_reference(X), 0, 1)
    error = np.abs(out - reference).max()
    assert 1e-5 < error < 2e-2  # bf16 really ran (8-bit mantissa), and only that far off


@needs_openvino
def test_bf16_keeps_the_physics_before_the_network_in_float32(ct_artifact):
    # the test CT graph is all physics (a projection matrix, no convolution): in bf16 its MatMul would be
    # off by ~1e-2 (8-bit mantissa); kept float32 it matches fp32, on the static (batch 1) and dynamic graphs
    why = bf16_here()
    if why is not None:
        pytest.skip(f"bf16 cannot run here: {why}")
    y = np.random.default_rng(1).random((3, 1, ANGLES, DETECTORS), dtype=np.float32) * 50
    options = {"backend": "openvino", "threads": 1, "consistency": False, "clip": False}  # unclipped: ~±100
    with (
        Reconstructor.from_artifact(ct_artifact, precision="fp32", **options) as f32,
        Reconstructor.from_artifact(ct_artifact, precision="bf16", **options) as bf16,
    ):
        assert bf16.describe()["kept_f32_operations"] > 0
        for batch in (1, 3):
            np.testing.assert_allclose(bf16.run(y[:batch]), f32.run(y[:batch]), rtol=1e-5, atol=1e-5)


@needs_openvino
def test_the_operations_kept_float32_are_those_before_the_first_convolution():
    import openvino
    import openvino.opset13 as ops

    from recon.runtime.backends.openvino_precise import physics_operations

    x = ops.parameter([1, 1, 4, 4], np.float32, name="measurement")
    projected = ops.matmul(ops.reshape(x, ops.constant(np.array([1, 16])), False),
                           ops.constant(np.eye(16, dtype=np.float32)), False, False)  # fmt: skip
    image = ops.reshape(projected, ops.constant(np.array([1, 1, 4, 4])), False)
    conv = ops.convolution(
        image, ops.constant(np.ones((1, 1, 3, 3), np.float32)), [1, 1], [1, 1], [1, 1], [1, 1]
    )
    relu = ops.relu(conv)
    for node, name in ((projected, "filter"), (image, "image"), (conv, "conv"), (relu, "relu")):
        node.set_friendly_name(name)
    marked = physics_operations(openvino.Model([relu], [x]))
    assert {"filter", "image"} <= marked and not {"conv", "relu", "measurement"} & marked
    # no convolution: the whole graph is physics
    assert {"filter", "image"} <= physics_operations(openvino.Model([image], [x]))
    # padding only (a deblur graph taking any size): no arithmetic before the network, nothing kept
    padded = ops.pad(x, ops.constant(np.array([0, 0, 1, 1])), ops.constant(np.array([0, 0, 1, 1])), "reflect")
    conv = ops.convolution(
        padded, ops.constant(np.ones((1, 1, 3, 3), np.float32)), [1, 1], [0, 0], [0, 0], [1, 1]
    )
    assert physics_operations(openvino.Model([ops.relu(conv)], [x])) == set()


@needs_openvino
def test_auto_with_bf16_picks_openvino_or_refuses(deblur_artifact):
    if bf16_here() is not None:
        with pytest.raises(BackendError, match="bf16 refused"):
            Reconstructor.from_artifact(deblur_artifact, precision="bf16")
        return
    with Reconstructor.from_artifact(deblur_artifact, precision="bf16") as rec:
        assert rec.backend_name == "openvino" and "bf16 runs on OpenVINO" in rec.backend_reason


def test_onnxruntime_refuses_bf16_and_points_to_openvino(deblur_artifact):
    with pytest.raises(BackendError, match="has no bf16 path; bf16 runs on --backend openvino"):
        Reconstructor.from_artifact(deblur_artifact, backend="cpu", precision="bf16")


# -- precision and threads are set, not left to the device -------------------------------------------------
@needs_openvino
@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_fp32_and_int8_run_with_an_f32_hint_and_the_threads_asked_for(deblur_artifact, precision):
    # OpenVINO's CPU default is bf16 on CPUs that have it: an FP32 artifact must not run in bf16 unasked
    with Reconstructor.from_artifact(
        deblur_artifact, backend="openvino", precision=precision, threads=1
    ) as rec:
        assert "float32" in rec.describe()["inference_precision"]
        assert rec.backend.compiled.get_property("INFERENCE_NUM_THREADS") == 1
        assert rec.backend.compiled.get_property("NUM_STREAMS") == 1
        np.testing.assert_allclose(rec.run(X), np.clip(conv_reference(X), 0, 1), atol=1e-5)


def test_the_backend_without_openvino_installed_says_how_to_install_it(deblur_artifact):
    code = (
        "import sys\nsys.modules['openvino'] = None\n"
        "from recon.runtime import Reconstructor, BackendError\n"
        f"try:\n    Reconstructor.from_artifact({str(deblur_artifact)!r}, backend='openvino')\n"
        "except BackendError as e:\n    print('ERR', e); sys.exit(3)\n"
        f"r = Reconstructor.from_artifact({str(deblur_artifact)!r})\nprint('AUTO', r.backend_name)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 3, result.stdout + result.stderr
    assert "OpenVINO is not installed" in result.stdout and "recon[openvino]" in result.stdout


# -- auto's rule -------------------------------------------------------------------------------------------
def test_auto_prefers_openvino_when_installed_and_onnxruntime_otherwise():
    assert cpu_engine_rule(True, True)[0] == "openvino"
    assert cpu_engine_rule(True, True, "int8")[0] == "openvino"
    name, why = cpu_engine_rule(False, True)
    assert name == "onnxruntime-cpu" and "OpenVINO is not installed" in why
    name, why = cpu_engine_rule(True, True, "fp32", ["optimization_level"])
    assert name == "onnxruntime-cpu" and "onnxruntime's" in why
    assert cpu_engine_rule(True, False, "bf16")[0] == "openvino"
    with pytest.raises(BackendError, match="bf16 runs on OpenVINO, which is not installed"):
        cpu_engine_rule(False, True, "bf16")
    with pytest.raises(BackendError, match="no CPU engine is installed"):
        cpu_engine_rule(False, False)


# -- external data: refused before any engine reads it -----------------------------------------------------
def _external_artifact(tmp_path, location: str):
    import onnx

    from recon.runtime.artifact.manifest import load_manifest

    artifact = build_artifact(tmp_path / "a")
    model = onnx.load(str(artifact / "model.onnx"))
    onnx.save(model, str(artifact / "model.onnx"), save_as_external_data=True, location=location,
              size_threshold=0)  # fmt: skip
    manifest = load_manifest(artifact, verify=False)
    manifest.add_file(artifact, "model.onnx", "onnx", "fp32")  # hashed: only model.onnx is listed
    manifest.save(artifact)
    return artifact


def test_an_onnx_file_with_external_data_is_refused_by_every_cpu_backend(tmp_path, cpu_backend):
    # both engines, handed bytes, would read w.bin from the working directory, unhashed
    artifact = _external_artifact(tmp_path, "w.bin")
    with pytest.raises(ArtifactError, match=r"model.onnx: tensors \[.*'w'.*\] keep their data in other"):
        Reconstructor.from_artifact(artifact, backend=cpu_backend)


@needs_openvino
def test_each_shape_with_batch_1_opt_or_max_gets_a_static_graph_and_other_batches_the_dynamic_one(
    deblur_artifact,
):
    with Reconstructor.from_artifact(deblur_artifact, backend="openvino", threads=1) as rec:
        assert rec.backend.static_batches == [1, 4, 8]  # the profile is 1:4:8
        x = np.random.default_rng(1).random((8, 1, H, W), dtype=np.float32)
        for size in (1, 3, 8):
            np.testing.assert_allclose(rec.run(x[:size]), np.clip(conv_reference(x[:size]), 0, 1), atol=1e-5)
        assert set(rec.backend._by_shape) == {None, (1, 1, H, W), (8, 1, H, W)}
        assert rec.backend.compiled_for((3, 1, H, W))[0] is rec.backend.compiled  # dynamic
        static = rec.backend.compiled_for((8, 1, H, W))[0]
        assert static.input(0).get_partial_shape().is_static
        assert list(static.input(0).get_shape()) == [8, 1, H, W]


@needs_openvino
def test_image_sizes_get_static_graphs_up_to_the_cap_and_each_size_keeps_its_graph(any_size_artifact):
    from recon.runtime.backends import openvino as ov_backend

    rng = np.random.default_rng(2)
    with Reconstructor.from_artifact(any_size_artifact, backend="openvino", threads=1) as rec:
        sizes = [(16 + 2 * k, 20 + k) for k in range(ov_backend.MAX_STATIC_SHAPES + 2)]
        first = {}
        for h, w in sizes:
            x = rng.random((1, 1, h, w), dtype=np.float32)
            first[(h, w)] = (x, rec.run(x))
            np.testing.assert_allclose(first[(h, w)][1], np.clip(conv_reference(x), 0, 1), atol=1e-5)
        static = [k for k in rec.backend._by_shape if k is not None]
        assert static == [(1, 1, h, w) for h, w in sizes[: ov_backend.MAX_STATIC_SHAPES]]  # then full
        for h, w in sizes[ov_backend.MAX_STATIC_SHAPES :]:
            assert rec.backend.compiled_for((1, 1, h, w))[0] is rec.backend.compiled
        for x, out in first.values():  # a size runs on the same compiled graph every time: same bits
            assert np.array_equal(rec.run(x), out)


@needs_openvino
def test_the_per_call_cost_bench_runs_on_an_artifact(deblur_artifact):
    """bench/per_call_cost.py (docs/benchmarks.md) reaches into the backend's request pool: it must keep
    working as the backend changes."""
    script = Path(__file__).resolve().parents[2] / "bench" / "per_call_cost.py"
    result = subprocess.run(
        [sys.executable, str(script), str(deblur_artifact), "--precision", "fp32", "--calls", "4",
         "--threads", "1"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "fp32 batch 1: recon.run − the same checks bare:" in result.stdout, result.stdout
