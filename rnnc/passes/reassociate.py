"""Regroup sums in custom cells so that more of the step can leave the time loop.

A step such as `h = tanh(x @ kernel + h @ recurrent_kernel + bias)` parses as
((x @ kernel) + (h @ recurrent_kernel)) + bias: only `x @ kernel` is free of the state, and
`+ bias` would run inside the loop at every step. This pass flattens each tree of additions
(through intermediate sums used nowhere else) and rebuilds it as

    (h @ recurrent_kernel)  +  (x @ kernel + bias)         state part + state-free part

so the hoisting pass lifts the whole state-free part out of the loop; where the state part is
a single 2-D product `a @ W`, the sum becomes one `gemm` node (a @ W + c: ONNX Gemm), and so
does the state-free `x @ kernel + bias` (computed for all steps at once, with the bias folded
into the product).
Regrouping a floating-point sum changes its rounding (by an ulp or so), never its value."""
from __future__ import annotations

from dataclasses import replace

from ..cells.lang import Program, ProgramWriter, broadcast, state_dependent
from ..ir.graph import Cell, Graph
from .manager import PassResult, map_custom_cells, no_plans, not_hoisted


def _consumers(prog: Program) -> list[int]:
    count = [0] * len(prog.nodes)
    for n in prog.nodes:
        for a in n.args:
            count[a] += 1
    for i in (*prog.outputs, *prog.next_states):
        count[i] += 1
    return count


def reassociate(prog: Program) -> Program:
    dep = state_dependent(prog)
    uses = _consumers(prog)
    nodes = prog.nodes
    parent_add = set()          # adds that fold into the add consuming them
    for n in nodes:
        if n.op == "add":
            for a in n.args:
                if nodes[a].op == "add" and uses[a] == 1:
                    parent_add.add(a)

    def terms(i: int, top: bool = False) -> list[int]:
        n = nodes[i]
        if n.op == "add" and (top or i in parent_add):
            return [t for a in n.args for t in terms(a)]
        return [i]

    pw = ProgramWriter(prog)
    out, new_id, add = pw.nodes, pw.new_id, pw.add

    def fold(ids: list[int]) -> int:
        acc = ids[0]
        for t in ids[1:]:
            shape = broadcast(out[acc].shape, out[t].shape)
            assert shape is not None, "the terms of one sum broadcast together (the parser checked them)"
            acc = add("add", (acc, t), shape)
        return acc

    def product(i: int) -> bool:
        """Is out[i] a 2-D product a @ W, a [B, k] per step, W [k, n] (Gemm's form)?"""
        m = out[i]
        if m.op != "matmul":
            return False
        a, w = out[m.args[0]], out[m.args[1]]
        return len(a.shape) == 2 and a.batched and len(w.shape) == 2 and not w.batched

    def gemm(mm: int, c: int) -> int | None:
        """a @ W + c as one gemm node, where c broadcasts to the product's shape."""
        m = out[mm]
        if broadcast(out[c].shape, m.shape) != m.shape:
            return None
        return add("gemm", (m.args[0], m.args[1], c), m.shape, c_shape=out[c].shape)

    def fold_free(ids: list[int]) -> int:
        """The state-free terms; x @ kernel + bias becomes one gemm (for all steps at once, the
        bias then folds into the product)."""
        for t in ids:
            if product(t) and len(ids) > 1:
                g = gemm(t, fold([u for u in ids if u != t]))
                if g is not None:
                    return g
        return fold(ids)

    for n in nodes:
        if n.op == "add" and n.id not in parent_add and n.dtype == "float":
            ts = terms(n.id, top=True)
            free = [new_id[t] for t in ts if not dep[t]]
            stateful = [new_id[t] for t in ts if dep[t]]
            if free and (stateful or len(free) > 1):
                f = fold_free(free)
                if not stateful:
                    new_id[n.id] = f
                else:
                    s = gemm(stateful[0], f) if product(stateful[0]) else None    # a @ W + free
                    if s is not None:
                        new_id[n.id] = fold([s, *stateful[1:]]) if stateful[1:] else s
                    else:
                        new_id[n.id] = add("add", (fold(stateful), f), n.shape)
                if out[new_id[n.id]].shape != n.shape:   # never expected: keep the original
                    raise AssertionError("reassociation changed a shape")
                continue
        pw.keep(n)
    return pw.program()


class ReassociateSums:
    name = "reassociate-sums"
    after: tuple[str, ...] = ()

    def precondition(self, graph: Graph) -> str | None:
        return no_plans(graph) or not_hoisted(graph)

    def run(self, graph: Graph) -> PassResult:
        return map_custom_cells(graph, _cell)


def _cell(c: Cell) -> Cell:
    """The regrouped step goes to `lowered`; `program` stays as parsed, for the reference."""
    prog = reassociate(c.program)
    return c if prog is c.program else replace(c, lowered=prog)
