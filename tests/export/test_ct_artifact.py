"""A CT artifact: sinogram in, image out, FBP inside the graph and kept FP32 in the FP16 file."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

MODEL = "resunet"


@pytest.fixture(scope="module")
def ct_artifact(exported):
    return exported(MODEL, "ct")


def _psnr(reference: np.ndarray, estimate: np.ndarray) -> float:
    mse = float(np.mean((np.clip(reference, 0, 1) - np.clip(estimate, 0, 1)) ** 2))
    return 10 * np.log10(1.0 / mse)


def test_the_fp16_file_has_fp16_convs_and_keeps_the_fbp_fp32(ct_artifact):
    from recon.export.precision import FLOAT, FLOAT16, inspect_precisions, island_node_names

    directory, _ = ct_artifact
    fp32 = onnx.load(str(directory / "model.onnx"))
    fp16 = onnx.load(str(directory / "model.fp16.onnx"))
    island = island_node_names(fp32, ["physics"])  # the operator: its FBP
    island_ops = {node.op_type for node in fp32.graph.node if node.name in island}
    assert "MatMul" in island_ops  # the ramp filter
    assert len(island) >= 10

    info = inspect_precisions(fp16, island)
    assert info["compute_ops"] and all(key.endswith(":fp16") for key in info["compute_ops"])
    assert info["compute_ops"].get("Conv:fp16", 0) >= 10
    assert info["island_nodes_in_fp16"] == []
    assert info["io"] == {"measurement": "fp32", "image": "fp32"}

    # Independently of our inspector: the weights of every network conv are stored FP16, the FBP's
    # initializers FP32, and the one FP32 → FP16 hand-over is a single Cast, not a round trip per node.
    initializers = {init.name: init.data_type for init in fp16.graph.initializer}
    conv_weights = [n.input[1] for n in fp16.graph.node if n.op_type == "Conv"]
    assert conv_weights and all(initializers[w] == FLOAT16 for w in conv_weights)
    fbp_inits = {i for n in fp16.graph.node if n.name in island for i in n.input if i in initializers}
    assert initializers["physics.fbp.filter_matrix"] == FLOAT
    assert fbp_inits and not any(initializers[i] == FLOAT16 for i in fbp_inits)
    assert info["casts"] <= 4


def test_a_ct_artifact_reconstructs_a_phantom_sinogram_within_a_tenth_of_a_db_of_torch(
    ct_artifact, saved_weights, torch_pipeline, simulated
):
    import torch

    from recon.runtime.reconstructor import Reconstructor

    directory, _ = ct_artifact
    sinograms, clean = simulated("ct", 2, seed=5)
    pipeline = torch_pipeline(saved_weights(MODEL, "ct"), MODEL, "ct")
    with torch.no_grad():
        reference = pipeline(torch.from_numpy(sinograms)).numpy()
    for precision in ("fp32", "fp16"):
        with Reconstructor.from_artifact(directory, backend="cpu", precision=precision) as rec:
            images = rec.run(sinograms)
        assert images.shape == clean.shape
        assert abs(_psnr(clean, images) - _psnr(clean, reference)) <= 0.1, precision


@pytest.mark.parametrize("batch", [1, 3, 17])
def test_the_batch_axis_is_dynamic(ct_artifact, simulated, batch):
    import onnxruntime as ort

    from recon.runtime.reconstructor import Reconstructor

    directory, _ = ct_artifact
    sinograms, _ = simulated("ct", batch, seed=batch)
    outputs = []
    for name in ("model.onnx", "model.fp16.onnx"):  # the graph itself, beyond the profile's max of 4
        session = ort.InferenceSession(str(directory / name), providers=["CPUExecutionProvider"])
        outputs.append(session.run(None, {"measurement": sinograms})[0])
        assert outputs[-1].shape == (batch, 1, 32, 32)
    with Reconstructor.from_artifact(directory, backend="cpu", precision="fp32", clip=False) as rec:
        deployed = rec.run(sinograms)  # the runtime splits to the profile
    np.testing.assert_allclose(deployed, outputs[0], atol=1e-5)
    assert np.abs(outputs[1] - outputs[0]).max() < 1e-2
