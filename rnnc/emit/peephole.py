"""Peephole pass over the emitted ONNX nodes: Transposes that cancel out.

A lowering rule that needs another layout (ONNX Conv and pooling read channels-first; the
native recurrent ops read time-major) transposes its input and its output back. Where two
such layers meet, the graph holds `Transpose(p)` whose output feeds `Transpose(q)` with
q after p the identity: the second one gives back the first one's input. This pass rewires
every reader of the second Transpose to the first one's input and removes it; the first one
goes too once nothing reads it (no other node, no subgraph, no model output). A Transpose
whose output is read elsewhere stays, so nothing but the cancelling pair changes.

Runs on the builder's nodes after lowering and before assembly (rnnc/pipeline.py); the
layer outputs that name a removed tensor are renamed in the LoweredGraph, and each layer's
node list (rnnc's metadata) loses the removed Transposes."""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

import onnx

from ..ir.graph import Graph
from .builder import GraphBuilder
from .model import LoweredGraph


def _perm(node: onnx.NodeProto) -> list[int] | None:
    for a in node.attribute:
        if a.name == "perm":
            return list(a.ints)
    return None            # no perm: reverse the dims (rank unknown here): left alone


def _subgraphs(node: onnx.NodeProto) -> Iterable[onnx.GraphProto]:
    for a in node.attribute:
        if a.type == onnx.AttributeProto.GRAPH:
            yield a.g
        elif a.type == onnx.AttributeProto.GRAPHS:
            yield from a.graphs


def _reads(node: onnx.NodeProto) -> Counter:
    """Tensor names a node reads, its subgraphs' outer-scope reads included."""
    c = Counter(i for i in node.input if i)
    for g in _subgraphs(node):
        for n in g.node:
            c.update(_reads(n))
    return c


def _rename(node: onnx.NodeProto, old: str, new: str) -> None:
    for i, name in enumerate(node.input):
        if name == old:
            node.input[i] = new
    for g in _subgraphs(node):
        for n in g.node:
            _rename(n, old, new)
        for o in g.output:              # a body output that is an outer tensor
            if o.name == old:
                o.name = new


def cancel_transposes(nodes: list[onnx.NodeProto], keep: set[str] = frozenset()
                      ) -> tuple[list[onnx.NodeProto], dict[str, str], list[onnx.NodeProto]]:
    """Remove Transpose pairs that cancel out (see the module docstring). `keep`: tensors read
    from outside `nodes` (model outputs): a Transpose writing one is kept. Returns the
    remaining nodes (in order), the renames (removed tensor -> the tensor it equals) for
    readers outside `nodes`, and the removed nodes. Nodes are edited in place."""
    producer = {o: n for n in nodes for o in n.output}
    readers: dict[str, list[onnx.NodeProto]] = {}
    for n in nodes:
        for t in _reads(n):
            readers.setdefault(t, []).append(n)
    removed: set[int] = set()
    renames: dict[str, str] = {}
    for node in nodes:           # in order (topological): a chain collapses from its start
        if node.op_type != "Transpose":
            continue
        first = producer.get(node.input[0])
        if first is None or first.op_type != "Transpose" or id(first) in removed:
            continue
        p, q = _perm(first), _perm(node)
        if p is None or q is None or len(p) != len(q) or [p[i] for i in q] != list(range(len(q))):
            continue
        src, mid, out = first.input[0], first.output[0], node.output[0]
        for n in readers.pop(out, []):
            _rename(n, out, src)
            readers.setdefault(src, []).append(n)
        renames[out] = src
        removed.add(id(node))
        readers[mid] = [n for n in readers.get(mid, []) if n is not node]
        if not readers[mid] and mid not in keep:
            removed.add(id(first))
            readers[src] = [n for n in readers.get(src, []) if n is not first]
    gone = [n for n in nodes if id(n) in removed]
    return [n for n in nodes if id(n) not in removed], renames, gone


def cancel_transpose_pairs(graph: Graph, b: GraphBuilder, lowered: LoweredGraph) -> LoweredGraph:
    """The pass on a lowered graph: edits `b.nodes`, returns the LoweredGraph with the layer
    outputs renamed and the removed Transposes out of each layer's node list."""
    keep = {lowered.env[o.ref] for o in graph.outputs} | set(lowered.state_outputs.values())
    b.nodes[:], renames, gone = cancel_transposes(b.nodes, keep)
    if not gone:
        return lowered
    env = {r: renames.get(t, t) for r, t in lowered.env.items()}
    states = {k: renames.get(t, t) for k, t in lowered.state_outputs.items()}
    nodes = {k: list(v) for k, v in lowered.nodes.items()}
    for n in gone:
        ops = nodes.get(n.name.split("/", 1)[0])
        if ops and "Transpose" in ops:
            ops.remove("Transpose")
    return LoweredGraph(env, nodes, states)
