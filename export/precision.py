"""FP16 ONNX with FP32 islands, and the checks that prove the file is what we claim.

Why a pass of our own rather than `onnxconverter_common.float16.convert_float_to_float16`: that converter
casts every blocked node's output back to FP16 and the next blocked node's input back to FP32, so a chain of
FP32 nodes (the whole FBP, the CT sampling coordinates) is rounded to FP16 between every two of its ops:
~0.8 % error in the FBP from the coordinates alone. Here each value gets one precision, decided by its
producer, and a Cast appears only where an FP16 node meets an FP32 node (shared, one per value and direction).

What stays FP32:
- the islands: every node exported from a given torch submodule (the FBP / physics operator, by the dynamo
  exporter's `pkg.torch.onnx.name_scopes` metadata) and every unscoped node upstream of it (the coordinates
  the FBP computes from the angles);
- numerically touchy ops anywhere: normalization statistics, Softmax, long reductions, Pow/Exp/Log/Sqrt,
  Range, GridSample (`FP32_OP_TYPES`);
- graph inputs and outputs (FP32 I/O; the runtime feeds float32);
- any node this pass does not understand (other domains, subgraphs, dtype attributes): FP32 is always safe.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from recon.export.errors import ExportError

if TYPE_CHECKING:
    import onnx

NAME_SCOPES_KEY = "pkg.torch.onnx.name_scopes"

FP32_OP_TYPES = frozenset(
    {
        # normalization statistics
        "BatchNormalization", "GroupNormalization", "InstanceNormalization", "LayerNormalization",
        "LpNormalization", "MeanVarianceNormalization", "RMSNormalization", "SkipLayerNormalization",
        # softmax family
        "Softmax", "LogSoftmax", "Hardmax",
        # long reductions and accumulations
        "ReduceMean", "ReduceSum", "ReduceSumSquare", "ReduceL1", "ReduceL2", "ReduceLogSum",
        "ReduceLogSumExp", "ReduceProd", "CumSum",
        # range hazards (x² of 300 overflows FP16) and the math of decomposed norms
        "Pow", "Exp", "Log", "Sqrt", "Reciprocal",
        # coordinates and sampling
        "Range", "GridSample", "AffineGrid",
        # ops whose output dtype is an attribute
        "RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "EyeLike", "Multinomial",
        "Bernoulli",
    }
)  # fmt: skip
# Ops whose FP16 support we check through the ONNX schema but whose output dtype lives in an attribute.
_DTYPE_ATTRIBUTE_OPS = {"Cast", "Constant", "ConstantOfShape"}
COMPUTE_OP_TYPES = ("Conv", "ConvTranspose", "MatMul", "Gemm")
FLOAT, FLOAT16 = 1, 10
FP16_MAX = 65504.0


# -- islands ----------------------------------------------------------------------------------------------
def node_scopes(node: onnx.NodeProto) -> list[str]:
    """Module paths a node was exported from, e.g. ['fbp', 'fbp.ct'] (empty when unknown or top level)."""
    for prop in node.metadata_props:
        if prop.key == NAME_SCOPES_KEY:
            try:
                scopes = ast.literal_eval(prop.value)
            except (ValueError, SyntaxError):
                return []
            # ['', 'module', 'module.child', 'op_name']: the first is the root, the last the op itself
            return [str(s) for s in scopes[1:-1]] if isinstance(scopes, (list, tuple)) else []
    return []


def island_node_names(model: onnx.ModelProto, scopes: Iterable[str]) -> set[str]:
    """Names of the nodes exported from the module paths `scopes` or their submodules, plus unscoped nodes
    upstream of them.

    A submodule counts although its parent's scope is not on the node: the exporter records only the
    modules that were called, and a pipeline calls `physics.network_input(y)` (a method), then
    `physics.fbp(y)`, so the FBP's nodes carry 'physics.fbp' and not 'physics'.
    """
    scopes = set(scopes)
    if not scopes:
        return set()
    nodes = list(model.graph.node)
    producer = {out: node for node in nodes for out in node.output}

    def inside(node: onnx.NodeProto) -> bool:
        return any(path == s or path.startswith(s + ".") for path in node_scopes(node) for s in scopes)

    island = {node.name for node in nodes if inside(node)}
    # Walk upstream: coordinates / constants feeding the island that the exporter did not attribute to any
    # other module belong to it (e.g. geometry math hoisted out of the submodule).
    stack = [node for node in nodes if node.name in island]
    while stack:
        node = stack.pop()
        for name in node.input:
            parent = producer.get(name)
            if parent is None or parent.name in island:
                continue
            if node_scopes(parent) and not inside(parent):
                continue
            island.add(parent.name)
            stack.append(parent)
    return island


# -- FP16 conversion --------------------------------------------------------------------------------------
def _infer(model: onnx.ModelProto) -> onnx.ModelProto:
    """Strict shape/type inference: every value's dtype must be known to assign it a precision."""
    import onnx

    try:
        return onnx.shape_inference.infer_shapes(model, strict_mode=True, data_prop=True)
    except (onnx.shape_inference.InferenceError, onnx.checker.ValidationError) as error:
        raise ExportError(f"FP16: ONNX type inference failed: {str(error).splitlines()[0]}") from None


def _dtypes(model: onnx.ModelProto) -> dict[str, int]:
    graph = model.graph
    dtypes = {}
    for value in [*graph.input, *graph.value_info, *graph.output]:
        if value.type.HasField("tensor_type"):
            dtypes[value.name] = value.type.tensor_type.elem_type
    for init in graph.initializer:
        dtypes[init.name] = init.data_type
    return dtypes


def _formal_type(params: Any, index: int) -> str | None:
    if not params:
        return None
    param = params[min(index, len(params) - 1)]
    if index >= len(params) and param.option.name != "Variadic":
        return None
    return param.type_str


@dataclass
class _NodePlan:
    fp16_inputs: set[int] = field(default_factory=set)
    fp16_outputs: set[int] = field(default_factory=set)


def _plan_node(node: onnx.NodeProto, opset: int, dtypes: dict[str, int]) -> _NodePlan | None:
    """Which float positions of `node` become FP16, or None when the node must stay FP32."""
    import onnx

    if node.domain not in ("", "ai.onnx") or node.op_type in FP32_OP_TYPES:
        return None
    if any(attr.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for attr in node.attribute):
        return None
    try:
        schema = onnx.defs.get_schema(node.op_type, opset, "")
    except onnx.defs.SchemaError:
        return None
    allowed = {c.type_param_str: set(c.allowed_type_strs) for c in schema.type_constraints}

    def convertible(type_str: str | None) -> bool:
        return type_str is not None and "tensor(float16)" in allowed.get(type_str, ())

    plan = _NodePlan()
    input_vars, output_vars = set(), set()
    for i, name in enumerate(node.input):
        if not name:
            continue
        if name not in dtypes:
            return None  # unknown type: leave the node alone
        type_str = _formal_type(schema.inputs, i)
        if dtypes[name] == FLOAT and convertible(type_str):
            plan.fp16_inputs.add(i)
            input_vars.add(type_str)
    for i, name in enumerate(node.output):
        if not name:
            continue
        if name not in dtypes:
            return None
        type_str = _formal_type(schema.outputs, i)
        if dtypes[name] == FLOAT and convertible(type_str):
            if type_str not in input_vars and node.op_type not in _DTYPE_ATTRIBUTE_OPS:
                return None  # its output dtype is decided by something we would not change
            plan.fp16_outputs.add(i)
            output_vars.add(type_str)
    if not plan.fp16_inputs and not plan.fp16_outputs:
        return None
    if node.op_type == "Cast" and not plan.fp16_outputs:
        return None  # a Cast to a non-float type reads whatever it is given
    return plan


def _to_fp16_tensor(tensor: onnx.TensorProto, name: str | None = None) -> tuple[onnx.TensorProto, int]:
    import numpy as np
    from onnx import numpy_helper

    array = numpy_helper.to_array(tensor)
    clipped = int(np.count_nonzero(np.abs(array) > FP16_MAX))
    converted = numpy_helper.from_array(
        np.clip(array, -FP16_MAX, FP16_MAX).astype(np.float16), name or tensor.name
    )
    return converted, clipped


def _convert_node_attributes(node: onnx.NodeProto) -> int:
    """Retarget a Cast / Constant / ConstantOfShape whose float output becomes FP16; returns clipped count."""
    import onnx

    clipped = 0
    for attr in node.attribute:
        if node.op_type == "Cast" and attr.name == "to":
            attr.i = FLOAT16
        elif attr.name == "value" and attr.type == onnx.AttributeProto.TENSOR and attr.t.data_type == FLOAT:
            tensor, clipped = _to_fp16_tensor(attr.t, attr.t.name)
            attr.t.CopyFrom(tensor)
        elif node.op_type == "Constant" and attr.name in ("value_float", "value_floats"):
            import numpy as np

            values = np.asarray(attr.f if attr.name == "value_float" else list(attr.floats), dtype=np.float32)
            tensor, clipped = _to_fp16_tensor(onnx.numpy_helper.from_array(values))
            node.attribute.remove(attr)
            node.attribute.append(onnx.helper.make_attribute("value", tensor))
            break
    return clipped


@dataclass
class Fp16Report:
    fp16_nodes: int
    fp32_nodes: int
    island_nodes: int
    casts_inserted: int
    initializers_clipped: int

    def to_json(self) -> dict[str, int]:
        return dict(self.__dict__)


class _Names:
    """Fresh value/node names that collide with nothing in the graph."""

    def __init__(self, used: set[str]) -> None:
        self.used = used

    def fresh(self, base: str) -> str:
        name, k = base, 0
        while name in self.used:
            k += 1
            name = f"{base}_{k}"
        self.used.add(name)
        return name


def _plan_fp16(
    model: onnx.ModelProto,
    islands: set[str],
    keep_fp32: Callable[[onnx.NodeProto], bool] | None,
    dtypes: dict[str, int],
) -> dict[int, _NodePlan]:
    """Which nodes compute in FP16 (by index), and which of their inputs/outputs are FP16."""
    graph = model.graph
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 18)
    # Nodes computing only from constants (e.g. a ViT's position table resized) stay FP32: runtimes fold them
    # once at load, in FP32 (ORT has no FP16 CPU kernel to fold a Resize with), and one Cast follows.
    constant = {init.name for init in graph.initializer}
    plans: dict[int, _NodePlan] = {}
    deferred = []
    for index, node in enumerate(graph.node):
        if node.op_type != "Constant" and all(not name or name in constant for name in node.input):
            constant.update(node.output)
            continue
        if node.name in islands or (keep_fp32 is not None and keep_fp32(node)):
            continue
        plan = _plan_node(node, opset, dtypes)
        if plan is None:
            continue
        if node.op_type in _DTYPE_ATTRIBUTE_OPS:
            deferred.append((index, plan))
        else:
            plans[index] = plan
    # A Cast / Constant makes FP16 only when every reader wants FP16 there: an FP32 reader (LayerNorm, the
    # FBP) must not get a value rounded to FP16 and cast back.
    fp16_reads: dict[str, int] = {}
    all_reads: dict[str, int] = {}
    for index, node in enumerate(graph.node):
        for i, name in enumerate(node.input):
            all_reads[name] = all_reads.get(name, 0) + 1
            if index in plans and i in plans[index].fp16_inputs:
                fp16_reads[name] = fp16_reads.get(name, 0) + 1
    graph_output_names = {o.name for o in graph.output}
    for index, plan in deferred:
        outputs = [graph.node[index].output[i] for i in plan.fp16_outputs]
        if all(
            fp16_reads.get(o, 0) == all_reads.get(o, 0) > 0 and o not in graph_output_names for o in outputs
        ):
            plans[index] = plan
    return plans


def _fp32_graph_outputs(
    graph: onnx.GraphProto, new_dtype: dict[str, int], dtypes: dict[str, int], names: _Names
) -> list[onnx.NodeProto]:
    """Graph outputs stay FP32: the FP16 producer writes a renamed value, a final Cast restores the name.
    Returns those Casts (to append after every other node)."""
    from onnx import helper

    tail_casts = []
    renamed: dict[str, str] = {}
    for name in {o.name for o in graph.output}:
        if new_dtype.get(name) == FLOAT16:
            renamed[name] = names.fresh(f"{name}__fp16")
            new_dtype[renamed[name]] = FLOAT16
            dtypes[renamed[name]] = dtypes[name]
            tail_casts.append(
                helper.make_node(
                    "Cast", [renamed[name]], [name], name=names.fresh(f"{name}__to_fp32"), to=FLOAT
                )
            )
    for node in graph.node:
        for i, name in enumerate(node.output):
            if name in renamed:
                node.output[i] = renamed[name]
        for i, name in enumerate(node.input):
            if name in renamed:
                node.input[i] = renamed[name]
    return tail_casts


def _insert_casts(
    graph: onnx.GraphProto,
    plans: dict[int, _NodePlan],
    dtypes: dict[str, int],
    new_dtype: dict[str, int],
    names: _Names,
) -> tuple[list[onnx.NodeProto], int, int]:
    """Every node in order, with a Cast (shared, one per value and direction) where an FP16 node meets an FP32
    value or the reverse; FP16 copies of the initializers FP16 nodes read. Returns (nodes, casts, clipped)."""
    from onnx import helper

    initializers = {init.name: init for init in graph.initializer}
    fp16_initializers: dict[str, str] = {}
    casts: dict[tuple[str, int], str] = {}
    clipped = 0
    new_nodes = []
    for index, node in enumerate(graph.node):
        plan = plans.get(index)
        for i, name in enumerate(node.input):
            if not name or name not in dtypes:
                continue
            if plan is not None and i in plan.fp16_inputs:
                want = FLOAT16
            elif new_dtype.get(name) == FLOAT16 and dtypes[name] == FLOAT:
                want = FLOAT  # an FP32 node reading an FP16 value
            else:
                continue
            if new_dtype.get(name) == want:
                continue
            if name in initializers and want == FLOAT16:
                if name not in fp16_initializers:
                    tensor, count = _to_fp16_tensor(initializers[name], names.fresh(f"{name}__fp16"))
                    clipped += count
                    graph.initializer.append(tensor)
                    fp16_initializers[name] = tensor.name
                node.input[i] = fp16_initializers[name]
                continue
            key = (name, want)
            if key not in casts:
                suffix = "fp16" if want == FLOAT16 else "fp32"
                casts[key] = names.fresh(f"{name}__to_{suffix}")
                new_nodes.append(helper.make_node("Cast", [name], [casts[key]], name=casts[key], to=want))
            node.input[i] = casts[key]
        new_nodes.append(node)
    # FP32 initializers that only FP16 nodes read are now dead: drop them.
    read = {name for node in new_nodes for name in node.input}
    for name in fp16_initializers:
        if name not in read:
            graph.initializer.remove(initializers[name])
    return new_nodes, len(casts), clipped


def convert_to_fp16(
    model: onnx.ModelProto,
    *,
    keep_fp32: Callable[[onnx.NodeProto], bool] | None = None,
    island_scopes: Iterable[str] = (),
) -> tuple[onnx.ModelProto, Fp16Report]:
    """Return an FP16 copy of an FP32 model with FP32 islands and FP32 inputs/outputs."""
    import onnx

    model = _infer(model)
    graph = model.graph
    dtypes = _dtypes(model)
    islands = island_node_names(model, island_scopes)
    plans = _plan_fp16(model, islands, keep_fp32, dtypes)

    # Each value's precision after conversion: decided by its producer.
    new_dtype = dict(dtypes)
    clipped = 0
    for index, plan in plans.items():
        node = graph.node[index]
        for i in plan.fp16_outputs:
            new_dtype[node.output[i]] = FLOAT16
        if node.op_type in _DTYPE_ATTRIBUTE_OPS:
            clipped += _convert_node_attributes(node)

    names = _Names({n.name for n in graph.node} | set(dtypes))
    tail_casts = _fp32_graph_outputs(graph, new_dtype, dtypes, names)
    new_nodes, n_casts, clipped_initializers = _insert_casts(graph, plans, dtypes, new_dtype, names)
    new_nodes.extend(tail_casts)

    del graph.node[:]
    graph.node.extend(new_nodes)
    del graph.value_info[:]
    model = _infer(model)
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as error:
        raise ExportError(f"the FP16 graph fails onnx.checker: {str(error).splitlines()[0]}") from None
    report = Fp16Report(
        fp16_nodes=len(plans),
        fp32_nodes=len(graph.node) - len(plans) - n_casts - len(tail_casts),
        island_nodes=len(islands),
        casts_inserted=n_casts + len(tail_casts),
        initializers_clipped=clipped + clipped_initializers,
    )
    return model, report


# -- inspection --------------------------------------------------------------------------------------------
_TYPE_NAMES = {FLOAT: "fp32", FLOAT16: "fp16", 11: "fp64", 16: "bf16", 2: "uint8", 3: "int8", 7: "int64"}


def inspect_precisions(model: onnx.ModelProto, island: Iterable[str] = ()) -> dict[str, Any]:
    """Per-op-type precision counts after shape inference: what the file really computes in."""
    import onnx

    model = onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    dtypes = _dtypes(model)
    island = set(island)
    compute: dict[str, int] = {}
    island_fp16: list[str] = []
    for node in model.graph.node:
        floats = [
            dtypes.get(n) for n in [*node.input, *node.output] if n and dtypes.get(n) in (FLOAT, FLOAT16)
        ]
        if node.name in island:
            if FLOAT16 in floats:
                island_fp16.append(node.name)
            continue
        if node.op_type in COMPUTE_OP_TYPES:
            # the data input and the weight decide the precision of the kernel
            kinds = tuple(_TYPE_NAMES.get(dtypes.get(n, 0), "?") for n in node.input[:2])
            key = (
                f"{node.op_type}:{kinds[0]}" if len(set(kinds)) == 1 else f"{node.op_type}:{'/'.join(kinds)}"
            )
            compute[key] = compute.get(key, 0) + 1
    io = {
        v.name: _TYPE_NAMES.get(v.type.tensor_type.elem_type, "?")
        for v in [*model.graph.input, *model.graph.output]
    }
    casts = sum(1 for node in model.graph.node if node.op_type == "Cast")
    return {"compute_ops": dict(sorted(compute.items())), "island_nodes": len(island),
            "island_nodes_in_fp16": island_fp16, "io": io, "casts": casts}  # fmt: skip


def check_fp16(model: onnx.ModelProto, island: Iterable[str] = ()) -> dict[str, Any]:
    """Raise unless every network conv/matmul is FP16, every island node FP32, and the I/O FP32."""
    info = inspect_precisions(model, island)
    not_fp16 = {k: v for k, v in info["compute_ops"].items() if not k.endswith(":fp16")}
    if not any(k.endswith(":fp16") for k in info["compute_ops"]):
        raise ExportError(
            f"the FP16 file holds no FP16 conv/matmul ({info['compute_ops']}); FP16 conversion failed"
        )
    if not_fp16:
        raise ExportError(f"the FP16 file still computes these outside the FP32 islands in FP32: {not_fp16}")
    if info["island_nodes_in_fp16"]:
        raise ExportError(
            f"FP32-island nodes (FBP / physics) touch FP16 values: {info['island_nodes_in_fp16'][:5]}"
        )
    if any(kind != "fp32" for kind in info["io"].values()):
        raise ExportError(f"the FP16 file must keep FP32 inputs/outputs, it has {info['io']}")
    return info
