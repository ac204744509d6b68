"""Every registered model exports, for both tasks, and passes parity on the CPU."""

from __future__ import annotations

import json

import pytest

from recon.training.models import list_models

TASKS = ("deblur", "ct")


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("model", list_models())
def test_every_model_and_task_exports_and_passes_parity(exported, model, task):
    from recon.runtime.artifact.manifest import load_manifest

    directory, summary = exported(model, task, weights=False)
    manifest = load_manifest(directory)  # every file is there and matches its sha256
    assert summary["parity"]["passed"]
    assert manifest.parity["onnxruntime-fp32"]["max_abs"] <= 1e-4
    assert manifest.parity["onnxruntime-fp16"]["psnr"] >= 50
    assert set(manifest.files) == {
        "model.onnx", "model.fp16.onnx", "parity.json", "consistency.onnx", "golden/inputs.npy",
        "golden/outputs.npy",
    }  # fmt: skip
    assert manifest.consistency.file == "consistency.onnx"  # every model and task gets the trust signal
    assert manifest.input.shape[0] == "batch" and manifest.output.shape[0] == "batch"
    # fully convolutional deblur graphs take any size (symbolic H, W); CT and the ViT keep their shape
    dynamic = task == "deblur" and model != "vit"
    assert manifest.output.shape[2:] == (("height", "width") if dynamic else (32, 32))
    if dynamic:  # torch vs ONNX at sizes other than the example's, non-square and not multiples of 16
        assert manifest.parity["onnxruntime-fp32-other-sizes"]["max_abs"] <= 1e-4
    if task == "ct":
        assert manifest.input.shape[1:] == (1, 20, manifest.task_config.n_detectors)
        assert manifest.input.layout == "N1AD"
    report = json.loads((directory / "parity.json").read_text())
    assert report["inputs"]["batch_sizes"] == [1, 2, 3]
    assert all(key.endswith(":fp16") for key in report["fp16"]["compute_ops"])
    assert report["fp16"]["island_nodes_in_fp16"] == []
