"""Which node breaks FP16: every float value of the FP32 and the FP16 graph compared on the same input.

When the FP16 file fails its parity gate, "PSNR 31 dB < 50 dB" does not tell the owner of a foreign network
what to change. Polygraphy's answer (`--onnx-outputs mark all`) is to make every intermediate value a graph
output and compare them; here each node gets the relative error of its outputs and of its inputs, and the
node where the error jumps (an overflow past 65504, a layer whose values FP16 cannot hold) is named, with the
option that keeps it FP32 (`--keep-fp32 NODE`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import onnx

FLOAT_TYPES = (1, 10)  # FLOAT, FLOAT16
JUMP = 10.0  # a node whose output error is this many times its inputs' (and above MIN_ERROR) is blamed
MIN_ERROR = 1e-2
FP16_MAX, FP16_TINY = 65504.0, 6e-8  # largest value, smallest subnormal


def _weight_range(model: onnx.ModelProto, node: onnx.NodeProto) -> tuple[float, float] | None:
    """(smallest non-zero, largest) magnitude of the node's float initializers; None without any."""
    from onnx import numpy_helper

    initializers = {t.name: t for t in model.graph.initializer}
    values = [np.abs(numpy_helper.to_array(initializers[i])) for i in node.input if i in initializers]
    values = [v[v > 0] for v in values if v.dtype.kind == "f" and np.any(v > 0)]
    if not values:
        return None
    return float(min(v.min() for v in values)), float(max(v.max() for v in values))


def _all_float_values(model: onnx.ModelProto) -> dict[str, Any]:
    """value name → its ValueInfoProto, for every float value a node produces (after shape inference)."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    infos = {v.name: v for v in [*inferred.graph.value_info, *inferred.graph.output]}
    return {
        name: infos[name]
        for node in model.graph.node
        for name in node.output
        if name in infos and infos[name].type.tensor_type.elem_type in FLOAT_TYPES
    }


def _run_marked(model: onnx.ModelProto, names: list[str], batch: np.ndarray, threads: int | None) -> dict:
    import onnx

    from recon.runtime.backends.onnxruntime import new_session, session_options

    marked = onnx.ModelProto()
    marked.CopyFrom(model)
    infos = _all_float_values(model)
    present = {o.name for o in marked.graph.output}
    marked.graph.output.extend(infos[n] for n in names if n not in present and n in infos)
    options = session_options(threads or 1)
    options.log_severity_level = 3
    session = new_session(marked.SerializeToString(), options)
    wanted = [o.name for o in session.get_outputs()]
    values = session.run(wanted, {session.get_inputs()[0].name: batch})
    return {name: np.asarray(value, dtype=np.float64) for name, value in zip(wanted, values, strict=True)}


def _relative(reference: np.ndarray, candidate: np.ndarray) -> float:
    if reference.shape != candidate.shape:
        return float("nan")
    if not np.all(np.isfinite(candidate)):
        return float("inf")
    scale = float(np.max(np.abs(reference))) or 1.0
    return float(np.max(np.abs(reference - candidate))) / scale


def blame_fp16(
    fp32_model: onnx.ModelProto,
    fp16_model: onnx.ModelProto,
    batch: np.ndarray,
    *,
    threads: int | None = None,
    top: int = 3,
) -> list[dict[str, Any]]:
    """Where FP16's error appears, worst first: [{node, op_type, scope, error, input_error, why}]."""
    from recon.export.precision import node_scopes

    names = [n for n in _all_float_values(fp32_model)]
    fp32 = _run_marked(fp32_model, names, batch, threads)
    fp16 = _run_marked(fp16_model, names, batch, threads)
    errors = {n: _relative(fp32[n], fp16[n]) for n in names if n in fp32 and n in fp16}
    blamed = []
    for node in fp32_model.graph.node:
        outputs = [errors[o] for o in node.output if o in errors]
        if not outputs:
            continue
        error = max(outputs)
        inputs = [errors[i] for i in node.input if i in errors]
        before = max(inputs) if inputs else 0.0
        overflow = np.isinf(error) and not np.isinf(before)
        weights = _weight_range(fp32_model, node)
        unholdable = weights is not None and (weights[0] < FP16_TINY or weights[1] > FP16_MAX)
        if overflow or unholdable or (error > MIN_ERROR and error > JUMP * before):
            scopes = node_scopes(node)
            peak = max(float(np.max(np.abs(fp32[o]))) for o in node.output if o in fp32)
            if overflow or peak > FP16_MAX:
                why = f"values up to {peak:.3g} overflow FP16 (max 65504)"
            elif unholdable:
                why = (
                    f"its weights ({weights[0]:.3g} to {weights[1]:.3g} in magnitude) lie outside what FP16 "
                    "holds (6e-8 to 65504): relative error {error:.3g}"
                ).replace("{error:.3g}", f"{error:.3g}")
            else:
                why = f"relative error {error:.3g} from inputs at {before:.3g}"
            blamed.append({
                "node": node.name, "op_type": node.op_type, "scope": scopes[-1] if scopes else None,
                "error": error, "input_error": before, "why": why,
            })  # fmt: skip
    blamed.sort(key=lambda b: (-(b["error"] if np.isfinite(b["error"]) else 1e300), b["node"]))
    return blamed[:top]


def advice(blamed: list[dict[str, Any]]) -> str:
    """One sentence for the parity error: where FP16 breaks and what to do."""
    if not blamed:
        return "no single node stands out (the error grows evenly): lower --fp16-min-psnr or drop --fp16"
    first = blamed[0]
    where = f"node {first['node']!r} ({first['op_type']}" + (
        f", from {first['scope']}" if first["scope"] else ""
    )
    keep = " ".join(f"--keep-fp32 {b['node']}" for b in blamed)
    return f"FP16 breaks at {where}): {first['why']}; keep it in FP32 with {keep}"
