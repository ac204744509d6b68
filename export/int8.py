"""Static INT8 (QDQ) quantization for onnxruntime on the CPU, calibrated on simulated measurements.

Why these settings (NOTES.md): QDQ with QUInt8 activations and QInt8 per-channel weights (U8S8) is what ORT's
x86 kernels fuse into QLinearConv / MatMulInteger (S8S8 left convs unfused, slower). Only the compute ops are
quantized (Conv, ConvTranspose, MatMul, Gemm): residual adds and activations stay float, and the CT
backprojection (the FBP island, a Conv ramp filter plus gathers) is excluded by node name and checked after.

Accuracy (measured on the shipped ResUNet, deblur, 32 held-out images; PSNR loss vs FP32): MinMax calibration
on phantoms only 0.97 dB; on phantoms + natural crops 0.85 dB; + first and last conv in float 0.44 dB;
+ percentile (99.999) calibration 0.30 dB; with the first two and last two convs in float 0.24 dB. The
layers at the ends see the raw image and write the residual the output is made of: they keep FP32.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recon.export.errors import ExportError

if TYPE_CHECKING:
    import numpy as np
    import onnx

    from recon.runtime.artifact.task_config import TaskConfig

QUANTIZED_OP_TYPES = ("Conv", "ConvTranspose", "MatMul", "Gemm")
FLOAT_END_LAYERS = 2  # compute layers kept in float at each end of the network
CALIBRATION_PERCENTILE = 99.999


class _Batches:
    """onnxruntime's CalibrationDataReader protocol over a list of (B, 1, H, W) float32 arrays."""

    def __init__(self, input_name: str, batches: Iterable[np.ndarray]) -> None:
        self._feeds = iter([{input_name: batch} for batch in batches])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._feeds, None)

    def rewind(self) -> None:  # pragma: no cover - not used by the histogram calibrators
        raise NotImplementedError


def end_layers(model: onnx.ModelProto, island: Iterable[str], count: int = FLOAT_END_LAYERS) -> list[str]:
    """Names of the first and last `count` compute nodes of the network (outside the FP32 island)."""
    island = set(island)
    compute = [n.name for n in model.graph.node if n.op_type in QUANTIZED_OP_TYPES and n.name not in island]
    if len(compute) <= 2 * count:
        return compute[:1] + compute[-1:]  # tiny networks: keep only the two ends
    return compute[:count] + compute[-count:]


def quantize_int8(
    fp32_path: str | os.PathLike,
    out_path: str | os.PathLike,
    calibration: Sequence[np.ndarray],
    *,
    input_name: str,
    exclude_nodes: Iterable[str] = (),
    per_channel: bool = True,
) -> dict[str, Any]:
    """Write a QDQ INT8 model calibrated on `calibration` batches; return what was quantized."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    exclude = sorted(set(exclude_nodes))
    with tempfile.TemporaryDirectory(prefix="recon-int8-") as tmp:
        # Shape inference only: ORT's optimizer would fuse and rename nodes; the FBP exclusion is by name.
        prepared = Path(tmp) / "prepared.onnx"
        # Any-size graphs (symbolic H x W): ORT's symbolic shape inference cannot resolve the in-graph
        # pad-to-multiple (ceil of height/16); it fails and leaves sym_shape_infer_temp.onnx + external data
        # in the working directory. ONNX's own shape inference still runs (skip_onnx_shape stays False).
        graph_input = onnx.load(str(fp32_path), load_external_data=False).graph.input[0]
        any_size = any(dim.dim_param for dim in list(graph_input.type.tensor_type.shape.dim)[1:])
        quant_pre_process(str(fp32_path), str(prepared), skip_optimization=True, skip_symbolic_shape=any_size)
        prepared_model = onnx.load(str(prepared))
        names = {node.name for node in prepared_model.graph.node}
        missing = [name for name in exclude if name not in names]
        if missing:
            raise ExportError(
                f"INT8: pre-processing renamed FP32-island nodes {missing[:3]}; cannot exclude them"
            )
        float_ends = end_layers(prepared_model, exclude)
        # the percentile calibrator print()s its bin counts on stdout, which `recon-export --json` owns
        # (onnxruntime/quantization/calibrate.py, HistogramCollector): they go to stderr
        with contextlib.redirect_stdout(sys.stderr):
            quantize_static(
                str(prepared),
                str(out_path),
                _Batches(input_name, calibration),
                quant_format=QuantFormat.QDQ,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                per_channel=per_channel,
                op_types_to_quantize=list(QUANTIZED_OP_TYPES),
                nodes_to_exclude=exclude + float_ends,
                calibrate_method=CalibrationMethod.Percentile,
                extra_options={
                    "ActivationSymmetric": False,
                    "WeightSymmetric": True,
                    "CalibPercentile": CALIBRATION_PERCENTILE,
                },
            )
    model = onnx.load(str(out_path))
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as error:
        raise ExportError(f"the INT8 graph fails onnx.checker: {str(error).splitlines()[0]}") from None
    return {**check_int8(model, exclude), "float_end_layers": float_ends}


def calibration_inputs(task_cfg: TaskConfig, n: int, image_size: int, seed: int) -> np.ndarray:
    """Simulated measurements from the training distribution (phantoms + training-image crops; never the
    held-out images), (n, 1, ·, ·) float32."""
    from recon.training.data import TRAIN_IMAGES, clean_images, simulate_pairs

    clean = clean_images(0, seed, n, image_size, TRAIN_IMAGES)
    return simulate_pairs(clean, task_cfg, seed=seed).measurements.numpy()


def check_int8(model: onnx.ModelProto, island: Iterable[str]) -> dict[str, Any]:
    """Count quantized compute ops; raise if none is quantized or any island node reads dequantized data."""
    producer = {out: node for node in model.graph.node for out in node.output}
    island = set(island)

    def reads_dequantized(node: onnx.NodeProto) -> bool:
        return any(
            producer.get(name) is not None and producer[name].op_type == "DequantizeLinear"
            for name in node.input
        )

    quantized: dict[str, int] = {}
    float_ops: dict[str, int] = {}
    island_quantized = []
    for node in model.graph.node:
        if node.name in island:
            if reads_dequantized(node) or node.op_type in ("QuantizeLinear", "DequantizeLinear"):
                island_quantized.append(node.name)
            continue
        if node.op_type in QUANTIZED_OP_TYPES:
            table = quantized if reads_dequantized(node) else float_ops
            table[node.op_type] = table.get(node.op_type, 0) + 1
    if island_quantized:
        raise ExportError(f"INT8: FP32-island (FBP) nodes were quantized: {island_quantized[:5]}")
    if not quantized:
        raise ExportError("INT8: no conv/matmul was quantized; calibration or quantization failed")
    return {"quantized_ops": quantized, "float_compute_ops": float_ops, "island_nodes": len(island)}


def cpu_speedup(
    fp32_path: str | os.PathLike,
    int8_path: str | os.PathLike,
    batch: np.ndarray,
    *,
    input_name: str,
    threads: int = 1,
    iterations: int = 10,
    warmup: int = 2,
) -> dict[str, Any]:
    """Median latency of both files in onnxruntime CPU, same options and threads, runs interleaved."""
    import numpy as np

    from recon.runtime.backends.onnxruntime import new_session, session_options

    options = session_options(threads, inter_op_threads=1)
    sessions = {"fp32": new_session(fp32_path, options), "int8": new_session(int8_path, options)}
    times: dict[str, list[float]] = {key: [] for key in sessions}
    for i in range(warmup + iterations):
        for key, sess in sessions.items():  # interleaved: a noisy neighbour hits both alike
            start = time.perf_counter()
            sess.run(None, {input_name: batch})
            if i >= warmup:
                times[key].append(time.perf_counter() - start)
    fp32_ms = float(np.median(times["fp32"]) * 1e3)
    int8_ms = float(np.median(times["int8"]) * 1e3)
    return {
        "backend": "onnxruntime-cpu",
        "threads": threads,
        "batch": int(batch.shape[0]),
        "iterations": iterations,
        "fp32_ms": round(fp32_ms, 3),
        "int8_ms": round(int8_ms, 3),
        "speedup": round(fp32_ms / int8_ms, 3),
    }
