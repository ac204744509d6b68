"""INT8 (static QDQ, CPU): the artifact runs, stays within a PSNR tolerance, and the FBP is not quantized."""

from __future__ import annotations

import json

import numpy as np
import onnx


def test_int8_artifact_runs_within_tolerance_and_never_quantizes_the_backprojection(exported, simulated):
    from recon.export.int8 import check_int8
    from recon.export.precision import island_node_names
    from recon.runtime.artifact.manifest import load_manifest
    from recon.runtime.reconstructor import Reconstructor

    directory, summary = exported("cnn", "ct", int8=True, fp16=False)
    manifest = load_manifest(directory)
    assert manifest.files["model.int8.onnx"].precision == "int8"
    assert manifest.parity["onnxruntime-int8"]["psnr"] >= 35
    assert manifest.parity["int8_cpu_speedup"] > 0
    report = json.loads((directory / "parity.json").read_text())
    speed = report["int8"]["speed"]
    assert speed["threads"] == 1 and speed["fp32_ms"] > 0 and speed["int8_ms"] > 0

    island = island_node_names(onnx.load(str(directory / "model.onnx")), ["physics"])
    quantized = onnx.load(str(directory / "model.int8.onnx"))
    assert island <= {node.name for node in quantized.graph.node}  # excluded, not rewritten
    info = check_int8(quantized, island)  # raises if an FBP node reads dequantized data
    # A 3-conv network keeps its first and last conv in float (the ends carry the image and the residual).
    assert info["quantized_ops"] == {"Conv": 1} and info["float_compute_ops"] == {"Conv": 2}
    assert len(report["int8"]["float_end_layers"]) == 2

    sinograms, clean = simulated("ct", 3, seed=11)
    with Reconstructor.from_artifact(directory, backend="cpu", precision="int8") as rec:
        assert rec.precision == "int8"
        int8_images = rec.run(sinograms)
    with Reconstructor.from_artifact(directory, backend="cpu", precision="fp32") as rec:
        fp32_images = rec.run(sinograms)
    mse = float(np.mean((int8_images - fp32_images) ** 2))
    assert 10 * np.log10(1 / mse) >= 35


def test_the_end_layers_of_a_deep_network_stay_float_and_the_island_is_not_counted():
    from onnx import TensorProto, helper

    from recon.export.int8 import end_layers

    nodes = [helper.make_node("Conv", [f"x{i}", "w"], [f"x{i + 1}"], name=f"conv{i}") for i in range(8)]
    nodes.insert(0, helper.make_node("Conv", ["s", "r"], ["x0"], name="fbp_ramp"))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("s", TensorProto.FLOAT, None)], [])
    assert end_layers(helper.make_model(graph), {"fbp_ramp"}) == ["conv0", "conv1", "conv6", "conv7"]


def test_an_any_size_resunet_quantizes_and_its_int8_file_takes_another_size(tmp_path, monkeypatch):
    # The ResUNet pads to a multiple of 16 inside the graph: onnxruntime's symbolic shape inference gives up
    # on those ceil expressions, which once failed every `recon-export --model resunet --int8`.
    from recon.export import ExportOptions, export_artifact
    from recon.runtime import Reconstructor

    monkeypatch.chdir(tmp_path)  # a failed symbolic inference used to leave files in the working directory
    out = tmp_path / "resunet-int8"
    export_artifact(
        ExportOptions(
            model="resunet",
            random_init=True,
            task_overrides={"image_size": 64},
            int8=True,
            engine="none",
            batch=(1, 1, 2),
            consistency_images=0,
            out=out,
        )
    )
    with Reconstructor.from_artifact(out, backend="cpu", precision="int8", consistency=False) as rec:
        image = rec.run(np.random.default_rng(0).random((48, 80), dtype=np.float32))
    assert image.shape == (48, 80) and np.isfinite(image).all()
    assert [p.name for p in tmp_path.iterdir()] == ["resunet-int8"]
