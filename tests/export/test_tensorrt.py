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

    folders, _ = write_triton_repository(
        tmp_path / "repo", directory, manifest.to_json(), onnx_precision="fp16"
    )
    config = text_format.Parse((folders[1] / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    assert config.platform == "tensorrt_plan" and config.max_batch_size == 4
