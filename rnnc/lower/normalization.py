"""ONNX forms of the layers in rnnc/layers/normalization.py."""
from __future__ import annotations

import numpy as np

from ..ir.graph import Layer
from ..layers.normalization import broadcast_shape, layer_norm_axes
from .context import LowerCtx
from .registry import register


@register("LayerNormalization", "plain")
def layer_normalization(ctx: LowerCtx, layer: Layer) -> dict[str, str]:
    b, cfg, x = ctx.b, layer.config, ctx.x(layer)
    xt = ctx.graph.type_of(layer.inputs[0])
    written, pos = layer_norm_axes(cfg["axis"], xt.rank)
    eps = float(cfg["epsilon"])
    # Keras reshapes gamma and beta (sizes in the written order) onto the normalized axes
    dims = [xt.dims[i] if i in pos else 1 for i in range(xt.rank)]
    shape = broadcast_shape(tuple(dims), pos)
    w = {k: ctx.w(layer.name, k).astype(np.float32).reshape(shape) for k in ("gamma", "beta") if k in layer.params}
    # Keras's own choice (ops.nn._layer_normalization): axes contiguous as written (sorted) go
    # to torch's F.layer_norm, the others to its moments; rnnc takes ONNX's LayerNormalization
    # where the former are the last axes (F.layer_norm normalizes the last axes whatever they are)
    contiguous = all(b - a == 1 for a, b in zip(written, written[1:]))
    if contiguous and pos == list(range(pos[0], xt.rank)) and not cfg["rms_scaling"]:
        first = pos[0]
        scale = w["gamma"].reshape(shape[first:]) if "gamma" in w else np.ones(shape[first:], np.float32)
        ins = [x, b.initializer("gamma" if "gamma" in w else "ones", scale)]
        if "beta" in w:
            ins.append(b.initializer("beta", w["beta"].reshape(shape[first:])))
        return {"output": b.op("LayerNormalization", ins, axis=first, epsilon=eps)}
    axes = b.const(pos)
    one, e = b.const(np.float32(1.0), dtype="float32"), b.const(np.float32(eps), dtype="float32")
    mean = b.op("ReduceMean", [x, axes], keepdims=1)
    if cfg["rms_scaling"]:
        # variance = mean((x - mean)^2); y = x * rsqrt(variance + eps) * gamma
        d = b.op("Sub", [x, mean])
        var = b.op("ReduceMean", [b.op("Mul", [d, d]), axes], keepdims=1)
        inv = b.op("Div", [one, b.op("Sqrt", [b.op("Add", [var, e])])])
        y = b.op("Mul", [x, inv])
        return {"output": b.op("Mul", [y, b.initializer("gamma", w["gamma"])])}
    # Keras's moments: variance = mean(x^2) - mean^2; inv = rsqrt(variance + eps) * gamma;
    # y = x * inv + (beta - mean * inv)
    var = b.op("Sub", [b.op("ReduceMean", [b.op("Mul", [x, x]), axes], keepdims=1), b.op("Mul", [mean, mean])])
    inv = b.op("Div", [one, b.op("Sqrt", [b.op("Add", [var, e])])])
    if "gamma" in w:
        inv = b.op("Mul", [inv, b.initializer("gamma", w["gamma"])])
    res = b.op("Neg", [b.op("Mul", [mean, inv])])
    if "beta" in w:
        res = b.op("Add", [res, b.initializer("beta", w["beta"])])
    return {"output": b.op("Add", [b.op("Mul", [x, inv]), res])}
