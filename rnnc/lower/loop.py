"""Time-loop lowering: a recurrent layer's cells → an ONNX Scan (by default; a Loop, the
reference form, with control="loop" or where the step reads no input) over time, whose body is
built from the cell equations (rnnc/cells/: built-in cells' equations, or a custom cell's step
as the passes left it), the same equations the reference interpreter runs.

What depends on the step input only is hoisted out of the loop and computed for all steps at
once (built-in cells: x @ W + b, one MatMul with the bias folded in; custom cells: the nodes the
hoisting pass marked); the body does only the recurrent part. Masks are exact: at a masked step
the states keep their values and the outputs repeat the previous ones (or are zero, with
zero_output_for_mask, which Bidirectional sets with return_sequences), as Keras does. `unroll`
emits the same body once per step."""
from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper

from ..cells.builtin import CELLS
from ..cells.lang import evaluate, live_nodes
from ..emit.builder import GraphBuilder
from ..errors import InternalError
from ..ir.graph import Cell, Layer
from . import activations, cellops, int8
from .context import LowerCtx


class OnnxOps:
    """The built-in cells' op interface (see rnnc/cells/builtin.py) emitting ONNX nodes."""

    def __init__(self, b: GraphBuilder, params: dict[str, str], lead: int = 0, q: int8.Int8 | None = None):
        self.b, self.params, self.lead = b, params, lead    # lead: leading axes before [B, ...]
        self.q = q                                          # int8 matmuls (--quantize int8), or None

    def param(self, name: str) -> str:
        return self.params[name]

    def has(self, name: str) -> bool:
        return name in self.params

    def affine(self, x: str, w: str, c: str | None) -> str:
        return int8.maybe(self.q, self.b, x, w, c) or cellops.affine(self.b, x, w, c, lead=self.lead)

    def matmul(self, a: str, w: str) -> str:
        return int8.maybe(self.q, self.b, a, w) or self.b.op("MatMul", [a, w])

    def matmul_add(self, a: str, w: str, c: str) -> str:
        # one Gemm instead of MatMul + Add: one pass less over [B, G*u] per step
        return int8.maybe(self.q, self.b, a, w, c) or self.b.op("Gemm", [a, w, c])

    def add(self, a: str, c: str) -> str:
        return self.b.op("Add", [a, c])

    def sub(self, a: str, c: str) -> str:
        return self.b.op("Sub", [a, c])

    def mul(self, a: str, c: str) -> str:
        return self.b.op("Mul", [a, c])

    def one_minus(self, a: str) -> str:
        return self.b.op("Sub", [self.b.const(np.float32(1.0), dtype="float32"), a])

    def act(self, name: str, x: str) -> str:
        return activations.emit(self.b, name, x)

    def split(self, x: str, n: Any, axis: int = -1) -> list[str]:
        if isinstance(n, int):
            return self.b.op("Split", [x], outputs=n, axis=axis, num_outputs=n)
        return self.b.op("Split", [x, self.b.const(list(n))], outputs=len(n), axis=axis)

    def split_channels(self, x: str, n: Any) -> list[str]:
        return self.split(x, n, axis=self.lead + 1)      # channels-first: [lead..., B, C, ...]

    def conv(self, x: str, w: str, c: str | None, strides: tuple, dilation: tuple, pads: tuple,
             from_input: bool) -> str:
        """ONNX Conv, channels-first. A step input (channels_last, [lead..., B, *n, C]) is
        transposed first, its lead axes folded into the batch and unfolded after."""
        b, lead, n = self.b, self.lead, len(strides)
        if from_input:
            x = b.op("Transpose", [x], perm=[*range(lead + 1), lead + n + 1, *range(lead + 1, lead + n + 1)],
                     name="ToChannelsFirst")
        shape = b.op("Shape", [x]) if from_input and lead else None
        if shape is not None:      # [lead..., B, C, *n] -> [lead * B, C, *n]
            x = b.op("Reshape", [x, b.op("Concat", [b.const([-1]), b.op("Slice", [shape, b.const([lead + 1]),
                                                                            b.const([lead + n + 2])])], axis=0)])
        y = b.op("Conv", [x, w] + ([c] if c is not None else []), strides=list(strides), dilations=list(dilation),
                 pads=[p[0] for p in pads] + [p[1] for p in pads])     # kernel_shape: W's
        if shape is not None:      # back to [lead..., B, C', *n']
            y = b.op("Reshape", [y, b.op("Concat", [b.op("Slice", [shape, b.const([0]), b.const([lead + 1])]),
                                                    b.op("Slice", [b.op("Shape", [y]), b.const([1]),
                                                                   b.const([n + 2])])], axis=0)])
        return y


class Runner:
    """One cell in the Loop: `project` (the hoistable part, on inputs with `lead` leading
    axes) and `step` (the recurrent part, per time step)."""

    def __init__(self, ctx: LowerCtx, layer_key: str, cell: Cell):
        # what the hoisting pass marked (nothing when it was left out of the pipeline)
        self.cell, self.hoist = cell, cell.project_hoisted
        self.q = int8.options(ctx)             # --quantize int8: kernels multiplied in int8
        raw = {k: ctx.w(layer_key, cell.prefix + k) for k in cell.params}
        tag = cell.prefix.replace("/", "_")
        if cell.custom:
            self.params = {k: ctx.b.initializer(f"{tag}{k}", v.astype(np.float32)) for k, v in raw.items()}
            prog = cell.step_program
            hoisted = cell.hoisted
            # the values the body needs from outside: hoisted nodes (or inputs) read by the rest
            live = live_nodes(prog)
            body = [n for n in prog.nodes if n.id in live and n.id not in hoisted and n.op not in ("input", "param")]
            reads = {a for n in body for a in n.args} | set(prog.outputs) | set(prog.next_states)
            self.frontier = [n.id for n in prog.nodes if n.id in reads and (n.id in hoisted or n.op == "input")]
        else:
            cdef = CELLS[cell.kind]
            prepared = cdef.prepare({k: v.astype(np.float64) for k, v in raw.items()}, cell.units, cell.config)
            self.params = {k: ctx.b.initializer(f"{tag}{k}", v.astype(np.float32)) for k, v in prepared.items()}
            raw = prepared
        if self.q is not None:
            for k, v in raw.items():
                self.q.register(self.params[k], np.asarray(v, dtype=np.float32))
        self.splits = tiling_slices(cell.step_program) if cell.custom else {}
        self.split_memo: dict[tuple[int, str, int], list[str]] = {}   # (builder, value, axis) -> its Split

    def _emit(self, b: GraphBuilder, lead: int) -> Any:
        """A custom cell's step emitter: matmul/gemm by a kernel param in int8 (--quantize int8);
        slices that tile a value's axis as one Split (tiling_slices)."""
        def emit(n: Any, a: list[Any]) -> Any:
            if n.id in self.splits:
                axis, sizes, k = self.splits[n.id]
                key = (id(b), a[0], axis)
                parts = self.split_memo.get(key)
                if parts is None:    # one Split per value and axis, however many slices read it
                    parts = b.op("Split", [a[0], b.const(list(sizes))], outputs=len(sizes), axis=axis + lead)
                    self.split_memo[key] = parts
                return parts[k]
            if self.q is not None and n.op in ("matmul", "gemm") and len(a) >= 2 and isinstance(a[1], str):
                y = int8.maybe(self.q, b, a[0], a[1], a[2] if n.op == "gemm" else None)
                if y is not None:
                    return y
            y = cellops.emit(b, n, a, lead)
            if self.q is not None and n.op == "getitem" and not n.batched and isinstance(y, str):
                self.q.register_slice(y, a[0], n.attr("index"))    # a gate block of a kernel
            return y
        return emit

    def project(self, b: GraphBuilder, xs: list[str], lead: int) -> list[tuple[str, bool]]:
        """(value, per_step) pairs: per-step values are indexed by t inside the Loop."""
        c = self.cell
        if not c.custom:
            cdef = CELLS[c.kind]
            if not self.hoist:     # the step projects (once per step, in the body)
                return [(xs[0], True)]
            return [(cdef.project(OnnxOps(b, self.params, lead, self.q), xs[0], c.units, c.config), True)]
        prog = c.step_program
        seed: dict[int, Any] = {i: x for (_, i), x in zip(prog.inputs, xs)}
        seed.update({i: self.params[n] for n, i in prog.params})
        vals = evaluate(prog, self._emit(b, lead), seed, self.frontier)
        return [(v, prog.nodes[i].batched) for i, v in zip(self.frontier, vals)]

    def step(self, b: GraphBuilder, projected: list[str], states: list[str]) -> tuple[list[str], list[str]]:
        c = self.cell
        if not c.custom:
            cdef = CELLS[c.kind]
            ops = OnnxOps(b, self.params, q=self.q)
            xp = projected[0] if self.hoist else cdef.project(ops, projected[0], c.units, c.config)
            h, ns = cdef.step(ops, xp, tuple(states), c.units, c.config)
            return [h], list(ns)
        prog = c.step_program
        seed: dict[int, Any] = dict(zip(self.frontier, projected))
        seed.update({i: s for (_, i), s in zip(prog.states, states)})
        seed.update({i: self.params[n] for n, i in prog.params})
        vals = evaluate(prog, self._emit(b, 0), seed, [*prog.outputs, *prog.next_states])
        k = len(prog.outputs)
        return [_fresh_if_shared(b, v, seed) for v in vals[:k]], [_fresh_if_shared(b, v, seed) for v in vals[k:]]


def tiling_slices(prog: Any) -> dict[int, tuple[int, tuple[int, ...], int]]:
    """Column slices of one batched value that together tile one of its axes (`z[:, :3 * u]`
    and `z[:, 3 * u:]`): node id -> (axis, the parts' sizes, its part), so that they are one
    Split instead of a Slice each."""
    groups: dict[tuple[int, int], list[tuple[int, int, int]]] = {}
    for n in prog.nodes:
        if n.op != "getitem" or not n.batched:
            continue
        index = n.attr("index")
        cut = [i for i, s in enumerate(index) if s[0] != "all"]
        if len(cut) != 1 or index[cut[0]][0] != "slice" or index[cut[0]][3] != 1:
            continue
        _, start, stop, _ = index[cut[0]]
        groups.setdefault((n.args[0], cut[0]), []).append((start, stop, n.id))
    out: dict[int, tuple[int, tuple[int, ...], int]] = {}
    for (arg, axis), parts in groups.items():
        parts.sort()
        dim = prog.nodes[arg].shape[axis]
        edges = [p[0] for p in parts] + [parts[-1][1]]
        if len(parts) < 2 or edges[0] != 0 or edges[-1] != dim or any(a[1] != b[0] for a, b in zip(parts, parts[1:])):
            continue
        sizes = tuple(p[1] - p[0] for p in parts)
        for k, (_, _, nid) in enumerate(parts):
            out[nid] = (axis, sizes, k)
    return out


def _fresh_if_shared(b: GraphBuilder, v: str, seed: dict) -> str:
    """A body output must be a value the body computes: ONNX Runtime's Scan silently returns
    wrong values for a body input passed through as an output."""
    return b.op("Identity", [v]) if v in seed.values() else v


def _steps(b: GraphBuilder, runners: list[Runner], projected: list[str], states: list[str]
           ) -> tuple[list[str], list[str]]:
    """One time step through the stacked cells."""
    new: list[str] = []
    outs: list[str] = []
    si = 0
    for i, r in enumerate(runners):
        n = len(r.cell.states)
        inp = projected if i == 0 else [v for v, _ in r.project(b, outs, 0)]
        outs, ns = r.step(b, inp, states[si:si + n])
        new += ns
        si += n
    return outs, new


def _zeros(b: GraphBuilder, batch: str, shape: tuple[int, ...]) -> str:
    dims = b.op("Concat", [batch, b.const(list(shape))], axis=0) if shape else batch
    return b.op("ConstantOfShape", [dims], value=helper.make_tensor("zero", TensorProto.FLOAT, [1], [0.0]), name="zeros")


def _keep(b: GraphBuilder, m: str, new: str, old: str, rank: int, cache: dict[int, str]) -> str:
    """where(mask, new, old) with the [B] mask broadcast over a value of `rank` axes."""
    if rank not in cache:
        cache[rank] = b.op("Unsqueeze", [m, b.const(list(range(1, rank)))], name="m_t") if rank > 1 else m
    return b.op("Where", [cache[rank], new, old])


def _masked_output(b: GraphBuilder, m: str, new: str, prev: str, zero_output: bool, rank: int,
                   cache: dict[int, str]) -> str:
    """A step's output under the mask: the new output, else the previous one, or zero with
    zero_output (selected, never computed as new * 0, which is NaN where new is inf)."""
    return _keep(b, m, new, b.const(np.float32(0.0), dtype="float32") if zero_output else prev, rank, cache)


def _distinct(b: GraphBuilder, names: list[str]) -> list[str]:
    """A graph's outputs each under their own name: a value listed twice (two states with the
    same next value, an output that is also a state) goes out the second time through an
    Identity: ONNX Runtime's Scan writes a repeated output name to one of its outputs only (the
    other, a final state, is left uninitialized memory), though ONNX allows the repeat."""
    out: list[str] = []
    for n in names:
        out.append(b.op("Identity", [n], name="y_t") if n in out else n)
    return out


def run_cells(ctx: LowerCtx, layer: Layer, layer_key: str, Xs: list[str], *, init: list[str] | None,
              mask: str | None, need_seq: bool, time_loop: str | None, unroll: int | None = None
              ) -> tuple[list[str] | None, list[str], list[str]]:
    """Run the (half-)layer's cells over Xs (each [T, B, ...], input order) in Keras's
    processing order, as the plan says: a time loop of op `time_loop` ("scan" or "loop"), or
    `unroll` steps. mask: [T, B] bool in input order, or None. Masked steps follow
    layer.recurrence. Returns (sequences [T, B, ...] in processing order or None, final
    states, last outputs; with need_seq, a last output that is no state's final value is None)."""
    b = ctx.b
    cells = list(layer.cells)
    rec = layer.recurrence
    assert rec is not None
    zero_output = rec.zero_output_for_mask
    if rec.go_backwards:
        Xs = [ctx.reverse(X, 0) for X in Xs]
        mask = ctx.reverse(mask, 0) if mask is not None else None
    runners = [Runner(ctx, layer_key, c) for c in cells]
    projected = runners[0].project(b, Xs, lead=1)        # hoisted: for every step at once
    batch = b.op("Slice", [b.op("Shape", [Xs[0]]), b.const([1]), b.const([2])], name="batch")   # [1]
    # the body's layout (a ConvLSTM's: channels-first, transposed here and after the loop only)
    perms = [_loop_perm(c, len(s)) for c in cells for _, s in c.states]
    states0 = ([_relayout(ctx, v, p, 1) for v, p in zip(init, perms)] if init else
               [_zeros(b, batch, _permuted(s, _loop_perm(c, len(s)))) for c in cells for _, s in c.states])
    state_ranks = [1 + len(s) for c in cells for _, s in c.states]
    out_perms = [_loop_perm(cells[-1], len(s)) for s in cells[-1].output_shapes]
    out_shapes = [_permuted(s, p) for s, p in zip(cells[-1].output_shapes, out_perms)]
    out_state = output_states(cells, len(states0))
    # the previous outputs ride along as loop state when a mask may repeat them, or when the
    # last output is asked for and is no state's final value
    carry = mask is not None or (not need_seq and None in out_state)
    prev0 = [_zeros(b, batch, s) for s in out_shapes] if carry else []
    if unroll is not None:
        return _back(ctx, perms, out_perms, *_unrolled(ctx, runners, projected, mask, states0, prev0, state_ranks,
                                                       out_shapes, need_seq, zero_output, unroll))

    body = GraphBuilder(parent=b)
    scanned = [v for v, per_step in projected if per_step] + ([mask] if mask is not None else [])
    # the reference form is a Loop; a Scan reads row t without a Gather, but needs a tensor to
    # scan (the plan's time loop is a Loop where the step reads no input)
    scan = time_loop == "scan"
    if scan and not scanned:
        raise InternalError(f"layer {layer_key!r}: a Scan over a step that reads no input or mask")
    it, cond_in = body.fresh("t"), body.fresh("cond_in")
    s_in = [body.fresh(f"state{i}_in") for i in range(len(states0))]
    p_in = [body.fresh(f"prev{i}_in") for i in range(len(prev0))]
    if scan:   # Scan hands the body each scanned tensor's row t
        rows = {v: body.fresh("x_t") for v in scanned}
        step_vals = [rows[v] if per_step else v for v, per_step in projected]
    else:      # Loop: the body reads row t itself
        step_vals = [body.op("Gather", [v, it], axis=0, name="x_t") if per_step else v for v, per_step in projected]
    outs, new = _steps(body, runners, step_vals, s_in)
    if mask is not None:
        m = rows[mask] if scan else body.op("Gather", [mask, it], axis=0, name="mask_t")   # [B]
        cache: dict[int, str] = {}
        # masked step: keep the states; repeat the previous outputs (zeros for zero_output)
        new = [_keep(body, m, n, s, r, cache) for n, s, r in zip(new, s_in, state_ranks)]
        outs = [_masked_output(body, m, o, p, zero_output, 1 + len(shape), cache)
                for o, p, shape in zip(outs, p_in, out_shapes)]
    # Loop's scan outputs: ONNX Runtime stacks the per-step [B, ...] values into [T, B, ...]
    # while onnx.reference concatenates them into [T * B, ...]: the same data in the same order,
    # so one Reshape after the Loop gives [T, B, ...] on both.
    body_outs = ([] if scan else [cond_in]) + _distinct(body, [*new, *(outs if carry else []),
                                                               *(outs if need_seq else [])])
    f32 = TensorProto.FLOAT

    def vi(n: str, t: int = f32) -> onnx.ValueInfoProto:
        return helper.make_tensor_value_info(n, t, None)

    if scan:
        g = helper.make_graph(body.nodes, f"{b.scope}_body",
                              [vi(x) for x in (*s_in, *p_in)] + [vi(rows[v], TensorProto.BOOL if v == mask else f32)
                                                                 for v in scanned],
                              [vi(x) for x in body_outs], initializer=body.initializers)
        res = b.op("Scan", [*states0, *prev0, *scanned], outputs=len(body_outs), body=g,
                   num_scan_inputs=len(scanned), name="Scan")
    else:
        g = helper.make_graph(
            body.nodes, f"{b.scope}_body",
            [helper.make_tensor_value_info(it, TensorProto.INT64, []),
             helper.make_tensor_value_info(cond_in, TensorProto.BOOL, []), *[vi(x) for x in (*s_in, *p_in)]],
            [helper.make_tensor_value_info(body_outs[0], TensorProto.BOOL, []), *[vi(x) for x in body_outs[1:]]],
            initializer=body.initializers)
        # Trip count from the input's shape (never from data): T = Shape(X)[0]. The condition is
        # an explicit true (onnx.reference does not run a Loop whose condition is omitted).
        trip = b.op("Squeeze", [b.op("Slice", [b.op("Shape", [Xs[0]]), b.const([0]), b.const([1])], name="T"),
                                b.const([0])], name="trip_count")
        res = b.op("Loop", [trip, b.const(True, dtype="bool"), *states0, *prev0], outputs=len(body_outs) - 1,
                   body=g, name="Loop")
    res = [res] if isinstance(res, str) else res
    final = res[:len(states0)]
    seqs = None
    if need_seq:
        flat = res[len(states0) + len(prev0):]
        seqs = [b.op("Reshape", [f, b.op("Concat", [b.const([-1]), batch, b.const(list(shape))], axis=0)], name="seq")
                for f, shape in zip(flat, out_shapes)]
    if carry:
        lasts = res[len(states0):len(states0) + len(prev0)]
    else:   # a state's final value (None: not asked for, as the sequence is returned)
        lasts = [final[j] if j is not None else None for j in out_state]
    return _back(ctx, perms, out_perms, seqs, final, lasts)


def _loop_perm(cell: Cell, rank: int) -> list[int] | None:
    """The body's axes of a per-example value of `rank` axes, as Keras's axes (None: Keras's
    layout): a channels-first cell's (C, *spatial) for Keras's (*spatial, C)."""
    if cell.custom or not CELLS[cell.kind].channels_first or rank < 2:
        return None
    return [rank - 1, *range(rank - 1)]


def _permuted(shape: tuple[int, ...], perm: list[int] | None) -> tuple[int, ...]:
    return shape if perm is None else tuple(shape[i] for i in perm)


def _relayout(ctx: LowerCtx, v: str | None, perm: list[int] | None, lead: int, back: bool = False) -> str | None:
    """v ([lead axes..., per-example axes]) into the body's layout, or back from it."""
    if v is None or perm is None:
        return v
    p = [int(i) for i in np.argsort(perm)] if back else perm
    return ctx.transpose(v, [*range(lead), *(lead + i for i in p)], name="FromLoopLayout" if back else "ToLoopLayout")


def _back(ctx: LowerCtx, perms: list, out_perms: list, seqs: list[str] | None, final: list[str],
          lasts: list[str]) -> tuple[list[str] | None, list[str], list[str]]:
    """run_cells' results back in Keras's layout: sequences [T, B, ...], states and outputs [B, ...]."""
    if not any(perms) and not any(out_perms):
        return seqs, final, lasts
    seqs = None if seqs is None else [_relayout(ctx, v, p, 2, True) for v, p in zip(seqs, out_perms)]
    return seqs, [_relayout(ctx, v, p, 1, True) for v, p in zip(final, perms)], \
        [_relayout(ctx, v, p, 1, True) for v, p in zip(lasts, out_perms)]


def output_states(cells: list[Cell], n_states: int) -> list[int | None]:
    """Per output of the last of the stacked cells, the index (among all n_states states) of
    the state whose next value it is, or None. A built-in cell's output is its first state (h)."""
    last = cells[-1]
    base = n_states - len(last.states)
    if not last.custom:
        return [base]
    prog = last.step_program
    return [base + prog.next_states.index(o) if o in prog.next_states else None for o in prog.outputs]


def _unrolled(ctx: LowerCtx, runners: list[Runner], projected: list[tuple[str, bool]], mask: str | None,
              states: list[str], prev: list[str], state_ranks: list[int], out_shapes: list[tuple[int, ...]],
              need_seq: bool, zero_output: bool, steps: int) -> tuple[list[str] | None, list[str], list[str]]:
    b = ctx.b

    def per_step(v: str) -> list[str]:
        parts = b.op("Split", [v], outputs=steps, axis=0, num_outputs=steps) if steps > 1 else [v]
        return [ctx.squeeze(p, 0) for p in parts]

    split = [per_step(v) if ps else [v] * steps for v, ps in projected]
    masks = per_step(mask) if mask is not None else None
    ys: list[list[str]] = [[] for _ in out_shapes]
    outs = prev
    for t in range(steps):
        o, new = _steps(b, runners, [s[t] for s in split], states)
        if masks is not None:
            cache: dict[int, str] = {}
            new = [_keep(b, masks[t], n, s, r, cache) for n, s, r in zip(new, states, state_ranks)]
            o = [_masked_output(b, masks[t], x, p, zero_output, 1 + len(shape), cache)
                 for x, p, shape in zip(o, outs, out_shapes)]
        states, outs = new, o
        for k, x in enumerate(o):
            ys[k].append(ctx.unsqueeze(x, 0))
    seqs = [b.op("Concat", y, axis=0) if len(y) > 1 else y[0] for y in ys] if need_seq else None
    return seqs, states, outs
