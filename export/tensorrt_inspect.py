"""Judging a TensorRT engine's layers from the engine inspector's JSON, as plain data (no TensorRT needed).

Each layer's precision is judged from its tactic name, else its output format (a fused input Cast reads
FP32), and its ONNX nodes from the inspector's `Metadata` ("[ONNX Layer: name]") and its name, Myelin
sub-layers (`<node>_myl0_<k>`) included, `ForeignNode[a...b]` ranges as the nodes on a path from a to b.
Used by export/tensorrt_build.py after a build; tested on inspector JSON in tests/export/data.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from recon.export.errors import ExportError

REDUCED = ("fp16", "bf16", "tf32", "int8", "fp8")


def format_precision(text: str) -> str:
    """The data type in an inspector "Format/Datatype" ("Row major linear FP32 format", "Half", ...)."""
    t = str(text).lower()
    # order matters: "bfloat16" contains "float", "fp16" must not read as "fp1"
    for precision, pattern in (
        ("bf16", r"bfloat16|\bbf16\b"),
        ("fp16", r"\bfp16\b|\bhalf\b|float16"),
        ("fp8", r"\bfp8\b|e4m3|e5m2"),
        ("int8", r"\bint8\b"),
        ("int64", r"\bint64\b"),
        ("int32", r"\bint32\b"),
        ("bool", r"\bbool\b"),
        ("fp32", r"\bfp32\b|\bfloat\b|float32"),
    ):
        if re.search(pattern, t):
            return precision
    return "unknown"


def tactic_precision(tactic: str) -> str | None:
    """The math precision a kernel name states (xmma/cutlass: `..._f16f16_f16f32_f32`), or None."""
    t = str(tactic).lower()
    if t.startswith("__myl_") or not t:  # Myelin's generated kernels name the fusion, not the type
        return None
    if "tf32" in t:
        return "tf32"
    if "bf16" in t:
        return "bf16"
    if re.search(r"f16f16|fp16|h884|h1688|h16816|hmma|_f16_|half", t):
        return "fp16"
    if re.search(r"i8i8|int8|imma", t):
        return "int8"
    if re.search(r"f32f32|fp32|sgemm|scudnn|_f32_", t):
        return "fp32"
    return None


def layer_precision(layer: dict[str, Any]) -> str:
    """Tactic first, else the first output's format, else the first input's."""
    by_tactic = tactic_precision(str(layer.get("TacticName", "")))
    if by_tactic is not None:
        return by_tactic
    for side in ("Outputs", "Inputs"):
        tensors = layer.get(side) or []
        if tensors and isinstance(tensors[0], dict):
            precision = format_precision(str(tensors[0].get("Format/Datatype", "")))
            if precision != "unknown":
                return precision
    return "unknown"


_MYELIN_SUFFIX = re.compile(r"_myl\d+_\d+$")


def onnx_node_edges(model: Any) -> dict[str, list[str]]:
    """node name → names of the nodes that consume its outputs, for an `onnx.ModelProto`'s main graph."""
    consumers: dict[str, list[str]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node.name)
    return {node.name: [c for o in node.output for c in consumers.get(o, [])] for node in model.graph.node}


def nodes_between(first: str, last: str, edges: Mapping[str, Sequence[str]]) -> set[str]:
    """The nodes on some path from `first` to `last` (both included): what a Myelin
    `ForeignNode[first...last]` can hold. A slice of the topological order would also take the nodes of
    parallel branches that happen to sort in between (convolutions outside the layer)."""

    def reach(start: str, step: Mapping[str, Sequence[str]]) -> set[str]:
        seen, todo = {start}, [start]
        while todo:
            for nxt in step.get(todo.pop(), ()):
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen

    backward: dict[str, list[str]] = {}
    for node, consumers in edges.items():
        for consumer in consumers:
            backward.setdefault(consumer, []).append(node)
    between = reach(first, edges) & reach(last, backward)
    return between if between else {first, last}


def layer_nodes(layer: dict[str, Any], node_edges: Mapping[str, Sequence[str]] | None = None) -> set[str]:
    """The ONNX node names a layer holds: its Metadata ("[ONNX Layer: a][ONNX Layer: b]"), its name's parts
    ("a + b", "PWN(a, b)"), Myelin sub-layers `<node>_myl0_<k>`, and `ForeignNode[a...b]` ranges expanded to
    the nodes on a path from a to b in the graph's `node_edges` (`onnx_node_edges`) when given."""
    names: set[str] = set()
    metadata = str(layer.get("Metadata", "") or "")
    for item in re.findall(r"\[([^\[\]]+)\]", metadata):
        names.add(item.split("ONNX Layer:", 1)[-1].strip())
    name = str(layer.get("Name", ""))
    for first, last in re.findall(r"ForeignNode\[(.+?)\.\.\.(.+?)\]", name):
        if node_edges and first in node_edges and last in node_edges:
            names.update(nodes_between(first, last, node_edges))
        names.update((first, last))
    for token in re.split(r"\s\+\s|[\s,(){}\[\]]+|\.\.\.", name):
        # Myelin's own kernels (`__myl_MulSum_myl0_0`, `__mye12_dconst`) name a fusion, not a node
        if token and not token.startswith("__my") and token not in ("ForeignNode", "PWN"):
            names.add(_MYELIN_SUFFIX.sub("", token))
    return {n for n in names if n}


def _is_conv(layer: dict[str, Any]) -> bool:
    kind = f"{layer.get('LayerType', '')} {layer.get('ParameterType', '')}".lower()
    return "conv" in kind or "deconv" in kind


def summarize_layers(
    layers: list[dict[str, Any]],
    fp32_island_nodes: set[str] | frozenset[str] = frozenset(),
    conv_nodes: set[str] | frozenset[str] = frozenset(),
    node_edges: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, Any]:
    """Count network convolution layers by precision and find FP32-island layers that ran reduced.

    A layer is a network convolution when it holds an ONNX Conv node of the network (or its type says
    convolution and it holds no island node); it is an island layer when it holds island nodes only.
    """
    summary: dict[str, Any] = {
        "layers": len(layers), "conv_fp16": 0, "conv_fp32": 0, "conv_other": 0, "island_layers": 0,
        "conv_fp32_names": [], "island_reduced_names": [], "precisions": {},
    }  # fmt: skip
    for layer in layers:
        precision = layer_precision(layer)
        summary["precisions"][precision] = summary["precisions"].get(precision, 0) + 1
        name = str(layer.get("Name", ""))[:120]
        if name.startswith("Reformatting CopyNode"):  # named after its consumer; it computes nothing
            continue
        nodes = layer_nodes(layer, node_edges)
        island = bool(nodes) and nodes <= set(fp32_island_nodes)
        if nodes & set(conv_nodes) or (_is_conv(layer) and not nodes & set(fp32_island_nodes)):
            if precision == "fp16":
                summary["conv_fp16"] += 1
            elif precision in ("fp32", "tf32"):
                summary["conv_fp32"] += 1
                summary["conv_fp32_names"].append(name)
            else:
                summary["conv_other"] += 1
        elif island:
            summary["island_layers"] += 1
            if precision in REDUCED:
                summary["island_reduced_names"].append(f"{name} ({precision})")
    return summary


def precision_problems(summary: dict[str, Any], expect_fp16: bool = True) -> list[str]:
    """Sentences for an FP32 island that ran reduced, or (--fp16) a network conv in FP32 / no FP16 layer."""
    problems = []
    if summary["island_reduced_names"]:
        problems.append(
            "FP32-island layers (FBP / physics) ran in reduced precision: "
            f"{summary['island_reduced_names'][:3]}; the engine would lose the accuracy the islands keep"
        )
    if expect_fp16 and summary["conv_fp32"]:
        problems.append(
            f"the engine runs {summary['conv_fp32']} network convolution layer(s) in FP32 though --fp16 was "
            f"asked (e.g. {summary['conv_fp32_names'][:2]}); the FP16 ONNX did not reach TensorRT as FP16"
        )
    if expect_fp16 and not summary["conv_fp16"] and not summary["precisions"].get("fp16"):
        problems.append("the engine holds no FP16 layer though --fp16 was asked")
    return problems


def check_engine_precision(summary: dict[str, Any], expect_fp16: bool = True) -> None:
    """Raise the first of `precision_problems` (EngineOptions.layer_check == "error")."""
    problems = precision_problems(summary, expect_fp16)
    if problems:
        raise ExportError(problems[0])


check_engine_fp16 = check_engine_precision  # the name the first version exported
