"""Native lowering: Keras SimpleRNN/GRU/LSTM cells → ONNX RNN/GRU/LSTM ops (layout 0).

Weights (docs/semantics.md): Keras kernels are [in, gates*u] in Keras gate order; ONNX W is
[dirs, gates*u, in] in ONNX gate order, so permute the gate blocks, then transpose.
Biases: ONNX B = [Wb, Rb]. LSTM and SimpleRNN: Wb = Keras bias, Rb = 0. GRU reset_after
(linear_before_reset=1): Wb = input bias, Rb = recurrent bias; reset_after=false
(linear_before_reset=0): Wb = bias, Rb = 0. No bias at all with use_bias: false.

A custom cell that the recognize-builtins pass proved equal to an ONNX op (Cell.recognized,
rnnc/passes/recognize.py) runs as that op: W, R, B and P are computed from the cell's params
as the recovered layout says, with its activations (alpha, beta), clip, input_forget and
linear_before_reset; its states go in and come out in the cell's order."""
from __future__ import annotations

import numpy as np

from ..cells.gates import KERAS_LAYOUT, ONNX_LAYOUT, permute_gates
from ..ir.graph import Cell, Layer
from .activations import RNN_OP
from .context import LowerCtx

ONNX_OP = {"LSTM": "LSTM", "GRU": "GRU", "SimpleRNN": "RNN"}
# The ONNX ops' default activations (what onnx.reference implements).
DEFAULTS = {"LSTM": ("sigmoid", "tanh", "tanh"), "GRU": ("sigmoid", "tanh"), "SimpleRNN": ("tanh",)}
DEFAULTS_ONNX = {"LSTM": ("Sigmoid", "Tanh", "Tanh"), "GRU": ("Sigmoid", "Tanh"), "RNN": ("Tanh",)}


def cell_activations(cell: Cell) -> tuple[str, ...]:
    """The Keras activations in the order the ONNX op's `activations` attribute wants:
    LSTM f, g, h; GRU f, g; RNN f (f = recurrent activation, g/h = activation)."""
    c = cell.config
    if cell.kind == "LSTM":
        return (c["recurrent_activation"], c["activation"], c["activation"])
    if cell.kind == "GRU":
        return (c["recurrent_activation"], c["activation"])
    return (c["activation"],)


def recognized_supports(cell: Cell, target: str) -> str | None:
    rec = cell.recognized
    if rec is None:
        return f"custom cell {cell.kind!r} is not an ONNX LSTM, GRU or RNN: {cell.not_recognized or 'not analysed'}"
    if target == "portable":
        extra = [k for k, on in (("non-default activations", not rec.default_activations),
                                 ("clip", rec.clip is not None), ("input_forget", rec.input_forget)) if on]
        if extra:
            return (f"portable target: custom cell {cell.kind!r} is an ONNX {rec.op} with {' and '.join(extra)}, "
                    "which onnx.reference ignores")
    return None


def cell_supports(cell: Cell, target: str) -> str | None:
    if cell.custom:
        return recognized_supports(cell, target)
    if cell.kind == "ConvLSTM":
        return "no ONNX op computes a ConvLSTM (its gates are convolutions): a time loop runs its equations"
    if cell.kind not in ONNX_OP:
        return f"custom cell {cell.kind!r} has no ONNX op"
    acts = cell_activations(cell)
    for a in acts:
        if a not in RNN_OP:
            return f"activation {a!r} has no form in ONNX's {ONNX_OP[cell.kind]} op"
    if target == "portable" and acts != DEFAULTS[cell.kind] and not (cell.kind == "SimpleRNN" and acts == ("linear",)):
        return (f"portable target: non-default activations ({', '.join(acts)}) are ignored by "
                "onnx.reference's LSTM/GRU")
    return None


def supports(layer: Layer, target: str) -> str | None:
    for c in layer.cells:
        why = cell_supports(c, target)
        if why:
            return why
    if layer.mask_in is not None and target == "portable":
        return "portable target: a mask needs sequence_lens, which onnx.reference ignores"
    return None


def onnx_weights(cell: Cell, w: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Keras weights of one cell → ONNX (W [G*u, in], R [G*u, u], B [2*G*u] or None); a
    recognized custom cell's from its params, as the recovered layout says."""
    if cell.recognized is not None:
        a = cell.recognized.arrays(w)
        return a["W"], a["R"], a.get("B")
    src, dst = KERAS_LAYOUT[cell.kind], ONNX_LAYOUT[cell.kind]
    W = permute_gates(w["kernel"], src, dst).T
    R = permute_gates(w["recurrent_kernel"], src, dst).T
    if "bias" not in w:
        return W, R, None
    bias = w["bias"]
    if cell.kind == "GRU" and cell.config["reset_after"]:
        wb, rb = permute_gates(bias[0], src, dst), permute_gates(bias[1], src, dst)
    else:
        wb, rb = permute_gates(bias, src, dst), np.zeros_like(bias)
    return W, R, np.concatenate([wb, rb])


def cell_weights(ctx: LowerCtx, layer_key: str, cell: Cell) -> dict[str, np.ndarray]:
    return {k: ctx.w(layer_key, cell.prefix + k) for k in cell.params}


def rnn_op(ctx: LowerCtx, cells: list[Cell], weights: list[dict[str, np.ndarray]], X: str, *,
           direction: str, init: list[list[str]] | None = None, seq_lens: str = "",
           need_y: bool = True) -> tuple[str | None, str, str | None]:
    """One native op over X [T, B, in] for one cell (or two, bidirectional).
    init: per direction, the cell's initial states as [B, u] tensors.
    Returns (Y [T, dirs, B, u] or None, Y_h [dirs, B, u], Y_c [dirs, B, u] or None)."""
    b = ctx.b
    cell = cells[0]
    rec = cell.recognized
    Ws, Rs, Bs = zip(*(onnx_weights(c, w) for c, w in zip(cells, weights)))
    W = b.initializer("W", np.stack(Ws).astype(np.float32))      # [dirs, G*u, in]
    R = b.initializer("R", np.stack(Rs).astype(np.float32))      # [dirs, G*u, u]
    B = "" if Bs[0] is None else b.initializer("B", np.stack(Bs).astype(np.float32))  # [dirs, 2*G*u]
    ins = [X, W, R, B, seq_lens]
    n_states = len(cell.states)
    order = rec.state_order if rec is not None else tuple(range(n_states))
    if init:
        for s in order:   # initial_h [dirs, B, u] (and initial_c)
            parts = [ctx.unsqueeze(d[s], 0) for d in init]
            ins.append(parts[0] if len(parts) == 1 else b.op("Concat", parts, axis=0))
    if rec is not None and any(k == "P" for k, _ in rec.weights):
        ins += [""] * (7 - len(ins))
        ins.append(b.initializer("P", np.stack([rec.arrays(w)["P"] for w in weights]).astype(np.float32)))
    while ins and ins[-1] == "":
        ins.pop()
    attrs: dict = {"hidden_size": cell.units, "direction": direction, "layout": 0}
    if rec is not None:
        op = rec.op
        if [a[0] for a in rec.activations] != list(DEFAULTS_ONNX[op]):
            acts = list(rec.activations) * len(cells)
            attrs["activations"] = [a[0] for a in acts]
            attrs["activation_alpha"] = [a[1] for a in acts if a[1] is not None] or None
            attrs["activation_beta"] = [a[2] for a in acts if a[2] is not None] or None
        if rec.clip is not None:
            attrs["clip"] = rec.clip
        if rec.input_forget:
            attrs["input_forget"] = 1
        if rec.linear_before_reset is not None:
            attrs["linear_before_reset"] = rec.linear_before_reset
        return _emit(ctx, op, ins, attrs, n_states, need_y)
    acts = cell_activations(cell) * len(cells)
    if acts != DEFAULTS[cell.kind] * len(cells):
        spec = [RNN_OP[a] for a in acts]
        attrs["activations"] = [s[0] for s in spec]
        # ONNX Runtime hands the alphas (and betas) out in order to the activations that take
        # one, so the lists hold only theirs: no placeholders for Sigmoid or Tanh
        alphas = [s[1] for s in spec if s[1] is not None]
        betas = [s[2] for s in spec if s[2] is not None]
        attrs["activation_alpha"] = alphas or None
        attrs["activation_beta"] = betas or None
    if cell.kind == "GRU":
        attrs["linear_before_reset"] = 1 if cell.config["reset_after"] else 0
    return _emit(ctx, ONNX_OP[cell.kind], ins, attrs, n_states, need_y)


def _emit(ctx: LowerCtx, op: str, ins: list[str], attrs: dict, n_states: int,
          need_y: bool) -> tuple[str | None, str, str | None]:
    b = ctx.b
    # Y gets a name even when nothing reads it: onnx.reference keeps an unnamed output under
    # the name "" and would hand it to the next node's omitted ("") inputs
    outs = [b.fresh(f"{op}_Y"), b.fresh(f"{op}_Y_h")]
    if n_states == 2:
        outs.append(b.fresh(f"{op}_Y_c"))
    b.op(op, ins, outputs=outs, name=op, **attrs)
    return (outs[0] if need_y else None), outs[1], (outs[2] if n_states == 2 else None)


def run_cells(ctx: LowerCtx, layer: Layer, layer_key: str, X: str, *, init: list[str] | None,
              seq_lens: str = "", need_seq: bool) -> tuple[str | None, list[str]]:
    """The layer's cells, one native op each, over X [T, B, in] (input order).
    Returns (sequence [T, B, u] in input order, or None; final states, each [B, u])."""
    direction = "reverse" if layer.recurrence is not None and layer.recurrence.go_backwards else "forward"
    states: list[str] = []
    si = 0
    for i, cell in enumerate(layer.cells):
        last = i == len(layer.cells) - 1
        n = len(cell.states)
        cell_init = [init[si:si + n]] if init else None
        si += n
        Y, Yh, Yc = rnn_op(ctx, [cell], [cell_weights(ctx, layer_key, cell)], X, direction=direction,
                           init=cell_init, seq_lens=seq_lens, need_y=need_seq or not last)
        finals = [ctx.squeeze(Yh, 0)] + ([ctx.squeeze(Yc, 0)] if Yc is not None else [])   # [B, u] each
        order = cell.recognized.state_order if cell.recognized is not None else tuple(range(n))
        states += [finals[order.index(k)] for k in range(n)]     # in the cell's state order
        if Y is not None:
            X = ctx.squeeze(Y, 1)                                # [T, B, u]
    return (X if need_seq else None), states
