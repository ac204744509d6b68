"""TensorRT: layer-precision checks (anywhere) and real engine builds (where TensorRT and a GPU exist)."""

from __future__ import annotations

import json

import pytest

from recon.export.errors import ExportError
from recon.export.tensorrt_build import (
    check_engine_fp16,
    cuda_device_info,
    summarize_layers,
    tensorrt_builder_status,
)

# Shaped like the engine inspector's DETAILED JSON ("Format/Datatype" per tensor).
LAYERS = [
    {"Name": "node_MatMul_3", "LayerType": "MatrixMultiply",
     "Inputs": [{"Format/Datatype": "Row major linear FP32 format"}]},
    {"Name": "node_Conv_7 + node_relu", "LayerType": "CaskConvolution",
     "Inputs": [{"Format/Datatype": "Channel major FP16 format where channel % 8 == 0"}]},
    {"Name": "{ForeignNode[node_conv2d_2...node_add_9]}", "LayerType": "Myelin",
     "Inputs": [{"Format/Datatype": "Row major linear Half format"}]},
    {"Name": "node_Conv_fbp", "LayerType": "CaskConvolution",
     "Inputs": [{"Format/Datatype": "Row major linear FP32 format"}]},
]  # fmt: skip


def test_layer_summary_counts_network_convs_by_precision_and_sets_the_fbp_apart():
    summary = summarize_layers(LAYERS, fp32_island_nodes={"node_Conv_fbp", "node_MatMul_3"},
                               conv_nodes={"node_Conv_7", "node_conv2d_2"})  # fmt: skip
    assert summary["conv_fp16"] == 2 and summary["conv_fp32"] == 0 and summary["island_convs"] == 1
    check_engine_fp16(summary)


def test_an_fp32_network_conv_in_an_fp16_engine_is_refused():
    layers = [*LAYERS, {"Name": "node_Conv_12", "LayerType": "CaskConvolution",
                        "Inputs": [{"Format/Datatype": "Row major linear FP32 format"}]}]  # fmt: skip
    summary = summarize_layers(layers, fp32_island_nodes={"node_Conv_fbp"})
    assert summary["conv_fp32"] == 1 and summary["conv_fp32_names"] == ["node_Conv_12"]
    with pytest.raises(ExportError, match="in FP32 though --fp16"):
        check_engine_fp16(summary)
    with pytest.raises(ExportError, match="no FP16 layer"):
        check_engine_fp16(summarize_layers(LAYERS[:1]))


def test_the_gpu_probe_answers_without_touching_tensorrt():
    device, reason = cuda_device_info()
    assert (device is None) == bool(reason)
    trt, device2, why = tensorrt_builder_status()
    if device is None:
        assert trt is None and why == reason


needs_builder = pytest.mark.skipif(
    tensorrt_builder_status()[0] is None,
    reason=f"no TensorRT engine build here: {tensorrt_builder_status()[2]}",
)


@pytest.mark.gpu
@needs_builder
@pytest.mark.parametrize("lean", [False, True])
def test_an_fp16_ct_engine_builds_with_fp16_convs_and_passes_parity(exported, tmp_path, lean):
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    from recon.export.triton import write_triton_repository
    from recon.runtime.manifest import load_manifest

    directory, summary = exported("resunet", "ct", engine="trt", lean=lean, timing_cache=tmp_path / "cache")
    manifest = load_manifest(directory)
    plan = manifest.files["model.plan"]
    assert plan.precision == "fp16" and plan.tensorrt["version_compatible"] is lean
    assert plan.tensorrt["compute_capability"].count(".") == 1 and plan.tensorrt["version"]
    assert plan.tensorrt["profile"] == {"min": 1, "opt": 2, "max": 4}
    assert (tmp_path / "cache").stat().st_size > 0  # the timing cache persisted
    report = json.loads((directory / "parity.json").read_text())
    layers = report["tensorrt"]["layers"]
    assert layers["conv_fp16"] > 0 and layers["conv_fp32"] == 0
    assert manifest.parity["tensorrt_vs_onnxruntime-fp32"]["passed"] and manifest.parity["passed"]

    folders = write_triton_repository(tmp_path / "repo", directory, manifest.to_json(), onnx_precision="fp16")
    config = text_format.Parse((folders[1] / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    assert config.platform == "tensorrt_plan" and config.max_batch_size == 4


class _Recorder:
    """A stand-in for the `tensorrt` module that records how the builder is driven (no GPU needed). It proves
    our flags, profile and cache handling; the real API is exercised by the @gpu test above."""

    def __init__(self, version: str) -> None:
        import types

        self.__version__ = version
        self.calls: list[tuple] = []
        enum = types.SimpleNamespace
        self.NetworkDefinitionCreationFlag = enum(STRONGLY_TYPED=0)
        self.MemoryPoolType = enum(WORKSPACE="WORKSPACE")
        self.ProfilingVerbosity = enum(DETAILED="DETAILED")
        self.BuilderFlag = enum(VERSION_COMPATIBLE="VERSION_COMPATIBLE", EXCLUDE_LEAN_RUNTIME="EXCLUDE_LEAN")
        self.LayerInformationFormat = enum(JSON="JSON")
        rec = self

        class Obj:
            def __init__(self, *args):
                rec.calls.append((type(self).__name__, args))

            def __getattr__(self, name):
                def method(*args):
                    rec.calls.append((name, args))
                    answers = {
                        "parse_from_file": True,
                        "set_timing_cache": True,
                        "build_serialized_network": b"PLAN",
                        "serialize": b"CACHE",
                        "get_engine_information": json.dumps({"Layers": LAYERS}),
                    }
                    return answers.get(name, Obj())

                return method

        class Logger(Obj):
            ERROR = "ERROR"

        self.Logger = Logger
        self.Builder = self.OnnxParser = self.Runtime = Obj


@pytest.mark.parametrize(("version", "lean"), [("10.13.0", False), ("11.4.0", True)])
def test_the_builder_is_driven_as_documented(monkeypatch, tmp_path, version, lean):
    from recon.export import tensorrt_build as tb

    fake = _Recorder(version)
    device = {"name": "Test GPU", "compute_capability": "9.0"}
    monkeypatch.setattr(tb, "tensorrt_builder_status", lambda device_id=0: (fake, device, ""))
    options = tb.EngineOptions(
        batch=(1, 4, 16), workspace_mb=256, opt_level=2, timing_cache=tmp_path / "c", version_compatible=lean
    )
    info = tb.build_engine(
        tmp_path / "m.onnx",
        tmp_path / "m.plan",
        input_name="measurement",
        input_chw=(1, 8, 8),
        options=options,
        fp32_island_nodes={"node_Conv_fbp"},
        conv_nodes={"node_Conv_7", "node_conv2d_2"},
    )
    calls = dict(fake.calls)
    assert calls["create_network"] == ((1,) if version.startswith("10") else (0,))  # STRONGLY_TYPED below 11
    assert calls["set_memory_pool_limit"] == ("WORKSPACE", 256 << 20)
    assert calls["set_shape"] == ("measurement", (1, 1, 8, 8), (4, 1, 8, 8), (16, 1, 8, 8))
    assert calls["set_input_shape"] == ("measurement", (4, 1, 8, 8))  # the inspector sees the opt shape
    flags = [args[0] for name, args in fake.calls if name == "set_flag"]
    assert flags == (["VERSION_COMPATIBLE", "EXCLUDE_LEAN"] if lean else [])
    assert (tmp_path / "m.plan").read_bytes() == b"PLAN" and (tmp_path / "c").read_bytes() == b"CACHE"
    assert info["tensorrt"] == {
        "version": version,
        "compute_capability": "9.0",
        "device_name": "Test GPU",
        "version_compatible": lean,
        "lean_runtime_excluded": lean,
        "hardware_compatibility_level": "none",
        "profile": {"min": 1, "opt": 4, "max": 16},
        "builder_optimization_level": 2,
        "workspace_mb": 256,
    }
    assert info["layers"]["conv_fp16"] == 2 and info["layers"]["island_convs"] == 1
