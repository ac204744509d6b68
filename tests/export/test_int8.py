"""INT8 (static QDQ, CPU): the artifact runs, stays within a PSNR tolerance, and the FBP is not quantized."""

from __future__ import annotations

import json

import numpy as np
import onnx


def test_int8_artifact_runs_within_tolerance_and_never_quantizes_the_backprojection(exported, simulated):
    from recon.export.int8 import check_int8
    from recon.export.precision import island_node_names
    from recon.runtime.manifest import load_manifest
    from recon.runtime.reconstructor import Reconstructor

    directory, summary = exported("cnn", "ct", int8=True, fp16=False)
    manifest = load_manifest(directory)
    assert manifest.files["model.int8.onnx"].precision == "int8"
    assert manifest.parity["onnxruntime-int8"]["psnr"] >= 35
    assert manifest.parity["int8_cpu_speedup"] > 0
    report = json.loads((directory / "parity.json").read_text())
    speed = report["int8"]["speed"]
    assert speed["threads"] == 1 and speed["fp32_ms"] > 0 and speed["int8_ms"] > 0

    island = island_node_names(onnx.load(str(directory / "model.onnx")), ["fbp"])
    quantized = onnx.load(str(directory / "model.int8.onnx"))
    assert island <= {node.name for node in quantized.graph.node}  # excluded, not rewritten
    info = check_int8(quantized, island)  # raises if an FBP node reads dequantized data
    assert info["quantized_ops"] == {"Conv": 3}

    sinograms, clean = simulated("ct", 3, seed=11)
    with Reconstructor.from_artifact(directory, backend="cpu", precision="int8") as rec:
        assert rec.precision == "int8"
        int8_images = rec.run(sinograms)
    with Reconstructor.from_artifact(directory, backend="cpu", precision="fp32") as rec:
        fp32_images = rec.run(sinograms)
    mse = float(np.mean((int8_images - fp32_images) ** 2))
    assert 10 * np.log10(1 / mse) >= 35
