"""ONNX forms of the layers in rnnc/layers/activation.py."""
from __future__ import annotations

import numpy as np

from ..ir.graph import Layer
from ..layers.activation import IDENTITY_AT_INFERENCE, SOFTMAX_MASKED, axes_of
from .context import LowerCtx
from .registry import register


def _f32(ctx: LowerCtx, v: float) -> str:
    return ctx.b.const(np.float32(v), dtype="float32")


@register("ReLU", "plain")
def relu(ctx: LowerCtx, layer: Layer) -> dict[str, str]:
    # y = x >= threshold ? x : negative_slope * (x - threshold);  y = min(y, max_value)
    b, cfg, x = ctx.b, layer.config, ctx.x(layer)
    slope, t, cap = cfg["negative_slope"], cfg["threshold"], cfg["max_value"]
    if slope == 0.0 and t == 0.0:
        y = b.op("Relu", [x])
    else:
        below = b.op("Mul", [b.op("Sub", [x, _f32(ctx, t)]), _f32(ctx, slope)]) if slope else _f32(ctx, 0.0)
        y = b.op("Where", [b.op("GreaterOrEqual", [x, _f32(ctx, t)]), x, below])
    if cap is not None:
        y = b.op("Min", [y, _f32(ctx, cap)])
    return {"output": y}


@register("LeakyReLU", "plain")
def leaky_relu(ctx: LowerCtx, layer: Layer) -> dict[str, str]:
    # y = x >= 0 ? x : negative_slope * x
    return {"output": ctx.b.op("LeakyRelu", [ctx.x(layer)], alpha=float(layer.config["negative_slope"]))}


@register("ELU", "plain")
def elu(ctx: LowerCtx, layer: Layer) -> dict[str, str]:
    # y = x > 0 ? x : alpha * (exp(x) - 1)
    return {"output": ctx.b.op("Elu", [ctx.x(layer)], alpha=float(layer.config["alpha"]))}


@register("PReLU", "plain")
def prelu(ctx: LowerCtx, layer: Layer) -> dict[str, str]:
    # Keras: relu(x) - alpha * relu(-x), i.e. x < 0 ? alpha * x : x (alpha: the input's shape
    # without the batch axis, broadcast from the right)
    alpha = ctx.b.initializer("alpha", ctx.w(layer.name, "alpha").astype(np.float32))
    return {"output": ctx.b.op("PRelu", [ctx.x(layer), alpha])}


@register("Softmax", "plain")
def softmax(ctx: LowerCtx, layer: Layer) -> dict[str, str]:
    # Keras 3: x = where(mask, x, -1e9); y = softmax(x, axes); y = where(mask, y, 0), the mask
    # broadcast against x from the last axis (NumPy rules, as ONNX's Where)
    b, x, mask = ctx.b, ctx.x(layer), ctx.mask(layer)
    rank = ctx.graph.type_of(layer.inputs[0]).rank
    axes = sorted(a % rank for a in axes_of(layer.config["axis"]))
    if mask is not None:
        x = b.op("Where", [mask, x, _f32(ctx, SOFTMAX_MASKED)])
    if len(axes) == 1:
        y = b.op("Softmax", [x], axis=axes[0])
    else:   # exp(x - max) / sum(exp(x - max)) over the axes
        e = b.op("Exp", [b.op("Sub", [x, b.op("ReduceMax", [x, b.const(axes)], keepdims=1)])])
        y = b.op("Div", [e, b.op("ReduceSum", [e, b.const(axes)], keepdims=1)])
    if mask is not None:
        y = b.op("Where", [mask, y, _f32(ctx, 0.0)])
    return {"output": y}


def _identity(ctx: LowerCtx, layer: Layer) -> dict[str, str]:
    return {"output": ctx.x(layer)}


for _kind in IDENTITY_AT_INFERENCE:
    register(_kind, "plain")(_identity)
