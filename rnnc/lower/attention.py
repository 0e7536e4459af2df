"""ONNX forms of the layers in rnnc/layers/attention.py: standard ONNX ops only (MatMul,
Softmax, Where, ...), so that onnx.reference runs them as ONNX Runtime does."""
from __future__ import annotations

import numpy as np

from ..ir.graph import Layer
from ..layers.attention import KERAS_BIG, mha_heads
from .context import LowerCtx
from .registry import register


def _f32(ctx: LowerCtx, v: float) -> str:
    return ctx.b.const(np.float32(v), dtype="float32")


def _input_mask(ctx: LowerCtx, layer: Layer, i: int) -> str | None:
    masks = layer.input_masks
    r = masks[i] if len(masks) > i else None
    return None if r is None else ctx.env[r]


def _time(ctx: LowerCtx, layer: Layer, i: int) -> str:
    """The time dim of input i as a scalar (a constant when fixed)."""
    t = ctx.graph.type_of(layer.inputs[i]).dims[1]
    if isinstance(t, int):
        return ctx.b.const(t)
    return ctx.b.op("Gather", [ctx.b.op("Shape", [ctx.x(layer, i)]), ctx.b.const(1)], axis=0)


def _causal(ctx: LowerCtx, layer: Layer, qi: int, vi: int) -> str:
    """Keras's causal mask (Tq, Tv): query i attends to keys j <= i."""
    b = ctx.b
    tq, tv = (ctx.graph.type_of(layer.inputs[i]).dims[1] for i in (qi, vi))
    if isinstance(tq, int) and isinstance(tv, int):
        return b.const(np.arange(tq)[:, None] >= np.arange(tv)[None, :], dtype="bool")
    one, zero = b.const(1), b.const(0)
    rows = ctx.unsqueeze(b.op("Range", [zero, _time(ctx, layer, qi), one]), 1)       # [Tq, 1]
    cols = ctx.unsqueeze(b.op("Range", [zero, _time(ctx, layer, vi), one]), 0)       # [1, Tv]
    return b.op("GreaterOrEqual", [rows, cols], name="causal")


def _and(ctx: LowerCtx, a: str | None, m: str) -> str:
    return m if a is None else ctx.b.op("And", [a, m])


# -- Attention, AdditiveAttention ----------------------------------------------------------

def _luong(ctx: LowerCtx, layer: Layer) -> dict[str, str]:
    b, cfg = ctx.b, layer.config
    q, v = ctx.x(layer, 0), ctx.x(layer, 1)
    k = ctx.x(layer, 2) if len(layer.inputs) > 2 else v
    params = layer.params
    w = {p: b.initializer(p, ctx.w(layer.name, p)) for p in params}
    if layer.kind == "Attention" and cfg["score_mode"] == "dot":
        # scores = (q @ k^T) * scale
        scores = b.op("MatMul", [q, ctx.transpose(k, [0, 2, 1])])                 # [B, Tq, Tv]
        if "scale" in w:
            scores = b.op("Mul", [scores, w["scale"]])
    else:
        s = b.op("Add", [ctx.unsqueeze(q, 2), ctx.unsqueeze(k, 1)])                # [B, Tq, Tv, D]
        if layer.kind == "AdditiveAttention":
            # scores = sum(scale * tanh(q + k), -1)
            t = b.op("Tanh", [s])
            scores = (b.op("MatMul", [t, w["scale"]]) if "scale" in w
                      else b.op("ReduceSum", [t, b.const([-1])], keepdims=0))
        else:
            # scores = concat_score_weight * sum(tanh(scale * (q + k)), -1)
            t = b.op("Tanh", [b.op("Mul", [s, w["scale"]]) if "scale" in w else s])
            scores = b.op("Mul", [b.op("ReduceSum", [t, b.const([-1])], keepdims=0), w["concat_score_weight"]])
    keep = None
    vm = _input_mask(ctx, layer, 1)
    if vm is not None:
        keep = ctx.unsqueeze(vm, 1)                                                # [B, 1, Tv]
    if cfg["use_causal_mask"]:
        keep = _and(ctx, keep, _causal(ctx, layer, 0, 1 if len(layer.inputs) < 3 else 2))
    if keep is not None:
        # Keras: where(mask, scores, scores - 1e9), in float32
        scores = b.op("Where", [keep, scores, b.op("Sub", [scores, _f32(ctx, KERAS_BIG)])])
    weights = b.op("Softmax", [scores], axis=-1)
    out = b.op("MatMul", [weights, v])                                             # [B, Tq, Dv]
    qm = _input_mask(ctx, layer, 0)
    if qm is not None:
        out = b.op("Where", [ctx.unsqueeze(qm, 2), out, _f32(ctx, 0.0)])
    ports = {"output": out}
    if cfg["return_attention_scores"]:
        ports["scores"] = b.op("Identity", [weights], name="scores")
    return ports


register("Attention", "plain")(_luong)
register("AdditiveAttention", "plain")(_luong)


# -- MultiHeadAttention ---------------------------------------------------------------------

@register("MultiHeadAttention", "plain")
def multi_head_attention(ctx: LowerCtx, layer: Layer) -> dict[str, str]:
    b, cfg = ctx.b, layer.config
    heads, kd, vd = mha_heads(cfg)
    n_t = len(layer.inputs) - (1 if cfg["attention_mask"] else 0)
    q, v = ctx.x(layer, 0), ctx.x(layer, 1)
    k = ctx.x(layer, 2) if n_t > 2 else v
    scale = 1.0 / np.sqrt(float(kd))

    def proj(x: str, part: str, d: int, factor: float = 1.0) -> str:
        # x [B, T, D] @ kernel [D, N*d] + bias [N*d] -> [B, T, N, d]
        kernel = ctx.w(layer.name, f"{part}/kernel").astype(np.float64) * factor
        y = b.op("MatMul", [x, b.initializer(f"{part}_kernel", kernel.reshape(kernel.shape[0], -1).astype(np.float32))])
        if cfg["use_bias"]:
            bias = ctx.w(layer.name, f"{part}/bias").astype(np.float64) * factor
            y = b.op("Add", [y, b.initializer(f"{part}_bias", bias.reshape(-1).astype(np.float32))])
        return b.op("Reshape", [y, b.const([0, 0, heads, d])])

    # Keras scales the projected query by 1/sqrt(key_dim): folded into its kernel and bias
    qh = ctx.transpose(proj(q, "query", kd, scale), [0, 2, 1, 3])       # [B, N, Tq, kd]
    kh = ctx.transpose(proj(k, "key", kd), [0, 2, 3, 1])                # [B, N, kd, Tv]
    vh = ctx.transpose(proj(v, "value", vd), [0, 2, 1, 3])              # [B, N, Tv, vd]
    scores = b.op("MatMul", [qh, kh])                                   # [B, N, Tq, Tv]
    keep = None
    if cfg["attention_mask"]:
        m = ctx.x(layer, len(layer.inputs) - 1)
        bool_mask = ctx.graph.type_of(layer.inputs[-1]).dtype == "bool"
        keep = m if bool_mask else b.op("Not", [b.op("Equal", [m, _f32(ctx, 0.0)])])   # [B|1, Tq, Tv]
    qm = _input_mask(ctx, layer, 0)
    if qm is not None:
        keep = _and(ctx, keep, ctx.unsqueeze(qm, 2))                    # [B, Tq, 1]
    for i in range(1, n_t):
        m = _input_mask(ctx, layer, i)
        if m is not None:
            keep = _and(ctx, keep, ctx.unsqueeze(m, 1))                 # [B, 1, Tv]
    if cfg["use_causal_mask"]:
        keep = _and(ctx, keep, _causal(ctx, layer, 0, 1))
    if keep is not None:
        if _rank(ctx, layer) == 3:                                      # [B, 1, Tq, Tv]; (Tq, Tv) broadcasts
            keep = ctx.unsqueeze(keep, 1)
        scores = b.op("Where", [keep, scores, _f32(ctx, -KERAS_BIG)])
    probs = b.op("Softmax", [scores], axis=-1)
    if keep is not None and cfg["return_attention_scores"]:
        probs = b.op("Where", [keep, probs, _f32(ctx, 0.0)])           # Keras's Softmax layer zeros masked cells
    o = b.op("MatMul", [probs, vh])                                     # [B, N, Tq, vd]
    o = b.op("Reshape", [ctx.transpose(o, [0, 2, 1, 3]), b.const([0, 0, heads * vd])])
    ko = ctx.w(layer.name, "attention_output/kernel")
    out_dims = list(ko.shape[2:])
    y = b.op("MatMul", [o, b.initializer("attention_output_kernel", ko.reshape(heads * vd, -1))])
    if cfg["use_bias"]:
        y = b.op("Add", [y, b.initializer("attention_output_bias", ctx.w(layer.name, "attention_output/bias").reshape(-1))])
    if len(out_dims) > 1:
        y = b.op("Reshape", [y, b.const([0, 0, *out_dims])])
    ports = {"output": y}
    if cfg["return_attention_scores"]:
        ports["scores"] = b.op("Identity", [probs], name="scores")
    return ports


def _rank(ctx: LowerCtx, layer: Layer) -> int:
    """The rank of the combined mask: 3 unless it is only the causal one, or the (Tq, Tv)
    attention mask and the causal one."""
    cfg = layer.config
    if any(_input_mask(ctx, layer, i) is not None for i in range(len(layer.inputs))):
        return 3
    if cfg["attention_mask"] and ctx.graph.type_of(layer.inputs[-1]).rank == 3:
        return 3
    return 2

