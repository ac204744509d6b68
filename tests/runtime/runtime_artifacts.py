"""Small real artifacts built with onnx.helper (not with recon.export), and numpy references for them."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from recon.runtime.artifact.manifest import BatchProfile, IOSpec, Manifest
from recon.runtime.artifact.spatial import Spatial
from recon.runtime.artifact.task_config import CTTask, DeblurTask

H = W = 16  # deblur image size
ANGLES, DETECTORS, N = 6, 10, 8  # CT: sinogram (6, 10) -> image (8, 8)
MAX_BATCH = 8

rng = np.random.default_rng(0)
CONV_W = rng.normal(0, 0.3, (1, 1, 3, 3)).astype(np.float32)
CONV_B = np.array([0.05], np.float32)
CT_MATRIX = rng.normal(0, 0.2, (ANGLES * DETECTORS, N * N)).astype(np.float32)


def conv_reference(x: np.ndarray, bias: float = float(CONV_B[0])) -> np.ndarray:
    """3x3 'same' cross-correlation + bias + ReLU, (B, 1, H, W) -> (B, 1, H, W), float64 numpy."""
    x = np.asarray(x, np.float64)
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    out = np.zeros_like(x)
    for i in range(3):
        for j in range(3):
            out += CONV_W[0, 0, i, j] * padded[:, :, i : i + x.shape[2], j : j + x.shape[3]]
    return np.maximum(out + bias, 0.0)


def ct_reference(y: np.ndarray) -> np.ndarray:
    y = np.asarray(y, np.float64)
    return (y.reshape(y.shape[0], -1) @ CT_MATRIX).reshape(y.shape[0], 1, N, N)


def _conv_model(fp16: bool = False, any_size: bool = False):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    dtype = np.float16 if fp16 else np.float32
    nodes = []
    x = "measurement"
    if fp16:  # FP32 I/O around an FP16 body, like recon-export's FP16 graphs
        nodes.append(helper.make_node("Cast", [x], ["x16"], to=TensorProto.FLOAT16))
        x = "x16"
    nodes += [
        helper.make_node("Conv", [x, "w", "b"], ["conv"], pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
        helper.make_node("Relu", ["conv"], ["relu" if fp16 else "image"]),
    ]
    if fp16:
        nodes.append(helper.make_node("Cast", ["relu"], ["image"], to=TensorProto.FLOAT))
    shape = ["batch", 1, "height", "width"] if any_size else ["batch", 1, H, W]
    graph = helper.make_graph(
        nodes,
        "conv",
        [helper.make_tensor_value_info("measurement", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, shape)],
        [
            numpy_helper.from_array(CONV_W.astype(dtype), "w"),
            numpy_helper.from_array(CONV_B.astype(dtype), "b"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.checker.check_model(model, full_check=True)
    return model


def _ct_model():
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [
            helper.make_node("Flatten", ["measurement"], ["flat"], axis=1),
            helper.make_node("MatMul", ["flat", "matrix"], ["product"]),
            helper.make_node("Reshape", ["product", "shape"], ["image"]),
        ],
        "ct",
        [helper.make_tensor_value_info("measurement", TensorProto.FLOAT, ["batch", 1, ANGLES, DETECTORS])],
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 1, N, N])],
        [
            numpy_helper.from_array(CT_MATRIX, "matrix"),
            numpy_helper.from_array(np.array([-1, 1, N, N], np.int64), "shape"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.checker.check_model(model, full_check=True)
    return model


def build_artifact(
    directory: Path,
    task: str = "deblur",
    *,
    max_batch: int = MAX_BATCH,
    min_batch: int = 1,
    with_fp16: bool = False,
    with_int8: bool = False,
    plan: dict | None = None,
    clip: bool = True,
    value_range: list[float] | None = None,
    any_size: bool = False,
) -> Path:
    """Write an artifact directory; `plan` adds a fake model.plan with that TensorRT info; `any_size` (deblur)
    gives the graph symbolic H × W and the manifest a "spatial" entry, like recon-export's image models."""
    import onnx

    directory.mkdir(parents=True, exist_ok=True)
    if task == "deblur":
        onnx.save(_conv_model(any_size=any_size), directory / "model.onnx")
        shape = ["batch", 1, "height", "width"] if any_size else ["batch", 1, H, W]
        in_shape, out_shape, layout = shape, shape, "NCHW"
    else:
        onnx.save(_ct_model(), directory / "model.onnx")
        in_shape, out_shape, layout = ["batch", 1, ANGLES, DETECTORS], ["batch", 1, N, N], "N1AD"
    manifest = Manifest(
        name=f"test-{task}",
        task=task,
        model={"name": "conv" if task == "deblur" else "matmul", "config": {}, "weights_sha256": None},
        input=IOSpec(
            name="measurement",
            shape=tuple(in_shape),
            layout=layout,
            value_range=(0.0, 1.0) if task == "deblur" else None,
        ),
        output=IOSpec(
            name="image", shape=tuple(out_shape), value_range=tuple(value_range or (0.0, 1.0)), clip=clip
        ),
        task_config=(
            DeblurTask(image_size=H)
            if task == "deblur"
            else CTTask(image_size=N, n_views=ANGLES, n_detectors=DETECTORS)
        ),
        batch=BatchProfile(min=min_batch, opt=min(4, max_batch), max=max_batch),
        spatial=(
            Spatial(
                whole_image=True,
                min=8,
                opt=H,
                max=1024,
                multiple_of=1,
                tile=1024,
                overlap=16,
                blend="gaussian",
                receptive_field=3,
            )  # fmt: skip
            if any_size and task == "deblur"
            else None
        ),
    )
    manifest.add_file(directory, "model.onnx", "onnx", "fp32")
    if with_fp16 and task == "deblur":
        onnx.save(_conv_model(fp16=True, any_size=any_size), directory / "model.fp16.onnx")
        manifest.add_file(directory, "model.fp16.onnx", "onnx", "fp16")
    if with_int8:  # the FP32 graph stands in for a quantized one: these tests check file selection
        (directory / "model.int8.onnx").write_bytes((directory / "model.onnx").read_bytes())
        manifest.add_file(directory, "model.int8.onnx", "onnx", "int8")
    if plan is not None:
        (directory / "model.plan").write_bytes(b"not a real engine")
        manifest.add_file(directory, "model.plan", "tensorrt", "fp16", tensorrt=plan)
    manifest.save(directory)
    return directory
