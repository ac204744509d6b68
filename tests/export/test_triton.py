"""Triton model repository: configs parsed with Triton's own protobuf, so a typo cannot pass."""

from __future__ import annotations

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from recon.export.errors import ExportError
from recon.export.triton import config_text, parse_config, write_triton_repository

MANIFEST = {
    "name": "resunet-ct",
    "input": {"name": "measurement", "shape": ["batch", 1, 60, 363], "dtype": "float32"},
    "output": {"name": "image", "shape": ["batch", 1, 256, 256], "dtype": "float32"},
    "batch": {"min": 1, "opt": 8, "max": 32},
    "files": {
        "model.onnx": {"kind": "onnx", "precision": "fp32"},
        "model.fp16.onnx": {"kind": "onnx", "precision": "fp16"},
        "model.plan": {"kind": "tensorrt", "precision": "fp16"},
    },
}


def _parse(path) -> model_config_pb2.ModelConfig:
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def test_the_repository_holds_an_onnx_and_a_plan_model_with_valid_configs(tmp_path):
    artifact = tmp_path / "artifact"
    artifact.mkdir()
    for name in MANIFEST["files"]:
        (artifact / name).write_bytes(name.encode())
    folders = write_triton_repository(tmp_path / "repo", artifact, MANIFEST, onnx_precision="fp16")
    assert [f.name for f in folders] == ["resunet-ct", "resunet-ct-trt"]

    onnx_cfg = _parse(tmp_path / "repo" / "resunet-ct" / "config.pbtxt")
    assert onnx_cfg.name == "resunet-ct" and onnx_cfg.platform == "onnxruntime_onnx"
    assert onnx_cfg.max_batch_size == 32
    assert list(onnx_cfg.input[0].dims) == [1, 60, 363] and list(onnx_cfg.output[0].dims) == [1, 256, 256]
    assert onnx_cfg.input[0].data_type == model_config_pb2.TYPE_FP32
    assert list(onnx_cfg.dynamic_batching.preferred_batch_size) == [8, 32]
    assert onnx_cfg.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_AUTO
    assert (tmp_path / "repo" / "resunet-ct" / "1" / "model.onnx").read_bytes() == b"model.fp16.onnx"

    plan_cfg = _parse(tmp_path / "repo" / "resunet-ct-trt" / "config.pbtxt")
    assert plan_cfg.platform == "tensorrt_plan" and plan_cfg.max_batch_size == 32
    assert plan_cfg.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_GPU
    assert (tmp_path / "repo" / "resunet-ct-trt" / "1" / "model.plan").read_bytes() == b"model.plan"

    with pytest.raises(ExportError, match="--force"):
        write_triton_repository(tmp_path / "repo", artifact, MANIFEST)
    write_triton_repository(tmp_path / "repo", artifact, MANIFEST, force=True)  # fp32 ONNX now
    assert (tmp_path / "repo" / "resunet-ct" / "1" / "model.onnx").read_bytes() == b"model.onnx"
    assert sorted(p.name for p in (tmp_path / "repo").iterdir()) == ["resunet-ct", "resunet-ct-trt"]


def test_a_typo_in_a_config_does_not_parse():
    text = config_text("m", "onnxruntime_onnx", MANIFEST)
    parse_config(text)
    with pytest.raises(ExportError, match="does not parse"):
        parse_config(text.replace("max_batch_size", "max_batchsize"))
    with pytest.raises(ExportError, match="does not parse"):
        parse_config(text.replace("KIND_GPU", "KIND_GPUS"))
