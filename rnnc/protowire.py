"""Protobuf's wire format, just enough to read a large ONNX model without its weights.

A model file is mostly its initializers' raw data. Parsing it whole makes a copy of every
byte (two, with onnx.checker's own), so a 1 GB model costs several GB to inspect or check.
`strip_raw_data` walks the file's bytes (an mmap: pages it skips are never read) and returns
the same model without the raw data of its main graph's large initializers, which it only
measures. The result parses with onnx as usual; rnnc/metadata.py checks the measured sizes
against the tensors' dims and checks the rest with onnx.checker.

Only the fields on the path to the data are decoded (ModelProto.graph, GraphProto.initializer,
TensorProto.raw_data); every other field is copied as it is. Damaged bytes raise WireError."""
from __future__ import annotations

from collections.abc import Iterator

_MODEL_GRAPH, _GRAPH_INITIALIZER, _TENSOR_RAW_DATA = 7, 5, 9


class WireError(ValueError):
    pass


def _varint(buf, pos: int, end: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= end or shift > 63:
            raise WireError("a varint runs past its message")
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return value, pos


def encode_varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def length_field(number: int, size: int) -> bytes:
    """A length-delimited field's key and length (wire type 2); its `size` bytes follow."""
    return encode_varint(number << 3 | 2) + encode_varint(size)


def _fields(buf, pos: int, end: int) -> Iterator[tuple[int, int, int, int, int]]:
    """(number, wire type, field start, value start, value end) of each field in buf[pos:end]."""
    while pos < end:
        start = pos
        key, pos = _varint(buf, pos, end)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise WireError("a field numbered 0")
        if wire == 0:
            _, pos = _varint(buf, pos, end)
            yield number, wire, start, pos, pos
            continue
        if wire == 2:
            size, pos = _varint(buf, pos, end)
            value = pos
            pos += size
        elif wire == 1:
            value, pos = pos, pos + 8
        elif wire == 5:
            value, pos = pos, pos + 4
        else:
            raise WireError(f"wire type {wire} (groups are not used by ONNX)")
        if pos > end:
            raise WireError("a field runs past its message")
        yield number, wire, start, value, pos


def strip_raw_data(buf, min_bytes: int) -> tuple[bytes, list[tuple[int, int]]]:
    """The model in `buf` without the raw data of its main graph's initializers of at least
    `min_bytes`, and for each stripped one (its index among the graph's initializers, the
    size of the data it had)."""
    out = bytearray()
    stripped: list[tuple[int, int]] = []
    index = 0               # initializers seen so far (a graph field may come more than once: merged)
    for number, wire, start, value, end in _fields(buf, 0, len(buf)):
        if number != _MODEL_GRAPH or wire != 2:
            out += buf[start:end]
            continue
        graph = bytearray()
        for g_number, g_wire, g_start, g_value, g_end in _fields(buf, value, end):
            if g_number != _GRAPH_INITIALIZER or g_wire != 2:
                graph += buf[g_start:g_end]
                continue
            tensor = bytearray()
            raw = None
            for t_number, t_wire, t_start, t_value, t_end in _fields(buf, g_value, g_end):
                if t_number == _TENSOR_RAW_DATA and t_wire == 2:
                    raw = (t_start, t_end, t_end - t_value)      # the last one counts (protobuf's rule)
                else:
                    tensor += buf[t_start:t_end]
            if raw is not None and raw[2] < min_bytes:
                tensor += buf[raw[0]:raw[1]]     # small: kept (its place among the fields does not matter)
            elif raw is not None:
                stripped.append((index, raw[2]))
            graph += length_field(_GRAPH_INITIALIZER, len(tensor)) + tensor
            index += 1
        out += length_field(_MODEL_GRAPH, len(graph)) + graph
    return bytes(out), stripped
