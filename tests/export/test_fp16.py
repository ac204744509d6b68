"""The FP16 pass on small torch nets: FP16 compute, FP32 islands, FP32 I/O, few casts, runs in ORT."""

from __future__ import annotations

import math

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from recon.export.errors import ExportError
from recon.export.onnx_export import export_onnx
from recon.export.precision import (
    FLOAT,
    FLOAT16,
    check_fp16,
    convert_to_fp16,
    inspect_precisions,
    island_node_names,
)


class Geometry(nn.Module):
    """FBP-like: coordinates from angles (cos/sin in the graph), a gather, a long sum — must stay FP32."""

    def __init__(self, n: int = 16, angles: int = 8) -> None:
        super().__init__()
        self.n = n
        self.register_buffer("angles", torch.arange(angles) * math.pi / angles)
        self.register_buffer("taps", torch.randn(1, 1, 1, 5) * 0.1)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        y = nn.functional.conv2d(y, self.taps, padding=(0, 2))
        c = torch.arange(self.n, dtype=torch.float32, device=y.device) - (self.n - 1) / 2
        cos, sin = torch.cos(self.angles)[:, None, None], torch.sin(self.angles)[:, None, None]
        t = c[None, :, None] * cos + c[None, None, :] * sin + (y.shape[-1] - 1) / 2
        i0 = t.floor().clamp(0, y.shape[-1] - 2)
        w = t - i0
        idx = torch.arange(t.shape[0])[:, None, None]
        g0, g1 = y[:, :, idx, i0.long()], y[:, :, idx, i0.long() + 1]
        return ((1 - w) * g0 + w * g1).sum(2) * (math.pi / (2 * t.shape[0]))


class Net(nn.Module):
    def __init__(self, norm: bool = False) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(1, 8, 3, padding=1)
        self.norm = nn.GroupNorm(2, 8) if norm else nn.Identity()
        self.c2 = nn.Conv2d(8, 1, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + torch.tanh(self.c2(torch.relu(self.norm(self.c1(x)))))


class Pipe(nn.Module):
    def __init__(self, norm: bool = False) -> None:
        super().__init__()
        self.fbp = Geometry()
        self.network = Net(norm)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.network(self.fbp(y))


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    torch.manual_seed(0)
    module = Pipe(norm=True).eval()
    path = tmp_path_factory.mktemp("toy") / "toy.onnx"
    export_onnx(module, torch.rand(2, 1, 8, 23), path, batch_max=8)
    return module, onnx.load(str(path))


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def test_network_convs_become_fp16_and_the_island_stays_fp32(toy):
    module, fp32 = toy
    island = island_node_names(fp32, ["fbp"])
    assert {"Conv", "ReduceSum", "Mul"} <= {n.op_type for n in fp32.graph.node if n.name in island}
    fp16, report = convert_to_fp16(fp32, island_scopes=["fbp"])
    info = check_fp16(fp16, island)
    assert info["compute_ops"] == {"Conv:fp16": 2}  # the island's conv is not counted, and stays FP32
    assert info["io"] == {"measurement": "fp32", "image": "fp32"}
    assert report.island_nodes == len(island) and report.fp16_nodes > 0
    # GroupNorm statistics are an FP32 island of their own: ReduceMean and friends read FP32.
    types = {
        v.name: v.type.tensor_type.elem_type for v in onnx.shape_inference.infer_shapes(fp16).graph.value_info
    }
    for node in fp16.graph.node:
        if node.op_type in ("ReduceMean", "Sqrt", "Pow"):
            assert all(types.get(i, FLOAT) == FLOAT for i in node.input), node.name


def test_fp16_output_stays_close_to_torch_and_casts_are_not_round_trips(toy):
    module, fp32 = toy
    fp16, report = convert_to_fp16(fp32, island_scopes=["fbp"])
    x = torch.rand(3, 1, 8, 23)
    with torch.no_grad():
        reference = module(x).numpy()
    out = _run(fp16, x.numpy())
    assert out.dtype == np.float32
    assert np.abs(out - reference).max() < 5e-3
    # one Cast per value and direction at island borders: input→net, net↔norm, net→output
    casts = [n for n in fp16.graph.node if n.op_type == "Cast" and "__to_fp" in n.name]
    assert len(casts) == report.casts_inserted <= 6
    assert len({tuple(n.input) + (n.attribute[0].i,) for n in casts}) == len(casts)


def test_without_islands_the_fbp_would_go_fp16(toy):
    _, fp32 = toy
    island = island_node_names(fp32, ["fbp"])
    fp16, _ = convert_to_fp16(fp32)  # no island given: the geometry's conv goes FP16 too
    info = inspect_precisions(fp16, island)
    assert info["island_nodes_in_fp16"]
    with pytest.raises(ExportError, match="FP32-island"):
        check_fp16(fp16, island)


def test_a_conv_left_fp32_outside_the_islands_is_refused(toy):
    _, fp32 = toy
    island = island_node_names(fp32, ["fbp"])
    convs = [n.name for n in fp32.graph.node if n.op_type == "Conv" and n.name not in island]
    fp16, _ = convert_to_fp16(fp32, island_scopes=["fbp"], keep_fp32=lambda node: node.name == convs[0])
    with pytest.raises(ExportError, match="still computes"):
        check_fp16(fp16, island)


def test_large_weights_are_clipped_to_the_fp16_range_and_reported(tmp_path):
    net = Net().eval()
    with torch.no_grad():
        net.c1.weight[0, 0, 0, 0] = 1e6
    export_onnx(net, torch.rand(2, 1, 8, 8), tmp_path / "big.onnx", batch_max=4)
    fp16, report = convert_to_fp16(onnx.load(str(tmp_path / "big.onnx")))
    assert report.initializers_clipped == 1
    weights = {i.name: i for i in fp16.graph.initializer}
    assert all(weights[n.input[1]].data_type == FLOAT16 for n in fp16.graph.node if n.op_type == "Conv")
