"""Split wide gate products by their column slices, so the time loop copies no gate block.

A custom cell's step typically computes all its gates with one product and then slices it:

    z = h @ recurrent_kernel + xp          # [B, 4u]: one gemm (reassociate.py)
    ifo = sigmoid(z[:, :3 * units])        # [B, 3u]  \\  two copies of a [B, 4u] tensor
    g = tanh(z[:, 3 * units:])             # [B, u]   /  at every step

A slice of a product is the product with the weights' columns sliced:
`(h @ R + c)[:, a:b] = h @ R[:, a:b] + c[:, a:b]`. This pass rewrites a state-dependent gemm
whose only consumers take column slices into one gemm per slice; the sliced weights are
constants, and `c` is sliced where it is made (a state-free `x @ kernel + bias` becomes one
projection per slice, still hoisted out of the loop). The result is exact: every output
element is the same dot product, in the same order.

Only wide gates pay: each gemm is a node of its own, and below SINK_MIN_WIDTH columns a
node costs more than the copy it saves (tools/bench.py; ONNX Runtime's CPU provider) -- except
where each slice is read by one activation that ONNX Runtime's CPU provider fuses into the Gemm
before it (GEMM_FUSED: sigmoid, tanh, relu, ...; its GemmActivationFusion makes one FusedGemm
of the pair). Then the split product is fewer kernels, not more: an LSTM's step

    Gemm, Split, Sigmoid, Split, Tanh, ...      (one product: 5 kernels before the cell update)
    Gemm, Sigmoid, Split, Gemm, Tanh, ...       (a product per activation: 3, two FusedGemms)

took 0.84-0.99x the one product's time (median 0.94; paired rounds, batch 64, time 28, units 64,
CPU, 2 threads: tools/bench.py lean). `gemm_activations` turns this on; the pipeline does for the
CPU provider (the CUDA provider has no such fusion, and one product is one kernel launch)."""
from __future__ import annotations

from dataclasses import replace

from ..cells.activations import GEMM_FUSED
from ..cells.lang import Node, Program, ProgramWriter, state_dependent
from ..ir.graph import Cell, Graph
from .manager import PassResult, map_custom_cells, no_plans, not_hoisted

SINK_MIN_WIDTH = 256       # columns per slice


def _column_slice(n: Node, width: int) -> tuple[int, int] | None:
    """(lo, hi) when getitem node `n` takes columns lo:hi of a [B, width] value, else None."""
    idx = n.attr("index")
    if n.op != "getitem" or len(idx) != 2 or idx[0] != ("all",) or idx[1][0] != "slice" or idx[1][3] != 1:
        return None
    lo, hi = idx[1][1], idx[1][2]
    return (lo, hi) if 0 <= lo < hi <= width else None


def sink(prog: Program, gemm_activations: bool = False) -> Program:
    nodes = prog.nodes
    dep = state_dependent(prog)
    consumers: dict[int, list[int]] = {}
    for n in nodes:
        for a in n.args:
            consumers.setdefault(a, []).append(n.id)
    used_outside = set(prog.outputs) | set(prog.next_states)

    def ranges(g: Node) -> dict[int, tuple[int, int]] | None:
        """consumer (or pick) id -> columns, when every use of g is a wide column slice."""
        width = g.shape[-1]
        if g.id in used_outside or len(g.shape) != 2:
            return None
        c = nodes[g.args[2]]
        if c.batched and consumers.get(c.id) != [g.id]:
            return None   # the step reads the full projection elsewhere too: slicing would compute it twice
        out: dict[int, tuple[int, int]] = {}
        for cid in consumers.get(g.id, []):
            c = nodes[cid]
            cols = _column_slice(c, width) if c.op == "getitem" else None
            if cols is not None:
                out[cid] = cols
            elif c.op == "split" and c.attr("axis") == 1 and cid not in used_outside:
                starts = [sum(c.attr("sizes")[:k]) for k in range(len(c.attr("sizes")))]
                for pid in consumers.get(cid, []):
                    k = nodes[pid].attr("index")
                    out[pid] = (starts[k], starts[k] + c.attr("sizes")[k])
            else:
                return None
        if not out:
            return None
        if min(hi - lo for lo, hi in out.values()) < SINK_MIN_WIDTH and not (
                gemm_activations and all(fused(cid) for cid in out)):
            return None
        return out

    def fused(cid: int) -> bool:
        """Is slice (or pick) `cid` read by one activation that fuses into its own Gemm?"""
        users = consumers.get(cid, [])
        return (cid not in used_outside and len(users) == 1 and nodes[users[0]].op == "act"
                and nodes[users[0]].attr("name") in GEMM_FUSED)

    targets = {n.id: r for n in nodes if n.op == "gemm" and dep[n.id] for r in [ranges(n)] if r}
    if not targets:
        return prog
    replaced = {cid: (g, cols) for g, r in targets.items() for cid, cols in r.items()}

    pw = ProgramWriter(prog)
    out, new_id, add = pw.nodes, pw.new_id, pw.add

    def cols(i: int, lo: int, hi: int, width: int) -> int:
        """Columns lo:hi of the (already emitted, state-free) value i: pushed into its
        producer where that is a product or an element-wise sum or product, so the slice
        falls on constants (the weights) rather than on a value computed every run."""
        n = out[i]
        if not n.shape or n.shape[-1] != width:          # broadcast along the columns: as is
            return i
        shape = (*n.shape[:-1], hi - lo)
        if n.op == "gemm":
            return gemm(n.args[0], cols(n.args[1], lo, hi, width), cols(n.args[2], lo, hi, width), shape)
        if n.op == "matmul" and len(out[n.args[1]].shape) == 2 and not out[n.args[1]].batched:
            return add("matmul", (n.args[0], cols(n.args[1], lo, hi, width)), shape)
        if n.op in ("add", "sub", "mul", "div"):
            return add(n.op, tuple(cols(a, lo, hi, width) for a in n.args), shape)
        index = tuple([("all",)] * (len(n.shape) - 1) + [("slice", lo, hi, 1)])
        return add("getitem", (i,), shape, index=index)

    def gemm(a: int, w: int, c: int, shape: tuple[int, ...]) -> int:
        return add("gemm", (a, w, c), shape, c_shape=out[c].shape)

    for n in nodes:
        if n.id in targets:
            continue                                      # its slices take its place
        if n.id in replaced:
            g, (lo, hi) = replaced[n.id]
            gn = nodes[g]
            a, w, c = (new_id[x] for x in gn.args)
            width = gn.shape[-1]
            new_id[n.id] = gemm(a, cols(w, lo, hi, width), cols(c, lo, hi, width), (gn.shape[0], hi - lo))
            continue
        if n.op == "split" and n.args[0] in targets:
            continue                                      # every pick is replaced
        pw.keep(n)
    return pw.program()


class SinkSlices:
    """gemm_activations: also split narrow products whose slices each feed an activation
    ONNX Runtime's CPU provider fuses into the Gemm (see the module's docstring)."""

    name = "sink-slices"
    after = ("reassociate-sums", "merge-products")   # it slices the products those passes have gathered

    def __init__(self, gemm_activations: bool = False):
        self.gemm_activations = gemm_activations

    def precondition(self, graph: Graph) -> str | None:
        return no_plans(graph) or not_hoisted(graph)

    def run(self, graph: Graph) -> PassResult:
        return map_custom_cells(graph, lambda c: _cell(c, self.gemm_activations))


def _cell(c: Cell, gemm_activations: bool) -> Cell:
    prog = c.step_program
    while True:     # to a fixed point: a slice of a slice sinks in turn
        nxt = sink(prog, gemm_activations)
        if nxt is prog:
            break
        prog = nxt
    return c if prog is c.step_program else replace(c, lowered=prog)
