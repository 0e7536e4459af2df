"""Lowering rules of the non-recurrent layers (strategy "plain")."""
from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper

from ..ir.graph import Layer
from ..ir.semantics import KERAS_EPSILON, dot_axes
from . import activations, int8
from .context import LowerCtx
from .registry import register


@register("Embedding", "plain")
def embedding(ctx: LowerCtx, layer: Layer) -> dict[str, str]:
    b = ctx.b
    table = b.initializer("embeddings", ctx.w(layer.name, "embeddings"))      # [V, D]
    tokens = ctx.x(layer)                                                    # [B, T]
    out = {"output": b.op("Gather", [table, tokens], axis=0)}               # [B, T, D]
    if layer.config["mask_zero"]:
        # mask = tokens != 0
        zero = b.const(0, dtype=ctx.graph.type_of(layer.inputs[0]).dtype)
        out["mask"] = b.op("Not", [b.op("Equal", [tokens, zero])], name="mask")
    return out


@register("Masking", "plain")
def masking(ctx: LowerCtx, layer: Layer) -> dict[str, str]:
    # keep[b, t] = any(x[b, t, :] != mask_value);  y = x * keep
    b = ctx.b
    x = ctx.x(layer)
    value = b.const(np.float32(layer.config["mask_value"]), dtype="float32")
    differs = b.op("Cast", [b.op("Not", [b.op("Equal", [x, value])])], to=1)          # [B, T, F] 0/1
    keep_f = b.op("ReduceMax", [differs, b.const([-1])], keepdims=1)                   # [B, T, 1]
    y = b.op("Mul", [x, keep_f])
    keep = b.op("Cast", [b.op("Squeeze", [keep_f, b.const([-1])])], to=9, name="mask")  # [B, T] bool
    return {"output": y, "mask": keep}


@register("Dense", "plain")
def dense(ctx: LowerCtx, layer: Layer) -> dict[str, str]:
    # y = act(x @ kernel + bias)
    b = ctx.b
    kernel = ctx.w(layer.name, "kernel")
    q = int8.options(ctx)
    if q is not None and q.dense and kernel.size >= int8.DENSE_MIN_WEIGHTS:   # --quantize int8 (lower/int8.py)
        q.register(f"{layer.name}/kernel", kernel)
        bias = b.initializer("bias", ctx.w(layer.name, "bias")) if layer.config["use_bias"] else None
        y = int8.maybe(q, b, ctx.x(layer), f"{layer.name}/kernel", bias)
        return {"output": activations.emit(b, layer.config["activation"], y)}
    y = b.op("MatMul", [ctx.x(layer), b.initializer("kernel", kernel)])
    if layer.config["use_bias"]:
        y = b.op("Add", [y, b.initializer("bias", ctx.w(layer.name, "bias"))])
    return {"output": activations.emit(b, layer.config["activation"], y)}


@register("BatchNormalization", "plain")
def batchnorm(ctx: LowerCtx, layer: Layer) -> dict[str, str]:
    # y = (x - mean) / sqrt(var + eps) * gamma + beta, folded into y = x * scale + shift
    b = ctx.b
    gamma, beta, mean, var = (ctx.w(layer.name, k).astype(np.float64)
                              for k in ("gamma", "beta", "moving_mean", "moving_variance"))
    scale = gamma / np.sqrt(var + layer.config["epsilon"])
    shift = beta - mean * scale
    rank = ctx.graph.type_of(layer.inputs[0]).rank
    axis = layer.config["axis"] % rank
    shape = [1] * (rank - axis - 1)
    scale = scale.reshape(-1, *shape).astype(np.float32)
    shift = shift.reshape(-1, *shape).astype(np.float32)
    y = b.op("Mul", [ctx.x(layer), b.initializer("scale", scale)])
    return {"output": b.op("Add", [y, b.initializer("shift", shift)])}


@register("Dropout", "plain")
def dropout(ctx: LowerCtx, layer: Layer) -> dict[str, str]:
    return {"output": ctx.x(layer)}   # identity at inference


@register("Activation", "plain")
def activation(ctx: LowerCtx, layer: Layer) -> dict[str, str]:
    y = activations.emit(ctx.b, layer.config["activation"], ctx.x(layer))
    if y == ctx.x(layer):
        y = ctx.b.op("Identity", [y])
    return {"output": y}


def _merge_mask(ctx: LowerCtx, layer: Layer) -> dict[str, str]:
    """Keras 3's merged mask: Add/Multiply/Average OR the masks; Concatenate broadcasts each
    mask over its input (an unmasked input is all true), concatenates along the axis and ORs
    over the last axis."""
    if layer.mask_merge is None:
        return {}
    b = ctx.b
    masks = layer.input_masks
    if layer.mask_merge == "or":
        out = ctx.env[masks[0]]
        for m in masks[1:]:
            out = b.op("Or", [out, ctx.env[m]])
        return {"mask": b.op("Identity", [out], name="mask")}
    full = []
    for r, m in zip(layer.inputs, masks):
        x = ctx.env[r]
        if m is None:                                            # all true, shaped like x
            full.append(b.op("Cast", [b.op("Shape", [x])], to=TensorProto.INT64))
            full[-1] = b.op("ConstantOfShape", [full[-1]], value=helper.make_tensor("one", TensorProto.BOOL, [1], [True]))
        else:                                                    # [B, T] -> [B, T, F]
            full.append(b.op("Expand", [b.op("Unsqueeze", [ctx.env[m], b.const([-1])]), b.op("Shape", [x])]))
    cat = b.op("Cast", [b.op("Concat", full, axis=layer.config["axis"])], to=TensorProto.INT32)
    return {"mask": b.op("Cast", [b.op("ReduceMax", [cat, b.const([-1])], keepdims=0)], to=TensorProto.BOOL, name="mask")}


@register("Concatenate", "plain")
def concatenate(ctx: LowerCtx, layer: Layer) -> dict[str, str]:
    xs = [ctx.env[r] for r in layer.inputs]
    return {"output": ctx.b.op("Concat", xs, axis=layer.config["axis"]), **_merge_mask(ctx, layer)}


def _same_rank(ctx: LowerCtx, layer: Layer, xs: list[str]) -> list[str]:
    """Keras 3's Merge.call: an input of lower rank gets size-1 dims inserted at axis 1."""
    ranks = [ctx.graph.type_of(r).rank for r in layer.inputs]
    top = max(ranks)
    return [x if r == top else ctx.b.op("Unsqueeze", [x, ctx.b.const(list(range(1, 1 + top - r)))])
            for x, r in zip(xs, ranks)]


def _elementwise(op: str):
    def rule(ctx: LowerCtx, layer: Layer) -> dict[str, str]:
        b = ctx.b
        xs = _same_rank(ctx, layer, [ctx.env[r] for r in layer.inputs])
        masks = layer.input_masks
        ms = [None if m is None else b.op("Unsqueeze", [ctx.env[m], b.const([-1])]) for m in masks]
        if op in ("Max", "Min"):
            y = _max_min(ctx, op, xs, ms)
            return {"output": y, **_merge_mask(ctx, layer)}
        if op == "Multiply" and any(m is not None for m in masks):
            # Keras 3: a masked input counts as 1 at its masked steps; with every input masked,
            # the product is zeroed where no input is unmasked
            one = b.const(np.float32(1.0), dtype="float32")
            xs = [x if m is None else b.op("Where", [m, x, one]) for x, m in zip(xs, ms)]
        y = xs[0]
        for x in xs[1:]:
            y = b.op({"Multiply": "Mul", "Subtract": "Sub"}.get(op, "Add"), [y, x])
        if op == "Multiply" and all(m is not None for m in masks):
            anym = ms[0]
            for m in ms[1:]:
                anym = b.op("Or", [anym, m])
            y = b.op("Where", [anym, y, b.const(np.float32(0.0), dtype="float32")])
        if op == "Average":
            y = b.op("Div", [y, b.const(np.float32(len(xs)), dtype="float32")])
        return {"output": y, **_merge_mask(ctx, layer)}
    return rule


def _max_min(ctx: LowerCtx, op: str, xs: list[str], ms: list[str | None]) -> str:
    """Keras 3's Maximum / Minimum (Merge._apply_merge_op_and_or_mask), input by input: at a
    masked step an input takes the running result's value and the running result the input's;
    the running mask is the OR of the masks, lost once an input has none."""
    b = ctx.b
    out, out_mask = xs[0], ms[0]
    for x, m in zip(xs[1:], ms[1:]):
        if m is not None:
            x = b.op("Where", [m, x, out])
        if out_mask is not None:
            out = b.op("Where", [out_mask, out, x])
        out_mask = b.op("Or", [out_mask, m]) if m is not None and out_mask is not None else None
        out = b.op(op, [out, x])
    return out


register("Add", "plain")(_elementwise("Add"))
register("Subtract", "plain")(_elementwise("Subtract"))
register("Multiply", "plain")(_elementwise("Multiply"))
register("Average", "plain")(_elementwise("Average"))
register("Maximum", "plain")(_elementwise("Max"))
register("Minimum", "plain")(_elementwise("Min"))


@register("Dot", "plain")
def dot(ctx: LowerCtx, layer: Layer) -> dict[str, str]:
    # Keras 3's batch_dot: x with its dot axis last, y with its dot axis second, MatMul, then
    # the size-1 dim of a rank-2 input squeezed; normalize: x * min(1 / sqrt(sum(x^2)), 1e7)
    b = ctx.b
    (x, y), (tx, ty) = [ctx.env[r] for r in layer.inputs], [ctx.graph.type_of(r) for r in layer.inputs]
    ax, ay = dot_axes(layer.config["axes"], tx.rank, ty.rank)
    if layer.config["normalize"]:
        x, y = _l2_normalize(ctx, x, ax), _l2_normalize(ctx, y, ay)
    if tx.rank == 2:
        x = b.op("Unsqueeze", [x, b.const([1])])               # [B, 1, D]
    elif ax == 1:
        x = b.op("Transpose", [x], perm=[0, 2, 1])             # [B, R, D]
    if ty.rank == 2:
        y = b.op("Unsqueeze", [y, b.const([2])])               # [B, D, 1]
    elif ay == 2:
        y = b.op("Transpose", [y], perm=[0, 2, 1])             # [B, D, R]
    out = b.op("MatMul", [x, y])
    if tx.rank == 2:
        out = b.op("Squeeze", [out, b.const([1])])
    elif ty.rank == 2:
        out = b.op("Squeeze", [out, b.const([-1])])
    return {"output": out}


def _l2_normalize(ctx: LowerCtx, x: str, axis: int) -> str:
    b = ctx.b
    inv = b.op("Reciprocal", [b.op("Sqrt", [b.op("ReduceSumSquare", [x, b.const([axis])], keepdims=1)])])
    return b.op("Mul", [x, b.op("Min", [inv, b.const(np.float32(1.0 / KERAS_EPSILON), dtype="float32")])])
