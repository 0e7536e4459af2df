"""Lowering rules of the recurrent layers (SimpleRNN, GRU, LSTM, RNN, Bidirectional) for the
strategies native, loop and unroll. Each rule does what the layer's plan (rnnc/ir/plan.py) and
its Recurrence (rnnc/ir/graph.py: go_backwards, zero_output_for_mask, the backward half's
flip) say; running the cells is native.py's or loop.py's.

Masks with the native op (docs/semantics.md, "Masks and lengths"): whether a mask is
right-padded is decided per batch at run time. An `If` runs the native op with sequence_lens
when every row is right-padded and non-empty, and the exact time loop otherwise."""
from __future__ import annotations

from dataclasses import replace
from typing import Callable

import numpy as np
from onnx import TensorProto, helper

from ..emit.builder import GraphBuilder
from ..errors import InternalError
from ..ir.graph import Layer, Recurrence
from ..ir.plan import Plan
from . import loop, native
from .context import LowerCtx, Lowered
from .registry import register

Run = tuple["list[str] | None", list[str], list[str]]   # (sequences [T, B, ...] in processing order, states, last outputs)


def _loop_supports(layer: Layer, target: str) -> str | None:
    return None


def _unroll_supports(layer: Layer, target: str) -> str | None:
    t = layer_time(layer)
    if t is None:
        return "unroll needs a fixed time length in the input shape"
    return None


def layer_time(layer: Layer) -> int | None:
    return layer.time if isinstance(layer.time, int) else None


def run(ctx: LowerCtx, layer: Layer, key: str, Xs: list[str], *, init: list[str] | None, mask: str | None,
        need_seq: bool, plan: Plan) -> Run:
    """Run one recurrent (half-)layer over Xs (each [T, B, ...]) as `plan` says (the plan of
    the layer, or of the Bidirectional the half is in); mask is [B, T] bool or None."""
    if plan.strategy in ("loop", "unroll"):
        mask_tb = ctx.transpose(mask, [1, 0]) if mask is not None else None
        return loop.run_cells(ctx, layer, key, Xs, init=init, mask=mask_tb, need_seq=need_seq,
                              time_loop=plan.time_loop, unroll=plan.unroll_steps)
    if mask is None:
        return _native(ctx, layer, key, Xs[0], init=init, need_seq=need_seq)
    return _native_masked(ctx, layer, key, Xs[0], init=init, mask=mask, need_seq=need_seq, plan=plan)


def _native(ctx: LowerCtx, layer: Layer, key: str, X: str, *, init: list[str] | None, need_seq: bool,
            seq_lens: str = "") -> Run:
    Y, states = native.run_cells(ctx, layer, key, X, init=init, seq_lens=seq_lens, need_seq=need_seq)
    if Y is not None and _rec(layer).go_backwards:
        Y = ctx.reverse(Y, 0)    # ONNX `reverse` returns input order; Keras returns processing order
    cells = list(layer.cells)
    return ([Y] if Y is not None else None), states, [states[j] for j in loop.output_states(cells, len(states))]


def right_padded(ctx: LowerCtx, mask: str) -> str:
    """Per batch, at run time: is every row's mask right-padded and non-empty? (a bool scalar)
    With m the mask as uint8 [B, T]: d = [2, m] - [m, 0] (each row padded, [B, T + 1]) is
    2 - m[0], then m[t-1] - m[t], then m[T-1]: all of them are 0 or 1 exactly when the first
    step is set and the mask never rises again (uint8: a rise wraps to 255), so the test is
    max(d) < 2. Six nodes; the lengths are computed in the branch that reads them (lengths)."""
    b = ctx.b
    u8 = b.op("Cast", [mask], to=TensorProto.UINT8)                                     # [B, T]
    two, zero = b.const(2, dtype="uint8"), b.const(0, dtype="uint8")
    before = b.op("Pad", [u8, b.const([0, 1, 0, 0]), two], name="mask_prev")            # [2, m]
    after = b.op("Pad", [u8, b.const([0, 0, 0, 1]), zero], name="mask_next")            # [m, 0]
    d = b.op("Sub", [before, after])
    return b.op("Less", [b.op("ReduceMax", [d], keepdims=0), two], name="right_padded")


def lengths(ctx: LowerCtx, mask: str) -> str:
    """lens[b] = sum_t mask[b, t], [B] int32 (the native ops' sequence_lens)."""
    b = ctx.b
    return b.op("ReduceSum", [b.op("Cast", [mask], to=TensorProto.INT32), b.const([1])], keepdims=0, name="lens")


def _native_masked(ctx: LowerCtx, layer: Layer, key: str, X: str, *, init: list[str] | None, mask: str,
                   need_seq: bool, plan: Plan) -> Run:
    cond = right_padded(ctx, mask)
    backwards, zero_output = _rec(layer).go_backwards, _rec(layer).zero_output_for_mask

    def fast() -> list[str]:
        b = ctx.b   # the branch's builder
        lens = lengths(ctx, mask)
        Ys, states, last = _native(ctx, layer, key, X, init=init, need_seq=need_seq, seq_lens=lens)
        Y = Ys[0] if Ys else None
        T = b.op("Gather", [b.op("Shape", [mask]), b.const(1)], axis=0, name="T") \
            if not backwards and (Y is not None or zero_output) else None
        if Y is not None and not backwards and not zero_output:
            # ONNX writes zeros past each length; Keras repeats the last output:
            # Y'[t, b] = Y[min(t, lens[b] - 1), b]
            steps = b.op("Range", [b.const(0), T, b.const(1)], name="steps")              # [T] int64
            last_t = b.op("Sub", [b.op("Cast", [lens], to=TensorProto.INT64), b.const(1)])
            idx = b.op("Min", [b.op("Unsqueeze", [steps, b.const([1])]),
                               b.op("Unsqueeze", [last_t, b.const([0])])])            # [T, B]
            idx = b.op("Expand", [b.op("Unsqueeze", [idx, b.const([2])]), b.op("Shape", [Y])])
            Y = b.op("GatherElements", [Y, idx], axis=0, name="repeat_last")
        if zero_output and not need_seq and not backwards:
            # zero_output_for_mask: Keras's last output is zero where the last step is masked
            full = b.op("Equal", [lens, b.op("Cast", [T], to=TensorProto.INT32)])     # [B]
            zero = b.const(np.float32(0.0), dtype="float32")
            last = [b.op("Where", [b.op("Unsqueeze", [full, b.const([1])]), v, zero], name="zero_last") for v in last]
        return ([Y] if Y is not None else []) + states + last

    def exact() -> list[str]:
        Ys, states, last = loop.run_cells(ctx, layer, key, [X], init=init, mask=ctx.transpose(mask, [1, 0]),
                                          need_seq=need_seq, time_loop=plan.time_loop)
        return (Ys or []) + states + last

    outs = if_node(ctx, cond, fast, exact, name="If_right_padded")
    Y = outs[:1] if need_seq else None
    rest = outs[1:] if need_seq else outs
    return Y, rest[:-1], rest[-1:]


def if_node(ctx: LowerCtx, cond: str, then: Callable[[], list[str]], other: Callable[[], list[str]],
            *, name: str) -> list[str]:
    """An ONNX If whose branches are emitted by `then` and `other` into subgraphs."""
    graphs = []
    n = None
    for label, fn in (("then", then), ("else", other)):
        outer = ctx.b
        sub = GraphBuilder(parent=outer)
        ctx.b = sub
        try:
            outs = fn()
        finally:
            ctx.b = outer
        # a branch output is a value the branch computes, each under its own name (an Identity
        # only for an outer value passed through, or a value going out twice)
        made = {o for n in sub.nodes for o in n.output}
        seen: set[str] = set()
        outs = [o if o in made and o not in seen and not seen.add(o) else
                sub.op("Identity", [o], name=f"{label}_out{i}") for i, o in enumerate(outs)]
        n = len(outs)
        graphs.append(helper.make_graph(sub.nodes, f"{outer.scope}_{label}", [],
                                        [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outs],
                                        initializer=sub.initializers))
    res = ctx.b.op("If", [cond], outputs=n, then_branch=graphs[0], else_branch=graphs[1], name=name)
    return [res] if isinstance(res, str) else res


def time_major(ctx: LowerCtx, x: str, rank: int) -> str:
    """Swap the first two axes: [B, T, ...] <-> [T, B, ...]."""
    return ctx.transpose(x, [1, 0, *range(2, rank)])


def _first_states(ctx: LowerCtx, layer: Layer) -> list[str]:
    """The states a layer starts from: carried (stateful: the graph inputs `<layer>/<port>_in`),
    else its initial_state, else none ([]: zeros). A Bidirectional's: the forward half's, then
    the backward half's."""
    return [name for _, name, _, _ in layer.state_io()] or [ctx.env[r] for r in layer.initial_state]


def _rec(layer: Layer) -> Recurrence:
    if layer.recurrence is None:
        raise InternalError(f"layer {layer.name!r} has no Recurrence")
    return layer.recurrence


def _plan(layer: Layer) -> Plan:
    if layer.plan is None:
        raise InternalError(f"layer {layer.name!r} has no plan")
    return layer.plan


def _recurrent(ctx: LowerCtx, layer: Layer) -> Lowered:
    seqs = _rec(layer).return_sequences
    Xs = [time_major(ctx, ctx.env[r], ctx.graph.type_of(r).rank) for r in layer.inputs]   # [T, B, ...]
    init = _first_states(ctx, layer) or None
    Ys, states, last = run(ctx, layer, layer.name, Xs, init=init, mask=ctx.mask(layer), need_seq=seqs,
                           plan=_plan(layer))
    ys = [time_major(ctx, y, len(t.dims)) for y, t in zip(Ys, (layer.outputs[p] for p in layer.main_ports))] \
        if seqs else last                                                # [B, T, ...] or [B, ...]
    out = dict(zip(layer.main_ports, ys))
    for port, s in zip(layer.state_ports, states):
        out[port] = s
    # a stateful layer's final states go out as `<layer>/<port>_out`
    return Lowered(out, tuple(states) if layer.state_io() else ())


register("recurrent", "native", supports=native.supports)(_recurrent)
register("recurrent", "loop", supports=_loop_supports)(_recurrent)
register("recurrent", "unroll", supports=_unroll_supports)(_recurrent)


# ---- Bidirectional ------------------------------------------------------------------

def _bidi_supports(layer: Layer, target: str) -> str | None:
    for half in layer.sublayers:
        why = native.supports(half, target)
        if why:
            return f"{half.name} half: {why}"
    return None


def _merge(ctx: LowerCtx, mode: str | None, yf: str, yb: str) -> dict[str, str]:
    b = ctx.b
    if mode is None:
        return {"forward": b.op("Identity", [yf], name="forward"), "backward": b.op("Identity", [yb], name="backward")}
    if mode == "concat":
        return {"output": b.op("Concat", [yf, yb], axis=-1)}
    if mode == "sum":
        return {"output": b.op("Add", [yf, yb])}
    if mode == "mul":
        return {"output": b.op("Mul", [yf, yb])}
    return {"output": b.op("Mul", [b.op("Add", [yf, yb]), b.const(np.float32(0.5), dtype="float32")], name="ave")}


def _bidirectional(ctx: LowerCtx, layer: Layer) -> Lowered:
    plan = _plan(layer)
    X = ctx.transpose(ctx.x(layer), [1, 0, 2])                      # [T, B, in]
    mask = ctx.mask(layer)
    io = layer.state_io()
    first = _first_states(ctx, layer)
    n_fwd = len(layer.sublayers[0].states)
    init = {"forward": first[:n_fwd] or None, "backward": first[n_fwd:] or None}
    if plan.fused:
        if mask is None:
            out, finals = _bidi_fused(ctx, layer, X, init, need_finals=bool(io))
        else:
            # One bidirectional op with sequence_lens for right-padded batches, else the time
            # loops. Both agree with Keras, whose halves output zeros at masked steps here.
            cond = right_padded(ctx, mask)
            ports: list[str] = []
            fallback = replace(plan, strategy="loop", native_ops=(), fused=False, requested="auto")

            def fast() -> list[str]:
                out, finals = _bidi_fused(ctx, layer, X, init, seq_lens=lengths(ctx, mask), need_finals=bool(io))
                ports[:] = list(out)
                return list(out.values()) + finals

            def exact() -> list[str]:
                out, finals = _bidi_halves(ctx, layer, X, mask, fallback, init)
                return [out[p] for p in ports] + (finals if io else [])

            res = if_node(ctx, cond, fast, exact, name="If_right_padded")
            out, finals = dict(zip(ports, res)), res[len(ports):]
    else:
        out, finals = _bidi_halves(ctx, layer, X, mask, plan, init)
    # a stateful layer's final states go out as `<layer>/<half>_<port>_out`
    return Lowered(out, tuple(finals) if io else ())


def _bidi_halves(ctx: LowerCtx, layer: Layer, X: str, mask: str | None, plan: Plan,
                 init: dict[str, list[str] | None]) -> tuple[dict[str, str], list[str]]:
    """Each half on its own (native op or time loop). Returns (outputs, every final state:
    forward's, then backward's)."""
    fwd, bwd = layer.sublayers
    seqs = _rec(fwd).return_sequences
    halves = {}
    for half in (fwd, bwd):
        # each half's zero_output_for_mask and output flip are its Recurrence's (rnnc/ir/build.py)
        Ys, states, last = run(ctx, half, f"{layer.name}/{half.name}", [X], init=init[half.name], mask=mask,
                               need_seq=seqs, plan=plan)
        if seqs:
            Y = Ys[0]                            # in the half's processing order
            if _rec(half).reverse_output:
                Y = ctx.reverse(Y, 0)
            y = ctx.transpose(Y, [1, 0, 2])      # [B, T, u]
        else:
            y = last[0]
        halves[half.name] = (y, states)
    out = _merge(ctx, layer.config["merge_mode"], halves["forward"][0], halves["backward"][0])
    for half in (fwd, bwd):
        for port, s in zip(half.state_ports, halves[half.name][1]):
            out[f"{half.name}_{port}"] = s
    return out, halves["forward"][1] + halves["backward"][1]


def _bidi_fused(ctx: LowerCtx, layer: Layer, X: str, init: dict[str, list[str] | None], seq_lens: str = "",
                *, need_finals: bool = False) -> tuple[dict[str, str], list[str]]:
    """Both halves as ONE ONNX op with direction=bidirectional. Returns (outputs, the final
    states of both halves when need_finals, else [])."""
    b = ctx.b
    fwd, bwd = layer.sublayers
    seqs = fwd.config["return_sequences"]
    cells = [fwd.cells[0], bwd.cells[0]]
    ws = [native.cell_weights(ctx, f"{layer.name}/{h.name}", h.cells[0]) for h in (fwd, bwd)]
    inits = [init["forward"], init["backward"]] if init["forward"] else None
    Y, Yh, Yc = native.rnn_op(ctx, cells, ws, X, direction="bidirectional", need_y=seqs, seq_lens=seq_lens,
                              init=inits)
    u = cells[0].units
    mode = layer.config["merge_mode"]
    if seqs:
        # Y [T, 2, B, u]; both directions in input order
        if mode == "concat":
            yt = ctx.transpose(Y, [2, 0, 1, 3])                                       # [B, T, 2, u]
            out = {"output": b.op("Reshape", [yt, b.const([0, 0, 2 * u])], name="concat")}
        else:
            yf, yb = b.op("Split", [Y], outputs=2, axis=1, num_outputs=2)
            yf, yb = (ctx.transpose(ctx.squeeze(y, 1), [1, 0, 2]) for y in (yf, yb))
            out = _merge(ctx, mode, yf, yb)
    else:
        if mode == "concat":
            yt = ctx.transpose(Yh, [1, 0, 2])                                          # [B, 2, u]
            out = {"output": b.op("Reshape", [yt, b.const([0, 2 * u])], name="concat")}
        else:
            yf, yb = b.op("Split", [Yh], outputs=2, axis=0, num_outputs=2)
            out = _merge(ctx, mode, ctx.squeeze(yf, 0), ctx.squeeze(yb, 0))
    finals: list[str] = []
    if fwd.state_ports or need_finals:
        hs = b.op("Split", [Yh], outputs=2, axis=0, num_outputs=2)
        cs = b.op("Split", [Yc], outputs=2, axis=0, num_outputs=2) if Yc is not None else None
        for d, half in enumerate((fwd, bwd)):
            states = [ctx.squeeze(hs[d], 0)] + ([ctx.squeeze(cs[d], 0)] if cs else [])
            for port, s in zip(half.state_ports, states):
                out[f"{half.name}_{port}"] = s
            finals += states if need_finals else []
    return out, finals


register("Bidirectional", "native", supports=_bidi_supports)(_bidirectional)
register("Bidirectional", "loop", supports=_loop_supports)(_bidirectional)
register("Bidirectional", "unroll", supports=_unroll_supports)(_bidirectional)
