"""Find tensors an ONNX file keeps outside itself ("external data"), without the onnx package.

Why: onnxruntime and OpenVINO, handed a model as bytes, resolve an external tensor's `location` against the
process's working directory (checked: a Conv whose weights sit in `secret.bin` loads and runs from bytes in
both, onnxruntime 1.2x and OpenVINO 2026.4). Only the ONNX file is hashed, so such a file would read
unverified bytes from outside the artifact. The exporter writes single files; a file with external data is
refused before any engine sees it.

This walks the protobuf wire format (https://protobuf.dev/programming-guides/encoding/) through the
messages that can hold tensors, field numbers from onnx/onnx.proto3:
  ModelProto.graph 7, .functions 25;  GraphProto.node 1, .initializer 5, .sparse_initializer 15;
  FunctionProto.node 7;  NodeProto.attribute 5;  AttributeProto.t 5, .g 6, .tensors 10, .graphs 11,
  .sparse_tensor 22, .sparse_tensors 23;  SparseTensorProto.values 1, .indices 2;
  TensorProto.name 8, .external_data 13, .data_location 14 (EXTERNAL = 1).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from recon.runtime.manifest import ArtifactError

_LEN, _VARINT, _I64, _I32 = 2, 0, 1, 5
_MAX_DEPTH = 64  # subgraphs nest (If/Loop bodies); a damaged file must not recurse without bound

# message kind → {field number: message kind of that (length-delimited) field}
_CHILDREN: dict[str, dict[int, str]] = {
    "model": {7: "graph", 25: "function"},
    "graph": {1: "node", 5: "tensor", 15: "sparse"},
    "function": {7: "node"},
    "node": {5: "attribute"},
    "attribute": {5: "tensor", 6: "graph", 10: "tensor", 11: "graph", 22: "sparse", 23: "sparse"},
    "sparse": {1: "tensor", 2: "tensor"},
}


class MalformedOnnx(ValueError):
    """The bytes are not a well-formed protobuf message."""


def _varint(data: memoryview, pos: int, end: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= end or shift > 63:
            raise MalformedOnnx("truncated or overlong varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def _fields(data: memoryview, start: int, end: int) -> Iterator[tuple[int, int, int, int]]:
    """(field number, wire type, value start or varint value, value end) of one message's fields."""
    pos = start
    while pos < end:
        key, pos = _varint(data, pos, end)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise MalformedOnnx("field number 0")
        if wire == _VARINT:
            value, pos = _varint(data, pos, end)
            yield number, wire, value, pos
        elif wire == _LEN:
            length, pos = _varint(data, pos, end)
            if pos + length > end:
                raise MalformedOnnx("a field runs past the end of its message")
            yield number, wire, pos, pos + length
            pos += length
        elif wire in (_I64, _I32):
            pos += 8 if wire == _I64 else 4
            if pos > end:
                raise MalformedOnnx("truncated fixed-width field")
        else:  # groups (3, 4) are not used by ONNX; 6 and 7 do not exist
            raise MalformedOnnx(f"wire type {wire}")


def _walk(data: memoryview, kind: str, start: int, end: int, depth: int, found: list[str]) -> None:
    if depth > _MAX_DEPTH:
        raise MalformedOnnx(f"messages nested deeper than {_MAX_DEPTH}")
    if kind == "tensor":
        name, external = "", False
        for number, wire, a, b in _fields(data, start, end):
            if number == 8 and wire == _LEN:
                name = bytes(data[a:b]).decode("utf-8", "replace")
            elif (number == 13 and wire == _LEN) or (number == 14 and wire == _VARINT and a == 1):
                external = True
        if external:
            found.append(name or "<unnamed tensor>")
        return
    children = _CHILDREN[kind]
    for number, wire, a, b in _fields(data, start, end):
        child = children.get(number)
        if child is not None and wire == _LEN:
            _walk(data, child, a, b, depth + 1, found)


def external_tensors(model: bytes) -> list[str]:
    """Names of the tensors of a serialized ModelProto whose data lives outside it; [] for a single file.

    Raises MalformedOnnx when the bytes are not a protobuf message.
    """
    found: list[str] = []
    data = memoryview(model)
    _walk(data, "model", 0, len(data), 0, found)
    return found


def refuse_external_data(model: bytes, path: str | os.PathLike) -> None:
    """ArtifactError when the ONNX bytes read from `path` keep tensors elsewhere or are not protobuf."""
    try:
        external = external_tensors(model)
    except MalformedOnnx as error:
        raise ArtifactError(
            f"{path}: not an ONNX protobuf ({error}); the file is damaged, re-export"
        ) from None
    if external:
        raise ArtifactError(
            f"{path}: keeps tensors as external data ({', '.join(external[:3])}), which would be read from "
            "outside the artifact without a hash check; re-export it as one file"
        )
