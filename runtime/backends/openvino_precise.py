"""bf16 on OpenVINO without the physics: the operations computed before the network stay float32.

A CT artifact computes its FBP inside the graph (the ramp filter as a MatMul, the backprojection by gathers)
before the network's first convolution. Under OpenVINO's bf16 inference-precision hint those run in bf16
too (8-bit mantissa), and the ramp filter's differences of sinogram values in the hundreds lose the image:
the shipped CT ResUNet lost 10.2 dB on the held-out set (30.05 → 19.80 dB; `bench/runtime.py`).

OpenVINO keeps an operation in its original precision when its runtime info holds the "precise" attribute
(`ov::DisableFP16Compression`, RTTI "precise" version "0":
src/common/transformations/include/transformations/rt_info/disable_fp16_compression.hpp; the CPU plugin
honours it for bf16 as well, openvinotoolkit/openvino PR #21440). Python cannot create that attribute: its
`rt_info` holds Python values, and the plugin then fails with "Bad as from: std::string to:
ov::DisablePrecisionConversion" (checked with OpenVINO 2026.4). The IR reader builds it from
`<attribute name="precise" version="0"/>`, so the model is serialized to IR (a private temporary folder,
removed at once), the attribute added to those operations, and the IR read back from bytes. Measured on
the shipped CT ResUNet (`bench/runtime.py`, 32 held-out sinograms, docs/benchmarks.md): bf16 30.04 dB
against 30.05 dB in f32 (19.80 dB without the marks), 34.9 ms per image against 56.0 ms in f32 at batch 1.
"""

from __future__ import annotations

import os
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

NOT_COMPUTED = ("Parameter", "Constant", "Result")  # graph types (IR: Parameter, Const, Result) never marked
IR_NOT_COMPUTED = ("Parameter", "Const", "Result")
# operations that move or select values without arithmetic: exact in any precision. A graph whose only float
# operations before the network are these (a deblur graph padding its input) has no physics to keep.
MOVING = {
    "Pad", "Slice", "StridedSlice", "Reshape", "Squeeze", "Unsqueeze", "Transpose", "Concat", "Split",
    "VariadicSplit", "Broadcast", "Gather", "GatherElements", "Tile", "Convert",
}  # fmt: skip


def physics_operations(model: Any) -> set[str]:
    """Friendly names of the operations computed before the network: those upstream of the first
    Convolution's data input (every operation of a graph without convolutions), when float arithmetic is
    among them; none when they only move values or compute shapes."""
    ops = model.get_ordered_ops()
    first = next((op for op in ops if op.get_type_name() == "Convolution"), None)
    if first is None:
        upstream = [op for op in ops if op.get_type_name() not in NOT_COMPUTED]
    else:
        upstream, seen, stack = [], set(), [first.input_value(0).get_node()]
        while stack:
            node = stack.pop()
            if node.get_name() in seen:  # get_name is unique per node; friendly names need not be
                continue
            seen.add(node.get_name())
            if node.get_type_name() not in NOT_COMPUTED:
                upstream.append(node)
            stack.extend(value.get_node() for value in node.input_values())
    arithmetic = any(
        op.get_type_name() not in MOVING and op.get_output_element_type(0).is_real() for op in upstream
    )
    return {op.get_friendly_name() for op in upstream} if arithmetic else set()


def keep_physics_in_f32(core: Any, model: Any) -> tuple[Any, int]:
    """`model` with its `physics_operations` marked precise (kept f32 under a bf16 hint), and how many
    operations were marked; the model itself when there are none."""
    names = physics_operations(model)
    if not names:
        return model, 0
    xml, weights = _serialized(model)
    root = ET.fromstring(xml)  # OpenVINO's own output for a model it has read: no entities, no DTD
    marked = 0
    for layer in root.iter("layer"):
        if layer.get("name") in names and layer.get("type") not in IR_NOT_COMPUTED:
            rt_info = layer.find("rt_info")
            if rt_info is None:
                rt_info = ET.SubElement(layer, "rt_info")
            ET.SubElement(rt_info, "attribute", name="precise", version="0")
            marked += 1
    return core.read_model(ET.tostring(root), weights), marked


def _serialized(model: Any) -> tuple[bytes, bytes]:
    """The model as IR (.xml, .bin) bytes, through a private temporary folder (mode 0700, in memory where
    /dev/shm exists) removed at once: the serializer takes paths only, and insists on a ".xml" name."""
    import openvino  # reached only from the OpenVINO backend, which has imported it

    shm = Path("/dev/shm")
    where = str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None
    with tempfile.TemporaryDirectory(prefix="recon-ir-", dir=where) as folder:
        xml_path, bin_path = Path(folder) / "model.xml", Path(folder) / "model.bin"
        openvino.serialize(model, str(xml_path), str(bin_path))
        return xml_path.read_bytes(), bin_path.read_bytes()
