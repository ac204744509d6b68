"""Triton model repository: configs parsed with Triton's own protobuf, so a typo cannot pass."""

from __future__ import annotations

import ast

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from recon.export.errors import ExportError
from recon.export.triton import config_text, parse_config, plan_notes, write_triton_repository

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
    folders, notes = write_triton_repository(
        tmp_path / "repo", artifact, MANIFEST, flavour="native", onnx_precision="fp16"
    )
    assert [f.name for f in folders] == ["resunet-ct", "resunet-ct-trt"]
    assert any("TensorRT unknown" in note for note in notes)  # the manifest above records no version

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
        write_triton_repository(tmp_path / "repo", artifact, MANIFEST, flavour="native")
    write_triton_repository(tmp_path / "repo", artifact, MANIFEST, flavour="native", force=True)  # fp32 now
    assert (tmp_path / "repo" / "resunet-ct" / "1" / "model.onnx").read_bytes() == b"model.onnx"
    assert sorted(p.name for p in (tmp_path / "repo").iterdir()) == ["resunet-ct", "resunet-ct-trt"]


def test_a_typo_in_a_config_does_not_parse():
    text = config_text("m", "onnxruntime_onnx", MANIFEST)
    parse_config(text)
    with pytest.raises(ExportError, match="does not parse"):
        parse_config(text.replace("max_batch_size", "max_batchsize"))
    with pytest.raises(ExportError, match="does not parse"):
        parse_config(text.replace("KIND_GPU", "KIND_GPUS"))


def test_the_config_is_built_as_a_message_so_a_wrong_kind_or_dtype_fails_before_any_text():
    with pytest.raises(ExportError, match="cannot describe 'm' to Triton.*KIND_GPUS"):
        config_text("m", "onnxruntime_onnx", MANIFEST, instance_kind="KIND_GPUS")
    bf16 = {**MANIFEST, "output": {**MANIFEST["output"], "dtype": "bfloat16"}}
    with pytest.raises(ExportError, match="bfloat16"):
        config_text("m", "onnxruntime_onnx", bf16)
    parameters = {"recon_backend": 'a "quoted" value'}  # escaped by text_format, not by hand
    config = parse_config(config_text("m", "python", MANIFEST, parameters=parameters))
    assert config.backend == "python"
    assert config.parameters["recon_backend"].string_value == 'a "quoted" value'


def test_the_python_flavour_holds_model_py_and_a_copy_of_the_artifact(tmp_path):
    artifact = tmp_path / "artifact"
    artifact.mkdir()
    for name in ("manifest.json", *MANIFEST["files"]):
        (artifact / name).write_bytes(name.encode())
    folders, _ = write_triton_repository(
        tmp_path / "repo", artifact, MANIFEST, flavour="python", instances=3, max_queue_delay_us=500,
        python_threads=2,
    )  # fmt: skip
    assert [f.name for f in folders] == ["resunet-ct-python"]
    model = folders[0]
    config = _parse(model / "config.pbtxt")
    assert config.backend == "python" and config.platform == ""
    assert config.max_batch_size == 32 and list(config.input[0].dims) == [1, 60, 363]
    assert config.instance_group[0].count == 3
    assert config.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_CPU
    assert config.dynamic_batching.max_queue_delay_microseconds == 500
    assert config.parameters["recon_threads"].string_value == "2"
    assert config.parameters["recon_backend"].string_value == "auto"
    # the repository is self-contained: the artifact's files sit in the version folder, byte for byte
    for name in ("manifest.json", *MANIFEST["files"]):
        assert (model / "1" / "artifact" / name).read_bytes() == name.encode()
    tree = ast.parse((model / "1" / "model.py").read_text())
    assert any(isinstance(n, ast.ClassDef) and n.name == "TritonPythonModel" for n in tree.body)
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    # inside Triton: the runtime only (no torch, no recon.export), numpy and the stub's utilities
    assert imported == {"__future__", "json", "os", "numpy", "triton_python_backend_utils", "recon.runtime"}


def test_both_flavours_side_by_side(tmp_path):
    artifact = tmp_path / "artifact"
    artifact.mkdir()
    for name in MANIFEST["files"]:
        (artifact / name).write_bytes(b"x")
    folders, _ = write_triton_repository(tmp_path / "repo", artifact, MANIFEST)  # default: both
    assert [f.name for f in folders] == ["resunet-ct", "resunet-ct-trt", "resunet-ct-python"]
    with pytest.raises(ExportError, match="unknown Triton flavour"):
        write_triton_repository(tmp_path / "repo2", artifact, MANIFEST, flavour="grpc")
    with pytest.raises(ExportError, match="instances"):
        write_triton_repository(tmp_path / "repo3", artifact, MANIFEST, instances=0)


def test_a_plan_whose_profile_minimum_exceeds_one_is_recorded_for_the_server():
    manifest = {**MANIFEST, "batch": {"min": 4, "opt": 8, "max": 32}}
    plan = {"kind": "tensorrt", "tensorrt": {"version": "10.13.2", "version_compatible": True,
                                             "lean_runtime_excluded": True}}  # fmt: skip
    notes = plan_notes(manifest, plan)
    assert any("minimum batch is 4" in n and "rejects" in n for n in notes)
    profiled = {
        "kind": "tensorrt",
        "tensorrt": {**plan["tensorrt"], "profile": {"min": 2, "opt": 8, "max": 32}},
    }
    assert any(
        "minimum batch is 2" in n for n in plan_notes(MANIFEST, profiled)
    )  # the engine's profile rules
    assert any(
        "--backend-config=tensorrt,version-compatible=true" in n and "10.13.2 exactly" in n for n in notes
    )
    text = config_text("m-trt", "tensorrt_plan", manifest, comments=tuple(notes))
    config = parse_config(text)  # comments parse
    assert text.startswith("# ") and "version-compatible=true" in text
    assert list(config.dynamic_batching.preferred_batch_size) == [8, 32]
    low = {**MANIFEST, "batch": {"min": 4, "opt": 2, "max": 32}}
    assert list(
        parse_config(config_text("m", "tensorrt_plan", low)).dynamic_batching.preferred_batch_size
    ) == [32]
    # the python flavour pads to the minimum itself (Reconstructor), so its batcher may aim lower
    assert list(parse_config(config_text("m", "python", low)).dynamic_batching.preferred_batch_size) == [
        2,
        32,
    ]
    fixed = plan_notes(
        MANIFEST, {"kind": "tensorrt", "tensorrt": {"version": "11.1.0", "compute_capability": "9.0"}}
    )
    assert fixed == ["the plan runs only on TensorRT 11.1.0 and compute capability 9.0: pick the NGC Triton "
                     "release that ships it"]  # fmt: skip


def test_symbolic_spatial_dims_become_triton_variable_dims():
    any_size = ["batch", 1, "H", "W"]
    manifest = {**MANIFEST, "input": {"name": "measurement", "shape": any_size, "dtype": "float32"},
                "output": {"name": "image", "shape": any_size, "dtype": "float32"}}  # fmt: skip
    config = parse_config(config_text("m", "python", manifest))
    assert list(config.input[0].dims) == [1, -1, -1] and list(config.output[0].dims) == [1, -1, -1]


def test_recon_export_writes_the_chosen_flavour_and_refuses_triton_options_without_a_repo(tmp_path, capsys):
    from recon.export.cli import main

    small = ["--model", "cnn", "--random-init", "--size", "32", "--batch", "1:2:4", "--engine", "none",
             "--threads", "1", "--quiet"]  # fmt: skip
    repo = tmp_path / "repo"
    with pytest.raises(SystemExit) as done:
        main([*small, "--out", str(tmp_path / "art"), "--triton-repo", str(repo),
              "--triton-flavour", "python", "--triton-instances", "2",
              "--triton-max-queue-delay-us", "250", "--triton-threads", "1"])  # fmt: skip
    assert done.value.code in (0, None), capsys.readouterr().err
    assert sorted(p.name for p in repo.iterdir()) == ["cnn-deblur-python"]
    config = _parse(repo / "cnn-deblur-python" / "config.pbtxt")
    assert config.instance_group[0].count == 2 and config.max_batch_size == 4
    assert config.dynamic_batching.max_queue_delay_microseconds == 250
    assert config.parameters["recon_threads"].string_value == "1"
    copied = repo / "cnn-deblur-python" / "1" / "artifact"
    for name in ("manifest.json", "model.onnx"):
        assert (copied / name).read_bytes() == (tmp_path / "art" / name).read_bytes()

    capsys.readouterr()
    with pytest.raises(SystemExit) as done:
        main([*small, "--out", str(tmp_path / "art2"), "--triton-instances", "2"])
    err = capsys.readouterr().err.strip()
    assert done.value.code == 2 and err.startswith("error: --triton-instances need(s) --triton-repo DIR")
    assert not (tmp_path / "art2").exists()
