"""Merge the products that share their left operand, so a cell whose gate kernels are kept
apart still runs one product per step.

A cell may keep a kernel per gate:

    i = sigmoid(x @ wi + h @ ui + bi)          # after reassociate-sums:
    f = sigmoid(x @ wf + h @ uf + bf)          #   gemm(h, ui, gemm(x, wi, bi)), ...
    o = sigmoid(x @ wo + h @ uo + bo)
    g = tanh(x @ wg + h @ ug + bg)

which makes four Gemms and four activations at every step, where the same LSTM written with
one kernel (specs/lstm_custom_cell.yaml) makes one Gemm and two. A product's columns are
independent dot products, so the products of one left operand are one product over the
column-concatenation of their weights:

    z = gemm(h, concat([ui, uf, uo, ug]), gemm(x, concat([wi, wf, wo, wg]), concat([bi, bf, bo, bg])))

and each gate is a column slice of it. The columns are laid out so that the gates taking the
same element-wise activation sit side by side ([i f o | g]); such a run gets one activation
node, then a split back into its gates:

    ifo = sigmoid(z[:, :3 * u]);  i, f, o = split(ifo, 3);  g = tanh(z[:, 3 * u:])

which is the single-kernel cell's step: the time loop's body is Gemm, Split (the two column
slices tile z: rnnc/lower/loop.py tiling_slices), Sigmoid, Split, Tanh. The concatenated
weights, biases and input projection are state-free: the hoisting pass computes them before
the loop (the x side is again one MatMul over [x, 1], the bias folded in), and the weights'
Concat reads initializers only (ONNX Runtime folds it when it loads the model).

The result is exact: every output element is the same dot product plus the same addend, and
an element-wise function applied to side-by-side columns gives each column its own value
(softmax, which normalizes over the columns, is never merged).

Merged: state-dependent `gemm(a, W, c)` (or `a @ W`) with `a` a batched [B, k] value, W a
2-D state-free weight and c a state-free addend of the product's full width ([n] or [B, n]),
grouped by their left operand, their op and the kind of their addend (a [n] bias and a
[B, n] projection do not concatenate). Products of different left operands, or with batched
weights, are left alone. A product read by anything but one element-wise activation (a
program output, a next state, a sum) gets its column slice and keeps its consumers.

Wide gates: this pass runs before sink-slices, which splits a product whose consumers take
column slices of SINK_MIN_WIDTH columns or more back into one product per slice. Merged
products then end as the single-kernel cell's at every width: at 64 units one Gemm, at 256
one per activation run ([i f o] and [g]: specs/lstm_custom_cell.yaml's body). A group with
no run to share (each product read alone) whose products are all that wide is left as it is:
sink-slices would split the merged product back into those very products, through slices of
the concatenated weights. Nothing runs after sink-slices to merge again, so the two passes
never undo each other's work.

Measured (ONNX Runtime's CPU provider, 1 and 2 threads, interleaved rounds as tools/bench.py
times them; its `lean` bench has the row): the merged one-product body runs as fast as the
single-kernel cell's, and slower than the products left apart at 64 units (by some 5-15%):
ONNX Runtime fuses a Gemm with the activation right after it (FusedGemm), which the separate
products get and one product, split first, does not. So for the CPU provider sink-slices then
cuts the merged product at its activation runs (sink_slices.py `gemm_activations`): [i f o]
and [g] a Gemm each, each read by its activation alone, two FusedGemm kernels."""
from __future__ import annotations

from dataclasses import replace
from typing import Any

from ..cells.activations import ACROSS_AXIS
from ..cells.lang import B, Node, Program, ProgramWriter, live_nodes, state_dependent
from ..cells.ops import SOURCES
from ..ir.graph import Cell, Graph
from .manager import PassResult, map_custom_cells, no_plans, not_hoisted
from .sink_slices import SINK_MIN_WIDTH

# element-wise unary ops: on side-by-side columns, each column gets its own value
_ELEMENTWISE = frozenset({"act", "exp", "log", "sqrt", "abs", "neg", "clip"})


def _elementwise_key(n: Node) -> tuple | None:
    """(op, attrs) of an element-wise unary node (two nodes with one key compute one function)."""
    if n.op not in _ELEMENTWISE or (n.op == "act" and n.attr("name") in ACROSS_AXIS):
        return None
    return (n.op, n.attrs)


def merge(prog: Program) -> Program:
    nodes = prog.nodes
    dep = state_dependent(prog)
    live = live_nodes(prog)
    consumers: dict[int, list[int]] = {}
    for n in nodes:
        if n.id in live:
            for a in n.args:
                consumers.setdefault(a, []).append(n.id)
    used_outside = set(prog.outputs) | set(prog.next_states)

    def weight(i: int) -> bool:
        w = nodes[i]
        return len(w.shape) == 2 and not w.batched and not dep[i] and w.dtype == "float"

    def key(n: Node) -> tuple | None:
        """The group of a mergeable product: (left operand, op, addend kind), or None."""
        if n.id not in live or not dep[n.id] or n.op not in ("gemm", "matmul") or len(n.shape) != 2:
            return None
        a = nodes[n.args[0]]
        if not (a.batched and len(a.shape) == 2 and weight(n.args[1])):
            return None
        if n.op == "matmul":
            return (a.id, "matmul")
        c = nodes[n.args[2]]
        if dep[c.id] or c.dtype != "float":
            return None
        kind = "batched" if c.shape == n.shape else "vector" if c.shape == n.shape[1:] else None
        return (a.id, "gemm", kind) if kind else None

    groups: dict[tuple, list[int]] = {}
    for n in nodes:
        k = key(n)
        if k is not None:
            groups.setdefault(k, []).append(n.id)
    # per group: its products in column order, their columns, and the activation runs
    plans: dict[int, dict[str, Any]] = {}          # first product's id -> the group's plan
    role: dict[int, tuple[int, str]] = {}          # node id -> (first product's id, "product" | "act")
    for ids in groups.values():
        if len(ids) < 2:
            continue
        runs: dict[Any, list[int]] = {}             # activation key (or the product alone) -> products
        for i in ids:
            users = consumers.get(i, [])
            act = _elementwise_key(nodes[users[0]]) if len(users) == 1 and i not in used_outside else None
            runs.setdefault(act if act is not None else ("alone", i), []).append(i)
        if all(len(run) == 1 and nodes[run[0]].shape[1] >= SINK_MIN_WIDTH for run in runs.values()):
            continue    # sink-slices would split the merged product back into these very products
        order = [i for run in runs.values() for i in run]
        cols, lo = {}, 0
        for i in order:
            cols[i] = (lo, lo + nodes[i].shape[1])
            lo += nodes[i].shape[1]
        # each activation of a run of several -> its run (one activation node for all of them)
        acts = {consumers[i][0]: run for k, run in runs.items() if k[0] != "alone" and len(run) > 1 for i in run}
        first = min(ids)
        plans[first] = {"order": order, "cols": cols, "width": lo, "acts": acts,
                        "in_run": {i for run in acts.values() for i in run}}
        for i in ids:
            role[i] = (first, "product")
        for act in acts:
            role[act] = (first, "act")

    if not plans:
        return prog
    pw = ProgramWriter(prog)
    out, new_id, add = pw.nodes, pw.new_id, pw.add

    def node(op: str, args: tuple[int, ...], shape: tuple[int, ...], dtype: Any = "float", **attrs: Any) -> int:
        """A new node of any dtype (ProgramWriter.add makes float ones: a split is a "tuple")."""
        out.append(Node(len(out), op, args, tuple(sorted(attrs.items())), shape, dtype))
        return len(out) - 1

    def columns(i: int, lo: int, hi: int) -> int:
        """Columns lo:hi of the (new) value i along its last axis, i itself for all of them."""
        n = out[i]
        if (lo, hi) == (0, n.shape[-1]):
            return i
        index = tuple([("all",)] * (len(n.shape) - 1) + [("slice", lo, hi, 1)])
        return add("getitem", (i,), (*n.shape[:-1], hi - lo), index=index)

    def block(i: int) -> tuple[int, int, int]:
        """(source, lo, hi): new value i as columns lo:hi of a source, so that adjacent slices
        of one param join back into it (`kernel[:, :u]`, `kernel[:, u:2 * u]`)."""
        n = out[i]
        idx = n.attr("index") if n.op == "getitem" else None
        if idx and all(s == ("all",) for s in idx[:-1]) and idx[-1][0] == "slice" and idx[-1][3] == 1:
            return n.args[0], idx[-1][1], idx[-1][2]
        return i, 0, n.shape[-1]

    def cat(ids: list[int]) -> int:
        """The concatenation of new values along their last axis (the column axis)."""
        blocks: list[tuple[int, int, int]] = []
        for i in ids:
            src, lo, hi = block(i)
            if blocks and blocks[-1][0] == src and blocks[-1][2] == lo:
                blocks[-1] = (src, blocks[-1][1], hi)
            else:
                blocks.append((src, lo, hi))
        parts = [columns(src, lo, hi) for src, lo, hi in blocks]
        if len(parts) == 1:
            return parts[0]
        shape = out[parts[0]].shape
        axis = len(shape) - 1
        return add("concat", tuple(parts), (*shape[:-1], sum(out[p].shape[-1] for p in parts)), axis=axis)

    def joined(ids: list[int], owners: list[int]) -> int:
        """The column-concatenation of old state-free values `ids` (each read by `owners[k]`):
        products of one left operand that nothing else reads are rebuilt as one product over
        concatenated weights (the input projections: one MatMul for all steps), anything
        else is concatenated as it is."""
        ns = [nodes[i] for i in ids]
        n0 = ns[0]
        single = all(consumers.get(i) == [o] and i not in used_outside for i, o in zip(ids, owners))
        if single and n0.op in ("gemm", "matmul") and all(
                n.op == n0.op and n.args[0] == n0.args[0] and len(n.shape) == len(n0.shape) and weight(n.args[1])
                for n in ns):
            a, w = new_id[n0.args[0]], cat([new_id[n.args[1]] for n in ns])
            shape = (*n0.shape[:-1], out[w].shape[-1])
            if n0.op == "matmul":
                return add("matmul", (a, w), shape)
            cs = [nodes[n.args[2]] for n in ns]
            if all(c.shape == n.shape for c, n in zip(cs, ns)) or all(c.shape == n.shape[-1:] for c, n in zip(cs, ns)):
                c = joined([c.id for c in cs], ids)
                return add("gemm", (a, w, c), shape, c_shape=out[c].shape)
        return cat([new_id[i] for i in ids])

    def emit_product(plan: dict[str, Any]) -> None:
        order = plan["order"]
        g0 = nodes[order[0]]
        a, w = new_id[g0.args[0]], cat([new_id[nodes[i].args[1]] for i in order])
        shape = (B, plan["width"])
        if g0.op == "matmul":
            plan["z"] = add("matmul", (a, w), shape)
        else:
            c = joined([nodes[i].args[2] for i in order], order)
            plan["z"] = add("gemm", (a, w, c), shape, c_shape=out[c].shape)

    def emit_act(plan: dict[str, Any], act: Node) -> None:
        """One activation over the run's columns of z, split back into its gates."""
        run = plan["acts"][act.id]
        lo, hi = plan["cols"][run[0]][0], plan["cols"][run[-1]][1]
        y = add(act.op, (columns(plan["z"], lo, hi),), (B, hi - lo), **dict(act.attrs))
        sizes = tuple(nodes[i].shape[1] for i in run)
        s = node("split", (y,), (B, hi - lo), "tuple", axis=1, sizes=sizes)
        for k, i in enumerate(run):
            new_id[consumers[i][0]] = node("pick", (s,), (B, sizes[k]), index=k)

    # the sources and state-free nodes first (the weights, addends and projections a merged
    # product reads then come before it), then the step's own in their order: a merged product
    # takes the place of the first of its products, an activation run that of its first activation
    early = [n for n in nodes if not dep[n.id] or n.op in SOURCES]
    for n in early + [n for n in nodes if dep[n.id] and n.op not in SOURCES]:
        if n.id not in role:
            pw.keep(n)
            continue
        first, what = role[n.id]
        plan = plans[first]
        if what == "product":
            if n.id == first:
                emit_product(plan)
            if n.id not in plan["in_run"]:
                new_id[n.id] = columns(plan["z"], *plan["cols"][n.id])   # read as it is: its columns of z
        elif n.id not in new_id:
            emit_act(plan, n)
    return _pruned(pw.program())


def _pruned(prog: Program) -> Program:
    """prog without the nodes nothing reads (the products and projections merged away), so
    the passes after this one count only real consumers."""
    live = live_nodes(prog)
    pw = ProgramWriter(prog)
    for n in prog.nodes:
        if n.id in live or n.op in SOURCES:
            pw.keep(n)
    return pw.program()


class MergeProducts:
    name = "merge-products"
    after = ("reassociate-sums",)   # it merges the gemm nodes that pass makes; sink-slices comes after it

    def precondition(self, graph: Graph) -> str | None:
        return no_plans(graph) or not_hoisted(graph)

    def run(self, graph: Graph) -> PassResult:
        return map_custom_cells(graph, _cell)


def _cell(c: Cell) -> Cell:
    prog = merge(c.step_program)
    return c if prog is c.step_program else replace(c, lowered=prog)
