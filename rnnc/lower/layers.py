"""Lowering rules of the non-recurrent layers (strategy "plain")."""
from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper

from ..ir.graph import Layer
from . import activations
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
    y = b.op("MatMul", [ctx.x(layer), b.initializer("kernel", ctx.w(layer.name, "kernel"))])
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


def _elementwise(op: str):
    def rule(ctx: LowerCtx, layer: Layer) -> dict[str, str]:
        b = ctx.b
        xs = [ctx.env[r] for r in layer.inputs]
        masks = layer.input_masks
        if op == "Multiply" and any(m is not None for m in masks):
            # Keras 3: a masked input counts as 1 at its masked steps; with every input masked,
            # the product is zeroed where no input is unmasked
            one = b.const(np.float32(1.0), dtype="float32")
            ms = [None if m is None else b.op("Unsqueeze", [ctx.env[m], b.const([-1])]) for m in masks]
            xs = [x if m is None else b.op("Where", [m, x, one]) for x, m in zip(xs, ms)]
        y = xs[0]
        for x in xs[1:]:
            y = b.op("Mul" if op == "Multiply" else "Add", [y, x])
        if op == "Multiply" and all(m is not None for m in masks):
            anym = ms[0]
            for m in ms[1:]:
                anym = b.op("Or", [anym, m])
            y = b.op("Where", [anym, y, b.const(np.float32(0.0), dtype="float32")])
        if op == "Average":
            y = b.op("Div", [y, b.const(np.float32(len(xs)), dtype="float32")])
        return {"output": y, **_merge_mask(ctx, layer)}
    return rule


register("Add", "plain")(_elementwise("Add"))
register("Multiply", "plain")(_elementwise("Multiply"))
register("Average", "plain")(_elementwise("Average"))
