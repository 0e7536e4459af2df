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
from onnx import numpy_helper

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


def _compose(p: list[int], q: list[int]) -> list[int]:
    """Transpose(Transpose(x, p), q) = Transpose(x, r)."""
    return [p[i] for i in q]


def _int_const(inits: dict[str, onnx.TensorProto], name: str) -> list[int] | None:
    t = inits.get(name)
    if t is None or t.data_type != onnx.TensorProto.INT64 or not (t.raw_data or t.int64_data):
        return None         # not an int64 constant (or a large tensor's header: builder.arrays)
    return [int(v) for v in numpy_helper.to_array(t).ravel()]


def _attr_int(node: onnx.NodeProto, name: str, default: int) -> int:
    for a in node.attribute:
        if a.name == name:
            return int(a.i)
    return default


def cancel_transposes(nodes: list[onnx.NodeProto], keep: set[str] = frozenset(),
                      inits: dict[str, onnx.TensorProto] | None = None
                      ) -> tuple[list[onnx.NodeProto], dict[str, str], list[onnx.NodeProto]]:
    """Remove Transpose pairs that cancel out (see the module docstring); a pair that does not
    cancel becomes one Transpose when nothing else reads the first one. Through a Reshape that
    copies the permuted axes (shape [0, .., 0, rest]: `Transpose(q)` of `Reshape(Transpose(p))`,
    q moving only those axes), the pair becomes one Transpose before the Reshape (none when that
    one is the identity). A Transpose of an embedding lookup (Gather(table, idx) read by nothing
    else, the permutation keeping the table's own axes last) gathers from the transposed
    indices. `keep`: tensors read from outside `nodes` (model outputs): a node writing one is
    kept. `inits`: the graph's initializers (the Reshape's shape, the table's rank). Returns the
    remaining nodes (in order), the renames (removed tensor -> the tensor it equals) for
    readers outside `nodes`, and the removed nodes. Nodes are edited in place."""
    inits = inits or {}
    nodes = list(nodes)
    producer = {o: n for n in nodes for o in n.output}
    readers: dict[str, list[onnx.NodeProto]] = {}
    for n in nodes:
        for t in _reads(n):
            readers.setdefault(t, []).append(n)
    removed: set[int] = set()
    renames: dict[str, str] = {}

    def only_reader(t: str, node: onnx.NodeProto) -> bool:
        return t not in keep and [id(n) for n in readers.get(t, [])] == [id(node)]

    def drop_pair(first: onnx.NodeProto, node: onnx.NodeProto) -> None:
        # node = Transpose(first) equals first's input: rewire node's readers, drop node (and first)
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

    order = {id(n): i for i, n in enumerate(nodes)}
    for node in list(nodes):     # in order (topological): a chain collapses from its start
        if node.op_type != "Transpose" or id(node) in removed:
            continue
        q = _perm(node)
        first = producer.get(node.input[0])
        if q is None or first is None or id(first) in removed:
            continue
        if first.op_type == "Transpose":
            p = _perm(first)
            if p is None or len(p) != len(q):
                continue
            r = _compose(p, q)
            if r == list(range(len(r))):
                drop_pair(first, node)
            elif only_reader(first.output[0], node):      # one Transpose instead of two
                _set_perm(node, r)
                node.input[0] = first.input[0]
                readers.setdefault(first.input[0], []).append(node)
                readers[first.input[0]] = [n for n in readers[first.input[0]] if n is not first]
                removed.add(id(first))
        elif first.op_type == "Reshape" and _attr_int(first, "allowzero", 0) == 0:
            tp = producer.get(first.input[0])
            shape = _int_const(inits, first.input[1])
            if tp is None or tp.op_type != "Transpose" or id(tp) in removed or shape is None:
                continue
            p = _perm(tp)
            k = next((i for i, d in enumerate(shape) if d != 0), len(shape))   # axes copied through
            if (p is None or k == 0 or len(q) != len(shape) or q[k:] != list(range(k, len(q)))
                    or sorted(q[:k]) != list(range(k)) or not only_reader(tp.output[0], first)
                    or not only_reader(first.output[0], node)):
                continue
            # Transpose(Reshape(Transpose(x, p)), q) = Reshape(Transpose(x, p'), the same shape)
            p2 = [p[q[i]] for i in range(k)] + p[k:]
            out = node.output[0]
            removed.add(id(node))
            first.output[0], old = out, first.output[0]
            producer[out] = first
            readers.pop(old, None)
            if p2 == list(range(len(p2))):
                first.input[0] = tp.input[0]
                readers.setdefault(tp.input[0], []).append(first)
                readers[tp.input[0]] = [n for n in readers[tp.input[0]] if n is not tp]
                removed.add(id(tp))
            else:
                _set_perm(tp, p2)
        elif first.op_type == "Gather" and _attr_int(first, "axis", 0) == 0 and first.input[0] in inits:
            rank = len(inits[first.input[0]].dims)             # the table's own axes, kept last
            r = len(q) - rank + 1
            if r < 1 or q[r:] != list(range(r, len(q))) or not only_reader(first.output[0], node):
                continue
            # Transpose(Gather(table, idx), q) = Gather(table, Transpose(idx, q[:r]))
            idx, mid, out = first.input[1], first.output[0], node.output[0]
            _set_perm(node, q[:r])
            node.input[0], node.output[0] = idx, mid
            first.input[1], first.output[0] = mid, out
            producer[mid], producer[out] = node, first
            readers[idx] = [node if n is first else n for n in readers.get(idx, [])]
            readers[mid] = [first]
            i, j = order[id(first)], order[id(node)]
            nodes[i], nodes[j] = node, first                   # the indices' Transpose first
            order[id(node)], order[id(first)] = i, j
    gone = [n for n in nodes if id(n) in removed]
    return [n for n in nodes if id(n) not in removed], renames, gone


def _set_perm(node: onnx.NodeProto, perm: list[int]) -> None:
    for a in node.attribute:
        if a.name == "perm":
            del a.ints[:]
            a.ints.extend(perm)


# ---- dead work --------------------------------------------------------------------------

OPTIONAL_OUTPUTS = {"LSTM", "GRU", "RNN"}    # every output optional (Y, Y_h, Y_c)


def prune(nodes: list[onnx.NodeProto], keep: set[str]) -> tuple[list[onnx.NodeProto], list[onnx.NodeProto]]:
    """Remove the work nothing reads, in `nodes` and in their subgraphs: a node none of whose
    outputs is read (by a later node, a subgraph, or `keep`: the graph's outputs); an If's
    output (both branches' too), a Loop's or Scan's scan output (its body's too); a native
    recurrent op's trailing outputs. A Scan's or Loop's final states stay (Scan has no empty
    outputs on ONNX Runtime) and a native op's Y stays named when Y_h is read: onnx.reference
    stores an unnamed output under "" and hands it to later nodes' omitted inputs. Returns
    (remaining nodes in order, removed nodes). Nodes are edited in place."""
    used: Counter = Counter(keep)
    kept: list[onnx.NodeProto] = []
    gone: list[onnx.NodeProto] = []
    for node in reversed(nodes):
        outs = list(node.output)
        if not any(o and used[o] for o in outs):
            gone.append(node)
            continue
        if node.op_type in OPTIONAL_OUTPUTS:
            while node.output and not used[node.output[-1]]:
                del node.output[-1]
        elif node.op_type == "If":
            dead = [i for i, o in enumerate(outs) if not used[o]]
            for i in reversed(dead):
                del node.output[i]
                for g in _subgraphs(node):
                    del g.output[i]
        elif node.op_type in ("Scan", "Loop") and not any(a.name in ("scan_output_axes", "scan_output_directions")
                                                         for a in node.attribute):
            n_states = len(node.input) - (_attr_int(node, "num_scan_inputs", 0) if node.op_type == "Scan" else 2)
            first = 0 if node.op_type == "Scan" else 1          # a Loop's body has cond first
            dead = [i for i in range(n_states, len(outs)) if not used[outs[i]]]
            for i in reversed(dead):
                del node.output[i]
                for g in _subgraphs(node):
                    del g.output[first + i]
        for g in _subgraphs(node):
            rest, _ = prune(list(g.node), {o.name for o in g.output})
            del g.node[:]
            g.node.extend(rest)
        used.update(_reads(node))
        kept.append(node)
    kept.reverse()
    return kept, gone


def cancel_transpose_pairs(graph: Graph, b: GraphBuilder, lowered: LoweredGraph) -> LoweredGraph:
    """The pass on a lowered graph: edits `b.nodes`, returns the LoweredGraph with the layer
    outputs renamed and the removed Transposes out of each layer's node list."""
    keep = {lowered.env[o.ref] for o in graph.outputs} | set(lowered.state_outputs.values())
    inits = b.initializer_dims()
    b.nodes[:], renames, gone = cancel_transposes(b.nodes, keep, inits)
    b.nodes[:], dead = prune(b.nodes, {renames.get(t, t) for t in keep})
    gone += dead
    if dead:    # and the initializers only they read
        read: Counter = Counter()
        for n in b.nodes:
            read.update(_reads(n))
        b.initializers[:] = [t for t in b.initializers if read[t.name]]
        b.arrays = {k: a for k, a in b.arrays.items() if read[k]}
    if not gone:
        return lowered
    env = {r: renames.get(t, t) for r, t in lowered.env.items()}
    states = {k: renames.get(t, t) for k, t in lowered.state_outputs.items()}
    nodes = {k: list(v) for k, v in lowered.nodes.items()}
    for n in gone:
        ops = nodes.get(n.name.split("/", 1)[0])
        if ops and n.op_type in ops:
            ops.remove(n.op_type)
    return LoweredGraph(env, nodes, states)
