"""ONNX forms of the layers in rnnc/layers/activation.py."""
from __future__ import annotations

import numpy as np

from ..ir.graph import Layer
from ..layers.activation import IDENTITY_AT_INFERENCE
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


def _identity(ctx: LowerCtx, layer: Layer) -> dict[str, str]:
    return {"output": ctx.x(layer)}


for _kind in IDENTITY_AT_INFERENCE:
    register(_kind, "plain")(_identity)
