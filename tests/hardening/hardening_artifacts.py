"""Artifacts beyond the runtime tests' conv/matmul: graphs that overflow or divide by zero on some inputs.

- "normalize": each image divided by its own maximum (y = x / max(x)), like a per-image normalization
  layer without an epsilon. An all-zero image gives 0/0 = NaN; clipping would hide it as a black image.
- "gain": y = 4 x. Finite float32 inputs above ~8.5e37 overflow to Inf, which clipping turns into white.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
from runtime_artifacts import H, W

from recon.runtime.artifact.manifest import BatchProfile, IOSpec, Manifest
from recon.runtime.artifact.task_config import DeblurTask

GAIN = 4.0


def conv3x3(x: np.ndarray, weights: np.ndarray, bias: float) -> np.ndarray:
    """The conv artifact's graph in float64 numpy: 'same' 3x3 cross-correlation + bias + ReLU."""
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    out = np.full(x.shape, float(bias))
    for i in range(3):
        for j in range(3):
            out += float(weights[i, j]) * padded[:, :, i : i + x.shape[2], j : j + x.shape[3]]
    return np.maximum(out, 0.0)


def _model(kind: str):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    if kind == "normalize":
        nodes = [
            helper.make_node("ReduceMax", ["measurement", "axes"], ["peak"], keepdims=1),
            helper.make_node("Div", ["measurement", "peak"], ["image"]),
        ]
        init = [numpy_helper.from_array(np.array([1, 2, 3], np.int64), "axes")]
    else:
        nodes = [helper.make_node("Mul", ["measurement", "gain"], ["image"])]
        init = [numpy_helper.from_array(np.array(GAIN, np.float32), "gain")]
    graph = helper.make_graph(
        nodes,
        kind,
        [helper.make_tensor_value_info("measurement", TensorProto.FLOAT, ["batch", 1, H, W])],
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 1, H, W])],
        init,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.checker.check_model(model, full_check=True)
    return model


def build_special_artifact(directory: Path, kind: str, max_batch: int = 8) -> Path:
    import onnx

    directory.mkdir(parents=True, exist_ok=True)
    onnx.save(_model(kind), directory / "model.onnx")
    shape = ("batch", 1, H, W)
    manifest = Manifest(
        name=f"test-{kind}",
        task="deblur",
        model={"name": kind, "config": {}, "weights_sha256": None},
        input=IOSpec("measurement", shape, layout="NCHW"),  # unbounded: these graphs overflow inside
        output=IOSpec("image", shape, layout="NCHW", value_range=(0.0, 1.0), clip=True),
        task_config=DeblurTask(image_size=H),
        batch=BatchProfile(min=1, opt=4, max=max_batch),
    )
    manifest.add_file(directory, "model.onnx", "onnx", "fp32")
    manifest.save(directory)
    return directory


def export_cnn(target: Path, engine: str = "none") -> Path:
    """A really exported artifact (recon-export, random weights): 3 convs, 64 filters, 64x64, FP32 + FP16."""
    command = [sys.executable, "-m", "recon.export.cli", "--model", "cnn", "--task", "deblur",
               "--random-init", "--size", "64", "--batch", "1:4:8", "--engine", engine, "--fp16",
               "--threads", "1", "--quiet", "--out", str(target)]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=900)
    if result.returncode != 0:
        raise RuntimeError(f"recon-export failed: {result.stderr.strip()}")
    return target


def add_flagging_check(directory: Path, flag_above: float = -1.0) -> Path:
    """A consistency check whose one statistic (the residual) is each output image's mean, bounded above by
    `flag_above`: with the default every image is FLAGGED. Real ONNX, loaded by runtime/consistency.py."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from recon.runtime.artifact.consistency_entry import ConsistencyEntry
    from recon.runtime.artifact.manifest import load_manifest

    graph = helper.make_graph(
        [  # mean(image) + 0 · mean(measurement): both inputs used, as the engines want
            helper.make_node("ReduceMean", ["image", "axes"], ["image_mean"], keepdims=0),
            helper.make_node("ReduceMean", ["measurement", "axes"], ["measurement_mean"], keepdims=0),
            helper.make_node("Mul", ["measurement_mean", "zero"], ["nothing"]),
            helper.make_node("Add", ["image_mean", "nothing"], ["stats"]),
        ],
        "flag",
        [
            helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 1, "h", "w"]),
            helper.make_tensor_value_info("measurement", TensorProto.FLOAT, ["batch", 1, "mh", "mw"]),
        ],
        [helper.make_tensor_value_info("stats", TensorProto.FLOAT, ["batch", 1])],
        [
            numpy_helper.from_array(np.array([2, 3], np.int64), "axes"),
            numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
        ],  # fmt: skip
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.save(model, directory / "consistency.onnx")
    manifest = load_manifest(directory)
    manifest.add_file(directory, "consistency.onnx", "consistency", "fp32")
    entry = {
        "file": "consistency.onnx",
        "inputs": ["image", "measurement"],
        "output": "stats",
        "statistics": ["residual"],
        "bounds": {"residual": {"check": "upper", "high": flag_above}},
    }
    manifest.consistency = ConsistencyEntry.from_json(entry, manifest.files, "add_flagging_check")
    manifest.save(directory)
    return directory
