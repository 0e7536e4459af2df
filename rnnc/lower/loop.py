"""Loop lowering: a recurrent layer's cells → an ONNX Loop over time whose body is built
from the cell equations in rnnc/cells/ (the same code the reference interpreter runs).

The input projection (x @ W + b) of the first cell is hoisted out of the Loop and computed
for all steps with one MatMul; the body does only the recurrent part. Masks are exact:
at a masked step the states keep their values and the output repeats the previous one
(or is zero, for Bidirectional with return_sequences), as Keras does.
`unroll` emits the same body once per step, as a straight-line graph."""
from __future__ import annotations

from typing import Any

import numpy as np
from onnx import TensorProto, helper

from ..cells.builtin import CELLS
from ..emit.builder import GraphBuilder
from ..ir.graph import Cell, Layer
from . import activations
from .context import LowerCtx


class OnnxOps:
    """The cell op interface (see rnnc/cells/builtin.py) emitting ONNX nodes."""

    def __init__(self, b: GraphBuilder, params: dict[str, str]):
        self.b, self.params = b, params

    def param(self, name: str) -> str:
        return self.params[name]

    def matmul(self, a: str, w: str) -> str:
        return self.b.op("MatMul", [a, w])

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

    def split(self, x: str, n: Any) -> list[str]:
        if isinstance(n, int):
            return self.b.op("Split", [x], outputs=n, axis=-1, num_outputs=n)
        return self.b.op("Split", [x, self.b.const(list(n))], outputs=len(n), axis=-1)


def cell_params(ctx: LowerCtx, layer_key: str, cell: Cell) -> dict[str, str]:
    """The cell's prepared parameters as initializers of the main graph."""
    raw = {k: ctx.w(layer_key, cell.prefix + k).astype(np.float64) for k in cell.params}
    prepared = CELLS[cell.kind].prepare(raw, cell.units, cell.config)
    return {k: ctx.b.initializer(f"{cell.prefix.replace('/', '_')}{k}", v.astype(np.float32))
            for k, v in prepared.items()}


def _step(ops_main: OnnxOps, ops_cells: list[OnnxOps], cells: list[Cell], xp0: str, states: list[str]
          ) -> tuple[str, list[str]]:
    """One time step through the stacked cells. xp0: the first cell's hoisted projection."""
    new: list[str] = []
    inp, si = "", 0
    for i, (cell, ops) in enumerate(zip(cells, ops_cells)):
        cdef = CELLS[cell.kind]
        xp = xp0 if i == 0 else cdef.project(ops, inp, cell.units, cell.config)
        n = len(cell.states)
        inp, ns = cdef.step(ops, xp, tuple(states[si:si + n]), cell.units, cell.config)
        new += list(ns)
        si += n
    return inp, new


def run_cells(ctx: LowerCtx, layer: Layer, layer_key: str, X: str, *, init: list[str] | None,
              mask: str | None, need_seq: bool, zero_output: bool, unroll: int | None = None
              ) -> tuple[str | None, list[str], str]:
    """Run the layer's cells over X [T, B, in] (input order) in Keras's processing order.
    mask: [T, B] bool in input order, or None.
    Returns (sequence [T, B, u] in processing order or None, final states [B, ...], last output [B, u])."""
    b = ctx.b
    cells = list(layer.cells)
    if layer.config["go_backwards"]:
        X = ctx.reverse(X, 0)
        mask = ctx.reverse(mask, 0) if mask is not None else None
    params = [cell_params(ctx, layer_key, c) for c in cells]
    first = CELLS[cells[0].kind]
    # Hoisted: XP = X @ W + b for every step at once                      # [T, B, G*u]
    XP = first.project(OnnxOps(b, params[0]), X, cells[0].units, cells[0].config)
    # Initial states: given, or zeros shaped [B, u] from X's batch dim.
    if init:
        states0 = list(init)
    else:
        batch = b.op("Slice", [b.op("Shape", [X]), b.const([1]), b.const([2])], name="batch")   # [1]
        states0 = []
        for c in cells:
            for _, shape in c.states:
                dims = b.op("Concat", [batch, b.const(list(shape))], axis=0)
                states0.append(b.op("ConstantOfShape", [dims], value=helper.make_tensor("zero", TensorProto.FLOAT, [1], [0.0]),
                                    name="zeros"))
    units_out = cells[-1].output_size
    carry_out = mask is not None
    if carry_out:   # the previous output, repeated at masked steps
        batch = b.op("Slice", [b.op("Shape", [X]), b.const([1]), b.const([2])], name="batch")
        prev0 = b.op("ConstantOfShape", [b.op("Concat", [batch, b.const([units_out])], axis=0)],
                     value=helper.make_tensor("zero", TensorProto.FLOAT, [1], [0.0]), name="zeros")
    if unroll is not None:
        return _unrolled(ctx, cells, params, XP, mask, states0, prev0 if carry_out else None, need_seq,
                         zero_output, unroll)

    body = GraphBuilder(parent=b)
    it = body.fresh("t")
    cond_in = body.fresh("cond_in")
    s_in = [body.fresh(f"state{i}_in") for i in range(len(states0))]
    p_in = body.fresh("prev_in") if carry_out else None
    ops_cells = [OnnxOps(body, p) for p in params]
    xp_t = body.op("Gather", [XP, it], axis=0, name="xp_t")                 # [B, G*u]
    out, new = _step(ops_cells[0], ops_cells, cells, xp_t, s_in)
    if carry_out:
        m = body.op("Unsqueeze", [body.op("Gather", [mask, it], axis=0), body.const([1])], name="m_t")  # [B, 1]
        # masked step: keep the states; repeat the previous output (zeros for zero_output)
        new = [body.op("Where", [m, n, s]) for n, s in zip(new, s_in)]
        zeros = body.op("Mul", [out, body.const(np.float32(0.0), dtype="float32")]) if zero_output else p_in
        out = body.op("Where", [m, out, zeros], name="out_t")
    cond_out = body.op("Identity", [cond_in], name="cond_out")
    body_outs = [cond_out, *new]
    if carry_out:
        body_outs.append(out)
    if need_seq:
        # Scan outputs are emitted flat ([B*u] per step): ONNX Runtime stacks them and
        # onnx.reference concatenates them, which agree only for 1-D values.
        body_outs.append(body.op("Reshape", [out, body.const([-1])], name="y_t"))
    f32 = TensorProto.FLOAT
    g = helper.make_graph(
        body.nodes, f"{b.scope}_body",
        [helper.make_tensor_value_info(it, TensorProto.INT64, []),
         helper.make_tensor_value_info(cond_in, TensorProto.BOOL, []),
         *[helper.make_tensor_value_info(s, f32, None) for s in s_in],
         *([helper.make_tensor_value_info(p_in, f32, None)] if carry_out else [])],
        [helper.make_tensor_value_info(cond_out, TensorProto.BOOL, []),
         *[helper.make_tensor_value_info(s, f32, None) for s in body_outs[1:]]],
        initializer=body.initializers)
    # Trip count from X's shape (never from data): T = Shape(X)[0]. The condition is an
    # explicit true (onnx.reference does not run a Loop whose condition is omitted).
    trip = b.op("Slice", [b.op("Shape", [X]), b.const([0]), b.const([1])], name="T")
    trip = b.op("Squeeze", [trip, b.const([0])], name="trip_count")
    loop_ins = [trip, b.const(True, dtype="bool"), *states0, *([prev0] if carry_out else [])]
    n_out = len(states0) + int(carry_out) + int(need_seq)
    outs = b.op("Loop", loop_ins, outputs=n_out, body=g, name="Loop")
    outs = [outs] if isinstance(outs, str) else outs
    final = outs[:len(states0)]
    last = outs[len(states0)] if carry_out else _last_h(cells, final)
    seq = b.op("Reshape", [outs[-1], b.const([0, -1, units_out])], name="seq") if need_seq else None  # [T, B, u]
    return seq, final, last


def _last_h(cells: list[Cell], states: list[str]) -> str:
    """The last cell's output is its first state (h)."""
    return states[len(states) - len(cells[-1].states)]


def _unrolled(ctx: LowerCtx, cells: list[Cell], params: list[dict[str, str]], XP: str, mask: str | None,
              states: list[str], prev: str | None, need_seq: bool, zero_output: bool, steps: int
              ) -> tuple[str | None, list[str], str]:
    b = ctx.b
    ops_cells = [OnnxOps(b, p) for p in params]
    xps = b.op("Split", [XP], outputs=steps, axis=0, num_outputs=steps) if steps > 1 else [XP]
    masks = (b.op("Split", [mask], outputs=steps, axis=0, num_outputs=steps) if steps > 1 else [mask]) \
        if mask is not None else None
    ys = []
    out = prev
    for t in range(steps):
        xp_t = ctx.squeeze(xps[t], 0)
        o, new = _step(ops_cells[0], ops_cells, cells, xp_t, states)
        if masks is not None:
            m = ctx.transpose(masks[t], [1, 0])                           # [B, 1]
            new = [b.op("Where", [m, n, s]) for n, s in zip(new, states)]
            other = b.op("Mul", [o, b.const(np.float32(0.0), dtype="float32")]) if zero_output else out
            o = b.op("Where", [m, o, other])
        states, out = new, o
        ys.append(ctx.unsqueeze(o, 0))
    seq = (b.op("Concat", ys, axis=0) if len(ys) > 1 else ys[0]) if need_seq else None
    last = out if out is not None else _last_h(cells, states)
    return seq, states, last
