"""ModelProto assembly: inputs and outputs in the spec's order with symbolic dims, pinned IR
version and opset, rnnc's metadata (each layer's lowering and why), check_model, and an
atomic write."""
from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import onnx
from onnx import helper

from .._version import __version__
from ..errors import InternalError
from ..fileio import write_atomic
from ..ir.graph import Graph
from ..ir.types import Ref
from ..metadata import as_inputs
from ..protowire import length_field
from .builder import GraphBuilder, tensor_header, value_info

MIN_OPSET = 18   # Split(num_outputs), ReduceMax/ReduceSum with axes as input


@dataclass(frozen=True)
class LoweredGraph:
    """What rnnc/lower/ hands to assemble: the tensor of every IR reference, the ONNX ops
    each layer emitted (for the metadata), and each carried state's output name -> tensor."""

    env: dict[Ref, str]
    nodes: dict[str, list[str]]
    state_outputs: dict[str, str]


def assemble(graph: Graph, b: GraphBuilder, lowered: LoweredGraph, *, opset: int, ir_version: int,
             target: str) -> onnx.ModelProto:
    env, state_outputs = lowered.env, lowered.state_outputs
    nodes = list(b.nodes)
    outputs = []
    named = _output_namer(nodes)
    for out in graph.outputs:
        named(env[out.ref], out.name)
        t = graph.type_of(out.ref)
        outputs.append(value_info(out.name, t.dtype, t.dims))
    inputs = [value_info(n, t.dtype, t.dims) for n, t in graph.inputs.items()]
    # stateful layers: each state is an extra input `<layer>/<port>_in` and output `<layer>/<port>_out`
    for _, name_in, name_out, dims in graph.state_io():
        inputs.append(value_info(name_in, "float32", dims))
        named(state_outputs[name_out], name_out)
        outputs.append(value_info(name_out, "float32", dims))
    g = helper.make_graph(nodes, graph.name, inputs, outputs)
    # one initializer at a time: adding to a proto copies it, so the builder's copy is dropped
    # as it goes (peak: the weights once, plus the largest tensor), not all of them twice
    inits, b.initializers = b.initializers, []
    inits.reverse()
    while inits:
        g.initializer.append(inits.pop())
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)], producer_name="rnnc",
                              producer_version=__version__)
    model.ir_version = ir_version
    model.doc_string = f"{graph.name}, compiled by rnnc {__version__}"
    meta = {
        "rnnc.version": __version__,
        "rnnc.target": target,
        "rnnc.model": json.dumps(metadata(graph, lowered.nodes)),
    }
    for k, v in meta.items():
        helper.set_model_props(model, {**{p.key: p.value for p in model.metadata_props}, k: v})
    return model


def _output_namer(nodes: list[onnx.NodeProto]):
    """Gives a tensor a model output's name: the node computing it writes it under that name
    (its readers renamed), or, where it cannot (a graph input or initializer, a tensor already
    leaving under another name, one read by name inside a subgraph), an Identity `output/<name>`."""
    from .peephole import _reads, _subgraphs
    producer = {o: (n, i) for n in nodes for i, o in enumerate(n.output)}
    inner: set[str] = set()
    for n in nodes:
        for g in _subgraphs(n):
            inner.update(t for m in g.node for t in _reads(m))
            inner.update(o.name for o in g.output)
    renamed: dict[str, str] = {}    # tensor -> the output name it now has

    def named(tensor: str, name: str) -> None:
        if tensor in renamed:           # leaving twice: the second time through an Identity
            nodes.append(helper.make_node("Identity", [renamed[tensor]], [name], name=f"output/{name}"))
        elif tensor in producer and tensor not in inner:
            node, i = producer.pop(tensor)
            node.output[i] = name
            for n in nodes:
                for j, t in enumerate(n.input):
                    if t == tensor:
                        n.input[j] = name
            renamed[tensor] = name
        else:
            nodes.append(helper.make_node("Identity", [tensor], [name], name=f"output/{name}"))
    return named

def metadata(graph: Graph, nodes: dict[str, list[str]]) -> dict[str, Any]:
    """The layer table stored in the model (read back by rnnc/metadata.py): each layer's
    plan as data, and the sentence generated from it."""
    layers = []
    for layer in graph.layers.values():
        layers.append({
            "name": layer.name, "kind": layer.kind, "lowering": layer.lowering, "reason": layer.reason,
            "plan": layer.plan.to_json() if layer.plan else None,
            "config": {k: v for k, v in layer.config.items() if isinstance(v, (int, float, str, bool, type(None)))},
            "notes": list(layer.notes), "params": layer.param_count(),
            "outputs": {p: [str(d) if isinstance(d, str) else d for d in t.dims] for p, t in layer.outputs.items()},
            "inputs": [str(r) for r in layer.inputs],
            "nodes": nodes.get(layer.name, []),
        })
    states = [{"layer": l.name, "port": port, "input": i, "output": o, "dims": list(d)}
              for l in graph.layers.values() for port, i, o, d in l.state_io()]
    return {"name": graph.name, "layers": layers, "states": states,
            "inputs": list(graph.inputs), "outputs": [o.name for o in graph.outputs],
            "equal_dims": [list(c) for c in graph.equal_dims]}


# Above this many bytes a model is written with ONNX external data (its tensors in `<file>.data`
# beside it): one protobuf message, and so one .onnx file, holds at most 2 GB.
EXTERNAL_DATA_BYTES = 2_000_000_000
EXTERNAL_MIN_TENSOR = 1024    # smaller tensors stay inside the .onnx file


def needs_external_data(model: onnx.ModelProto, limit: int | None = None,
                        arrays: Mapping[str, np.ndarray] | None = None) -> bool:
    return serialized_size(model, arrays or {}) > (EXTERNAL_DATA_BYTES if limit is None else limit)


def check(model: onnx.ModelProto, arrays: Mapping[str, np.ndarray] | None = None) -> None:
    """onnx.checker's full check of the model. `arrays`: its large tensors, held apart (the
    model has no initializer for them: GraphBuilder.arrays); they are checked as graph inputs
    of their type and shape, so no copy of their data is made for the checker (the data's own
    consistency needs no check: it is the array itself). A model too big for one protobuf
    message without them is checked when it is saved, from its files (save_atomic)."""
    if model.ByteSize() > EXTERNAL_DATA_BYTES:
        return
    if arrays:          # small copies: the large tensors' data is in neither
        n = len(model.graph.initializer)
        model = as_inputs(structure(model, arrays), range(n, n + len(arrays)))
    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:   # a compiler bug, never the user's
        raise InternalError(f"the emitted model fails onnx.checker: {e}") from e


# -- the large tensors held apart (GraphBuilder.arrays): the model whole, or written from them --

_GRAPH, _INITIALIZER, _RAW_DATA = 7, 5, 9     # ModelProto.graph, GraphProto.initializer, TensorProto.raw_data


def _initializer_parts(name: str, arr: np.ndarray) -> tuple[bytes, memoryview]:
    """GraphProto's `initializer` field holding `arr`, as its leading bytes and the array's own
    memory (the raw data, little-endian: GraphBuilder defers only native little-endian arrays)."""
    head = tensor_header(name, arr).SerializeToString() + length_field(_RAW_DATA, arr.nbytes)
    return length_field(_INITIALIZER, len(head) + arr.nbytes) + head, memoryview(arr.reshape(-1).view(np.uint8))


def serialized_size(model: onnx.ModelProto, arrays: Mapping[str, np.ndarray]) -> int:
    """The bytes of the model with `arrays` as initializers, without making them."""
    if not arrays:
        return model.ByteSize()
    graph = model.graph.ByteSize() + sum(len(h) + d.nbytes for h, d in
                                         (_initializer_parts(k, a) for k, a in arrays.items()))
    return model.ByteSize() - model.graph.ByteSize() - len(length_field(_GRAPH, model.graph.ByteSize())) + \
        len(length_field(_GRAPH, graph)) + graph


def write_model(f: BinaryIO, model: onnx.ModelProto, arrays: Mapping[str, np.ndarray]) -> None:
    """Write the model with `arrays` appended to its initializers, straight from the arrays:
    the same bytes a ModelProto holding them would serialize to, with no copy of the data made
    (protobuf fields may come in any order, so the model's other fields go first, then one
    `graph` field: the graph's own fields, then the large initializers)."""
    rest = onnx.ModelProto()
    rest.CopyFrom(model)        # small: the large tensors are not in it
    rest.ClearField("graph")
    graph = model.graph.SerializeToString()
    parts = [_initializer_parts(k, a) for k, a in arrays.items()]
    f.write(rest.SerializeToString())
    f.write(length_field(_GRAPH, len(graph) + sum(len(h) + d.nbytes for h, d in parts)))
    f.write(graph)
    for head, data in parts:
        f.write(head)
        f.write(data)


def materialize(model: onnx.ModelProto, arrays: Mapping[str, np.ndarray]) -> None:
    """Append `arrays` to the model's initializers (in place): the model whole, for a caller
    that asks for the ModelProto."""
    for k, a in arrays.items():
        t = model.graph.initializer.add()
        t.CopyFrom(tensor_header(k, a))
        t.raw_data = a.tobytes()


def structure(model: onnx.ModelProto, arrays: Mapping[str, np.ndarray]) -> onnx.ModelProto:
    """A copy of the model whose large tensors are initializers with their type and dims but
    no data: everything `rnnc inspect` reads, at the size of the graph. It does not run."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    out.graph.initializer.extend(tensor_header(k, a) for k, a in arrays.items())
    return out


def _tensors(graph: onnx.GraphProto):
    yield from graph.initializer
    for node in graph.node:
        for a in node.attribute:
            if a.type == onnx.AttributeProto.GRAPH:
                yield from _tensors(a.g)
            elif a.type == onnx.AttributeProto.TENSOR:
                yield a.t


def save_atomic(model: onnx.ModelProto, path: str | Path, *, external_data: bool | None = None,
                limit: int | None = None, arrays: Mapping[str, np.ndarray] | None = None) -> list[Path]:
    """Write the model all or nothing (rnnc/fileio.py): never a half-written file. Returns the
    files written. external_data: True writes every tensor of 1 KiB or more to `<file>.data`
    (ONNX external data, its path relative to the model); None (auto) does so when the model is
    over `limit` bytes (EXTERNAL_DATA_BYTES: 2 GB).
    `arrays`: the model's large tensors held apart (GraphBuilder.arrays), written straight from
    the arrays (no serialized copy of the model is made); the in-memory model is left as it is.
    Without them, the tensors are moved to the .data file, not copied: the in-memory model then
    refers to that file (run it from the saved path)."""
    path = Path(path)
    arrays = arrays or {}
    if external_data is None:
        external_data = isinstance(model, onnx.ModelProto) and needs_external_data(model, limit, arrays)
    if not external_data:
        write_atomic({path: (lambda f: write_model(f, model, arrays)) if arrays else model.SerializeToString()})
        return [path]
    data = path.with_name(path.name + ".data")
    if arrays:              # the model is small without them: the file's own copy is edited
        copy = onnx.ModelProto()
        copy.CopyFrom(model)
        model = copy

    def refer(t: onnx.TensorProto, offset: int, length: int) -> None:
        del t.external_data[:]
        for k, v in (("location", data.name), ("offset", str(offset)), ("length", str(length))):
            t.external_data.add(key=k, value=v)
        t.data_location = onnx.TensorProto.EXTERNAL

    def write_data(f) -> None:
        offset = 0
        for t in _tensors(model.graph):
            if not t.HasField("raw_data") or len(t.raw_data) < EXTERNAL_MIN_TENSOR:
                continue
            raw = t.raw_data
            f.write(raw)
            t.ClearField("raw_data")       # the model keeps no second copy
            refer(t, offset, len(raw))
            offset += len(raw)
            del raw
        for k, a in arrays.items():
            f.write(memoryview(a.reshape(-1).view(np.uint8)))
            t = model.graph.initializer.add()
            t.CopyFrom(tensor_header(k, a))
            refer(t, offset, a.nbytes)
            offset += a.nbytes

    write_atomic({data: write_data, path: lambda f: f.write(model.SerializeToString())})
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:   # a compiler bug
        raise InternalError(f"the emitted model fails onnx.checker: {e}") from e
    return [path, data]
