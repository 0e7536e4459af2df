"""ONNX forms of the layers in rnnc/layers/conv.py.

ONNX Conv and pooling read channels-first: each rule transposes its input to
(batch, channels, spatial...) and its output back. Between two such layers the pair
(back, then forth again) cancels out and rnnc/emit/peephole.py removes it, so a run of
convolutions and pooling layers changes layout once at each edge. Elementwise activations
are applied before the transpose back (so they do not separate a pair); softmax (over the
channels, the last axis) after it."""
from __future__ import annotations

import numpy as np

from ..ir.graph import Layer
from ..layers.conv import GLOBAL_POOLS, POOLS, pads_of, pool_strides
from . import activations
from .context import LowerCtx
from .registry import register

TO_FIRST = {3: [0, 2, 1], 4: [0, 3, 1, 2], 5: [0, 4, 1, 2, 3]}    # channels_last -> channels_first
TO_LAST = {3: [0, 2, 1], 4: [0, 2, 3, 1], 5: [0, 2, 3, 4, 1]}     # and back


def _pad_attrs(ctx: LowerCtx, layer: Layer, kernel, strides, dilation) -> dict:
    """ONNX pads (begins..., ends...) of Keras's padding, or auto_pad SAME_UPPER (the odd cell
    at the end, as Keras) where `same` with a stride > 1 meets a symbolic size."""
    padding = layer.config["padding"]
    spatial = ctx.graph.type_of(layer.inputs[0]).dims[1:-1]
    if padding == "same" and any(not isinstance(n, int) and s > 1 for n, s in zip(spatial, strides)):
        return {"auto_pad": "SAME_UPPER"}
    # a symbolic size here has stride 1 or no `same` padding: its pads do not depend on it
    pads = [pads_of(n if isinstance(n, int) else 1, k, s, d, padding) for n, k, s, d in zip(spatial, kernel, strides, dilation)]
    return {"pads": [p[0] for p in pads] + [p[1] for p in pads]}


def _channels_first(ctx: LowerCtx, layer: Layer) -> tuple[str, int]:
    rank = ctx.graph.type_of(layer.inputs[0]).rank
    return ctx.transpose(ctx.x(layer), TO_FIRST[rank], name="ToChannelsFirst"), rank


def _finish(ctx: LowerCtx, layer: Layer, y: str, rank: int) -> dict[str, str]:
    act = layer.config.get("activation", "linear")
    if act != "softmax":
        y = activations.emit(ctx.b, act, y)
    y = ctx.transpose(y, TO_LAST[rank], name="ToChannelsLast")
    if act == "softmax":
        y = activations.emit(ctx.b, act, y)
    return {"output": y}


def _onnx_kernel(w: np.ndarray) -> np.ndarray:
    """Keras (*k, in, out) -> ONNX (out, in, *k)."""
    n = w.ndim - 2
    return np.ascontiguousarray(np.transpose(w, (n + 1, n, *range(n))))


def _conv(ctx: LowerCtx, layer: Layer, x: str, kernel: np.ndarray, group: int, *, pads: dict,
          bias: str | None, strides, dilation, name: str = "Conv") -> str:
    ins = [x, ctx.b.initializer(name.lower() + "_kernel", _onnx_kernel(kernel))]
    if bias is not None:
        ins.append(bias)
    k = list(kernel.shape[:-2])
    return ctx.b.op("Conv", ins, kernel_shape=k, strides=list(strides), dilations=list(dilation), group=group,
                    name=name, **pads)


def _bias(ctx: LowerCtx, layer: Layer) -> str | None:
    return ctx.b.initializer("bias", ctx.w(layer.name, "bias")) if layer.config["use_bias"] else None


def _plain_conv(ctx: LowerCtx, layer: Layer) -> dict[str, str]:
    # y = act(conv(x, kernel) + bias), as ONNX Conv (channels-first) with `groups` groups
    c = layer.config
    x, rank = _channels_first(ctx, layer)
    pads = _pad_attrs(ctx, layer, c["kernel_size"], c["strides"], c["dilation_rate"])
    y = _conv(ctx, layer, x, ctx.w(layer.name, "kernel"), c["groups"], pads=pads, bias=_bias(ctx, layer),
              strides=c["strides"], dilation=c["dilation_rate"])
    return _finish(ctx, layer, y, rank)


register("Conv1D", "plain")(_plain_conv)
register("Conv2D", "plain")(_plain_conv)
register("Conv3D", "plain")(_plain_conv)


def _depthwise_kernel(w: np.ndarray) -> np.ndarray:
    """(*k, C, m) -> (*k, 1, C * m): one group per channel, output channel c * m + j."""
    return w.reshape(*w.shape[:-2], 1, w.shape[-2] * w.shape[-1])


@register("DepthwiseConv1D", "plain")
def depthwise_conv(ctx: LowerCtx, layer: Layer) -> dict[str, str]:
    c = layer.config
    w = ctx.w(layer.name, "kernel")
    x, rank = _channels_first(ctx, layer)
    pads = _pad_attrs(ctx, layer, c["kernel_size"], c["strides"], c["dilation_rate"])
    y = _conv(ctx, layer, x, _depthwise_kernel(w), w.shape[-2], pads=pads, bias=_bias(ctx, layer),
              strides=c["strides"], dilation=c["dilation_rate"])
    return _finish(ctx, layer, y, rank)


@register("SeparableConv1D", "plain")
def separable_conv(ctx: LowerCtx, layer: Layer) -> dict[str, str]:
    # depthwise conv (one group per channel), then a 1-wide conv (the pointwise kernel) + bias
    c = layer.config
    dw = ctx.w(layer.name, "depthwise_kernel")
    x, rank = _channels_first(ctx, layer)
    pads = _pad_attrs(ctx, layer, c["kernel_size"], c["strides"], c["dilation_rate"])
    y = _conv(ctx, layer, x, _depthwise_kernel(dw), dw.shape[-2], pads=pads, bias=None,
              strides=c["strides"], dilation=c["dilation_rate"], name="DepthwiseConv")
    y = _conv(ctx, layer, y, ctx.w(layer.name, "pointwise_kernel"), 1, pads={}, bias=_bias(ctx, layer),
              strides=(1,), dilation=(1,), name="PointwiseConv")
    return _finish(ctx, layer, y, rank)


def _pool(op: str):
    def rule(ctx: LowerCtx, layer: Layer) -> dict[str, str]:
        c = layer.config
        size, strides = c["pool_size"], pool_strides(c)
        x, rank = _channels_first(ctx, layer)
        pads = _pad_attrs(ctx, layer, size, strides, (1,) * len(size))
        extra = {"count_include_pad": 0} if op == "AveragePool" else {}   # Keras: padding not counted
        if op == "MaxPool" and all(s == 1 for s in strides) and any(pads.get("pads", ())):
            # onnx.reference (1.23) mis-pads MaxPool with strides 1 (1-D: an IndexError; 2-D: pads
            # read as top, bottom, left, right): pad with -inf first, which is the same maximum
            b = ctx.b
            n = len(size)
            p = pads.pop("pads")
            x = b.op("Pad", [x, b.const([0, 0, *p[:n], 0, 0, *p[n:]]),
                            b.const(np.float32(-np.inf), dtype="float32")], mode="constant")
        y = ctx.b.op(op, [x], kernel_shape=list(size), strides=list(strides), **pads, **extra)
        return _finish(ctx, layer, y, rank)
    return rule


for _kind in POOLS:
    register(_kind, "plain")(_pool("MaxPool" if _kind.startswith("Max") else "AveragePool"))


def _global(op: str, rank: int):
    def rule(ctx: LowerCtx, layer: Layer) -> dict[str, str]:
        # a reduction over the spatial axes, channels_last as it stands (no layout change)
        b = ctx.b
        x = ctx.x(layer)
        axes = b.const(list(range(1, rank + 1)))
        keep = int(layer.config["keepdims"])
        mask = ctx.mask(layer)
        if op == "ReduceMean" and mask is not None:
            # Keras: sum(where(mask, x, 0)) / sum(mask) over the steps (0 / 0 = NaN if all are masked)
            m = b.op("Unsqueeze", [mask, b.const([-1])])                                   # [B, T, 1]
            zero = b.const(np.float32(0.0), dtype="float32")
            total = b.op("ReduceSum", [b.op("Where", [m, x, zero]), axes], keepdims=keep)
            count = b.op("ReduceSum", [b.op("Cast", [m], to=1), axes], keepdims=keep)
            return {"output": b.op("Div", [total, count], name="MaskedMean")}
        return {"output": b.op(op, [x, axes], keepdims=keep)}
    return rule


for _kind in GLOBAL_POOLS:
    register(_kind, "plain")(_global("ReduceMax" if "Max" in _kind else "ReduceMean", int(_kind[-2])))
