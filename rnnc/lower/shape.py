"""ONNX forms of the layers in rnnc/layers/shape.py."""
from __future__ import annotations

from dataclasses import replace

from ..ir.graph import Layer
from .context import INT64_MIN, LowerCtx, Lowered
from .registry import register, rule

INT64_MAX = -(INT64_MIN + 1)


def _fixed(dims) -> bool:
    return all(isinstance(d, int) for d in dims)


@register("TimeDistributed", "plain")
def time_distributed(ctx: LowerCtx, layer: Layer) -> dict[str, str]:
    # [B, T, ...] -> [B*T, ...] -> the layer's own rule -> [B, T, ...]. The wrapped layer is
    # lowered as a copy named like the wrapper, so its weights `<wrapper>/<param>` resolve; it
    # reads the pseudo input `<wrapper>/step`, typed as Keras builds it: (batch, *input[2:]).
    b = ctx.b
    assert layer.wrapped is not None, "a TimeDistributed layer carries its wrapped layer"
    inner = replace(layer.wrapped, name=layer.name)
    x = ctx.x(layer)
    xt = ctx.graph.type_of(layer.inputs[0])
    rest = xt.dims[2:]
    shape_in = b.const([-1, *rest]) if _fixed(rest) else \
        b.op("Concat", [b.const([-1]), b.op("Shape", [x], start=2)], axis=0)
    step = inner.inputs[0]
    graph = replace(ctx.graph, inputs={**ctx.graph.inputs, step.layer: xt.with_dims(xt.dims[0], *rest)})
    ctx.env[step] = b.op("Reshape", [x, shape_in])
    try:
        out = rule(inner.kind, "plain").lower(LowerCtx(b, graph, ctx.weights, ctx.target, ctx.env), inner)
    finally:
        del ctx.env[step]
    y = (out.ports if isinstance(out, Lowered) else out)["output"]
    lead, out_rest = layer.outputs["output"].dims[:2], layer.outputs["output"].dims[2:]
    if _fixed(out_rest) and any(isinstance(d, int) for d in lead):   # a constant shape: no shape arithmetic
        shape_out = b.const([d if isinstance(d, int) else -1 for d in lead] + list(out_rest))
    else:
        bt = b.op("Shape", [x], start=0, end=2)                              # [B, T]
        tail = b.const(list(out_rest)) if _fixed(out_rest) else b.op("Shape", [y], start=1)
        shape_out = b.op("Concat", [bt, tail], axis=0) if out_rest else bt
    return {"output": b.op("Reshape", [y, shape_out])}


@register("RepeatVector", "plain")
def repeat_vector(ctx: LowerCtx, layer: Layer) -> dict[str, str]:
    # [B, F] -> [B, 1, F] -> tiled n times on axis 1
    b = ctx.b
    y = ctx.unsqueeze(ctx.x(layer), 1)
    return {"output": b.op("Tile", [y, b.const([1, layer.config["n"], 1])])}


@register("Flatten", "plain")
def flatten(ctx: LowerCtx, layer: Layer) -> dict[str, str]:
    # channels_first: channels last first (Keras transposes to (0, 2, ..., 1)); then [B, prod]
    x = ctx.x(layer)
    rank = ctx.graph.type_of(layer.inputs[0]).rank
    if layer.config["data_format"] == "channels_first" and rank > 2:
        x = ctx.transpose(x, [0, *range(2, rank), 1])
    return {"output": ctx.b.op("Flatten", [x], axis=1)}


@register("Reshape", "plain")
def reshape(ctx: LowerCtx, layer: Layer) -> dict[str, str]:
    # the batch dim copied (0), the target shape as written (-1 inferred)
    b = ctx.b
    return {"output": b.op("Reshape", [ctx.x(layer), b.const([0, *layer.config["target_shape"]])])}


@register("Permute", "plain")
def permute(ctx: LowerCtx, layer: Layer) -> dict[str, str]:
    return {"output": ctx.transpose(ctx.x(layer), [0, *layer.config["dims"]])}


@register("Cropping1D", "plain")
def cropping1d(ctx: LowerCtx, layer: Layer) -> dict[str, str]:
    # x[:, a:T-b, :]
    b = ctx.b
    start, stop = layer.config["cropping"]
    c = b.const
    return {"output": b.op("Slice", [ctx.x(layer), c([start]), c([-stop if stop else INT64_MAX]), c([1])])}


@register("ZeroPadding1D", "plain")
def zero_padding1d(ctx: LowerCtx, layer: Layer) -> dict[str, str]:
    # zeros before and after the steps (axis 1; axis 2 for channels_first)
    b = ctx.b
    before, after = [0, 0, 0], [0, 0, 0]
    axis = 2 if layer.config["data_format"] == "channels_first" else 1
    before[axis], after[axis] = layer.config["padding"]
    return {"output": b.op("Pad", [ctx.x(layer), b.const(before + after)], mode="constant")}


@register("UpSampling1D", "plain")
def up_sampling1d(ctx: LowerCtx, layer: Layer) -> dict[str, str]:
    # each step `size` times: [B, T, F] -> [B, T, 1, F] -> [B, T, size, F] -> [B, T*size, F]
    b = ctx.b
    x = ctx.x(layer)
    feat = ctx.graph.type_of(layer.inputs[0]).dims[2]
    y = b.op("Tile", [ctx.unsqueeze(x, 2), b.const([1, 1, layer.config["size"], 1])])
    shape = b.const([0, -1, feat]) if isinstance(feat, int) else \
        b.op("Concat", [b.const([0, -1]), b.op("Shape", [x], start=2)], axis=0)
    return {"output": b.op("Reshape", [y, shape])}

