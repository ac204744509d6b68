"""Finding tensors that an ONNX model keeps outside itself, without the `onnx` package.

ONNX lets any tensor keep its bytes in another file (`data_location: EXTERNAL`, `external_data: [location:
"w.bin"]`). onnxruntime, given a model as bytes, resolves such a location against the process's working
directory, so those bytes are read from outside the artifact and never hashed. onnxruntime (1.32 checked:
no session option forbids external data; `session.model_external_initializers_file_folder_path` only moves
the folder) cannot be told to refuse them, so the runtime scans the verified bytes itself and refuses any.

The scan walks the protobuf wire format along the message fields that can hold a TensorProto (field numbers
from onnx/onnx.proto, onnx 1.23): ModelProto.graph (7), .training_info (20: initialization 1, algorithm 2),
.functions (25: FunctionProto.node 7, .attribute_proto 11); GraphProto.node (1), .initializer (5),
.sparse_initializer (15: SparseTensorProto.values 1, .indices 2); NodeProto.attribute (5);
AttributeProto.t (5), .g (6), .tensors (10), .graphs (11), .sparse_tensor (22), .sparse_tensors (23);
TensorProto.name (8), .external_data (13), .data_location (14; EXTERNAL = 1).
"""

from __future__ import annotations

from collections.abc import Iterator

# Subgraphs (If/Loop/Scan bodies) nest; a model deeper than this is refused rather than recursed into.
MAX_NESTING = 64

# message kind -> {field number: message kind of that (length-delimited) field}
_SCHEMA: dict[str, dict[int, str]] = {
    "model": {7: "graph", 20: "training", 25: "function"},
    "training": {1: "graph", 2: "graph"},
    "function": {7: "node", 11: "attribute"},
    "graph": {1: "node", 5: "tensor", 15: "sparse"},
    "node": {5: "attribute"},
    "attribute": {5: "tensor", 6: "graph", 10: "tensor", 11: "graph", 22: "sparse", 23: "sparse"},
    "sparse": {1: "tensor", 2: "tensor"},
}
_EXTERNAL = 1  # TensorProto.DataLocation.EXTERNAL


class MalformedModel(ValueError):
    """The bytes are not a well-formed protobuf message along the fields scanned."""


def _varint(data: bytes | memoryview, pos: int, end: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if pos >= end or shift > 63:
            raise MalformedModel("truncated or over-long varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def _fields(data: memoryview, start: int, end: int) -> Iterator[tuple[int, int, int, int]]:
    """(field number, wire type, value or payload start, payload end) of each field in data[start:end]."""
    pos = start
    while pos < end:
        key, pos = _varint(data, pos, end)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(data, pos, end)
            yield number, wire, value, pos
        elif wire == 1:
            pos += 8
            yield number, wire, 0, pos
        elif wire == 2:
            length, pos = _varint(data, pos, end)
            if pos + length > end:
                raise MalformedModel("a field runs past the end of its message")
            yield number, wire, pos, pos + length
            pos += length
        elif wire == 5:
            pos += 4
            yield number, wire, 0, pos
        else:  # groups (3, 4) are not used by ONNX
            raise MalformedModel(f"unexpected protobuf wire type {wire}")
        if pos > end:
            raise MalformedModel("a field runs past the end of its message")


def external_tensors(model: bytes) -> list[str]:
    """Names of the tensors in `model` (ONNX ModelProto bytes) whose data lives outside it.

    Raises MalformedModel when the bytes cannot be walked (onnxruntime would refuse them too) or nest
    deeper than MAX_NESTING.
    """
    data = memoryview(model)
    found: list[str] = []
    stack = [("model", 0, len(data), 0)]
    while stack:
        kind, start, end, depth = stack.pop()
        if depth > MAX_NESTING:
            raise MalformedModel(f"messages nested deeper than {MAX_NESTING} levels")
        if kind == "tensor":
            name, external = "", False
            for number, wire, a, b in _fields(data, start, end):
                if number == 8 and wire == 2:
                    name = bytes(data[a:b]).decode("utf-8", "replace")
                elif number == 13 and wire == 2:
                    external = True
                elif number == 14 and wire == 0:
                    external |= a == _EXTERNAL
            if external:
                found.append(name or "<unnamed>")
            continue
        children = _SCHEMA[kind]
        for number, wire, a, b in _fields(data, start, end):
            if wire == 2 and number in children:
                stack.append((children[number], a, b, depth + 1))
    return found
