"""Convolution and pooling layers, channels_last (Keras 3 semantics; one LayerDef each, the ONNX
forms are in rnnc/lower/conv.py).

Shapes follow Keras's compute_conv_output_shape / compute_pooling_output_shape: `valid`
gives floor((n - (k - 1) * d - 1) / s) + 1 steps, `same` and `causal` ceil(n / s); `same`
pads (out - 1) * s + (k - 1) * d + 1 - n cells, the odd one at the end, `causal` pads
(k - 1) * d cells at the start. A symbolic size stays symbolic: unchanged where the layer
keeps it (same or causal with stride 1), else a new name `<layer>.<axis>` (Keras's None).
Average pooling divides by the number of cells of the window inside the input (the padding
is not counted: TensorFlow's and JAX's rule, and Keras's torch backend's for even padding).
Keras 3's convolutions and pooling layers do not support masking (the mask is dropped);
GlobalAveragePooling1D consumes it (a mean over the unmasked steps: 0 / 0 = NaN for a row with
every step masked, as in Keras)."""
from __future__ import annotations

from typing import Any

import numpy as np

from ..cells.activations import apply as activation
from ..ir.types import Dim, TensorType
from ..spec import schema as S
from ..spec.schema import Key
from .base import InferCtx, Inferred, LayerDef, RefCall, define

AXES = {1: ("steps",), 2: ("rows", "cols"), 3: ("dim1", "dim2", "dim3")}
CHANNELS_LAST = Key(S.enum("channels_last"), "channels_last")


def keras_channels_last(cfg: dict[str, Any]) -> list[str]:
    """A Keras config whose data_format is not channels_last (refused: rnnc reads channels_last)."""
    fmt = cfg.get("data_format", "channels_last")
    if fmt not in (None, "channels_last"):
        return [f"data_format={fmt!r} is not supported: rnnc compiles channels_last layers (batch, steps..., "
                "channels); rebuild the model with data_format='channels_last' (the weights are the same)"]
    return []


# -- shapes --------------------------------------------------------------------------

def out_len(n: int, k: int, s: int, d: int, padding: str) -> int:
    """Output size along one axis (n fixed)."""
    if padding == "valid":
        return (n - (k - 1) * d - 1) // s + 1
    return -(-n // s)


def same_pads(n: int, k: int, s: int, d: int) -> tuple[int, int]:
    """Keras's `same` padding of one axis: (before, after), the odd cell after."""
    total = max((out_len(n, k, s, d, "same") - 1) * s + (k - 1) * d + 1 - n, 0)
    return total // 2, total - total // 2


def pads_of(n: int, k: int, s: int, d: int, padding: str) -> tuple[int, int]:
    if padding == "valid":
        return 0, 0
    if padding == "causal":
        return (k - 1) * d, 0
    return same_pads(n, k, s, d)


def _spatial(ctx: InferCtx, rank: int, kernel: tuple[int, ...], strides: tuple[int, ...],
             dilation: tuple[int, ...], padding: str, what: str) -> tuple[Dim, ...]:
    """The output's spatial dims (refusing a fixed input smaller than the window)."""
    ctx.rank(rank + 2)
    out: list[Dim] = []
    for i, (n, k, s, d) in enumerate(zip(ctx.x.dims[1:-1], kernel, strides, dilation)):
        span = (k - 1) * d + 1
        if isinstance(n, int):
            if padding == "valid" and n < span:
                raise ctx.fail("input", f"{ctx.kind} with padding 'valid' needs at least {span} {AXES[rank][i]} "
                               f"(the {what} spans {span}), got {n} in {ctx.x}")
            out.append(out_len(n, k, s, d, padding))
        elif padding != "valid" and s == 1:
            out.append(n)
        else:
            out.append(f"{ctx.name}.{AXES[rank][i]}")
    return tuple(out)


def _channels(ctx: InferCtx) -> int:
    return ctx.fixed(ctx.x.dims[-1], "channel count (last dim)")


def _strides_or_dilation(ctx: InferCtx) -> None:
    c = ctx.config
    if max(c["strides"]) > 1 and max(c["dilation_rate"]) > 1:
        raise ctx.fail("dilation_rate", f"strides > 1 cannot be combined with dilation_rate > 1 (as in Keras): "
                       f"got strides={list(c['strides'])}, dilation_rate={list(c['dilation_rate'])}")


# -- convolutions -------------------------------------------------------------------

def _conv_keys(rank: int, paddings: tuple[str, ...], *, filters: bool = True, groups: bool = False,
               depth: bool = False) -> dict[str, Key]:
    keys: dict[str, Key] = {}
    if filters:
        keys["filters"] = Key(S.positive_int, required=True)
    keys.update({"kernel_size": Key(S.int_tuple(rank), required=True),
                 "strides": Key(S.int_tuple(rank), (1,) * rank),
                 "padding": Key(S.enum(*paddings), "valid"),
                 "data_format": CHANNELS_LAST,
                 "dilation_rate": Key(S.int_tuple(rank), (1,) * rank)})
    if groups:
        keys["groups"] = Key(S.positive_int, 1)
    if depth:
        keys["depth_multiplier"] = Key(S.positive_int, 1)
    keys.update({"activation": Key(S.optional_activation, "linear"), "use_bias": Key(S.boolean, True)})
    return keys


def _conv_infer(rank: int):
    def infer(ctx: InferCtx) -> Inferred:
        c = ctx.config
        cin = _channels(ctx)
        _strides_or_dilation(ctx)
        sp = _spatial(ctx, rank, c["kernel_size"], c["strides"], c["dilation_rate"], c["padding"], "kernel")
        g, f = c["groups"], c["filters"]
        if cin % g:
            raise ctx.fail("groups", f"the input's {cin} channels must divide into groups={g} ({ctx.x})")
        if f % g:
            raise ctx.fail("groups", f"filters={f} must divide into groups={g}")
        params = {"kernel": (*c["kernel_size"], cin // g, f)}
        if c["use_bias"]:
            params["bias"] = (f,)
        return Inferred({"output": TensorType("float32", (ctx.x.dims[0], *sp, f))}, params)
    return infer


def _depthwise_infer(separable: bool):
    def infer(ctx: InferCtx) -> Inferred:
        c = ctx.config
        cin = _channels(ctx)
        _strides_or_dilation(ctx)
        sp = _spatial(ctx, 1, c["kernel_size"], c["strides"], c["dilation_rate"], c["padding"], "kernel")
        dm = c["depth_multiplier"]
        if separable:
            params = {"depthwise_kernel": (*c["kernel_size"], cin, dm), "pointwise_kernel": (1, cin * dm, c["filters"])}
            out = c["filters"]
        else:
            params = {"kernel": (*c["kernel_size"], cin, dm)}
            out = cin * dm
        if c["use_bias"]:
            params["bias"] = (out,)
        return Inferred({"output": TensorType("float32", (ctx.x.dims[0], *sp, out))}, params)
    return infer


def _window_views(x: np.ndarray, kernel, strides, dilation, pads, fill: float):
    """Yield (kernel offset, x's cells under that offset for every output position): x padded
    with `fill`, (B, *out, C) per offset."""
    rank = len(kernel)
    xp = np.pad(x, [(0, 0), *pads, (0, 0)], constant_values=fill)
    outs = [(xp.shape[1 + i] - (kernel[i] - 1) * dilation[i] - 1) // strides[i] + 1 for i in range(rank)]
    for off in np.ndindex(*kernel):
        idx = tuple(slice(o * d, o * d + (n - 1) * s + 1, s) for o, d, n, s in zip(off, dilation, outs, strides))
        yield off, xp[(slice(None), *idx)]


def _pads(x: np.ndarray, cfg: dict, kernel, dilation) -> list[tuple[int, int]]:
    return [pads_of(n, k, s, d, cfg["padding"]) for n, k, s, d in zip(x.shape[1:-1], kernel, cfg["strides"], dilation)]


def conv(x: np.ndarray, kernel: np.ndarray, strides, dilation, pads, groups: int) -> np.ndarray:
    """Keras's convolution, channels_last: x (B, *n, Cin), kernel (*k, Cin / groups, F); filter f
    belongs to group f // (F / groups), zero padding `pads`."""
    k = kernel.shape[:-2]
    cg, f = kernel.shape[-2:]
    y = 0.0
    for off, v in _window_views(x, k, strides, dilation, pads, 0.0):
        vg = v.reshape(*v.shape[:-1], groups, cg)
        kg = kernel[off].reshape(cg, groups, f // groups)
        y = y + np.einsum("...gc,cgf->...gf", vg, kg).reshape(*v.shape[:-1], f)
    return y


def _finish(c: RefCall, y: np.ndarray) -> dict[str, np.ndarray]:
    if c.config["use_bias"]:
        y = y + c.w["bias"]
    return {"output": activation(c.config["activation"], y)}


def _conv_ref(c: RefCall) -> dict[str, np.ndarray]:
    cfg = c.config
    pads = _pads(c.x, cfg, cfg["kernel_size"], cfg["dilation_rate"])
    return _finish(c, conv(c.x, c.w["kernel"], cfg["strides"], cfg["dilation_rate"], pads, cfg["groups"]))


def depthwise(x: np.ndarray, kernel: np.ndarray, strides, dilation, pads) -> np.ndarray:
    """Keras's depthwise convolution: kernel (*k, C, m); output channel c * m + j."""
    k, (ch, m) = kernel.shape[:-2], kernel.shape[-2:]
    return conv(x, kernel.reshape(*k, 1, ch * m), strides, dilation, pads, ch)


def _depthwise_ref(c: RefCall) -> dict[str, np.ndarray]:
    cfg = c.config
    pads = _pads(c.x, cfg, cfg["kernel_size"], cfg["dilation_rate"])
    w = c.w["depthwise_kernel"] if "depthwise_kernel" in c.w else c.w["kernel"]
    y = depthwise(c.x, w, cfg["strides"], cfg["dilation_rate"], pads)
    if "pointwise_kernel" in c.w:
        y = y @ c.w["pointwise_kernel"][0]
    return _finish(c, y)


CONV1D = define(LayerDef("Conv1D", keys=_conv_keys(1, ("valid", "same", "causal"), groups=True),
                         infer=_conv_infer(1), reference=_conv_ref, default_name="conv1d", masking="drop",
                         keras_check=keras_channels_last))
CONV2D = define(LayerDef("Conv2D", keys=_conv_keys(2, ("valid", "same"), groups=True),
                         infer=_conv_infer(2), reference=_conv_ref, default_name="conv2d", masking="drop",
                         keras_check=keras_channels_last))
CONV3D = define(LayerDef("Conv3D", keys=_conv_keys(3, ("valid", "same"), groups=True),
                         infer=_conv_infer(3), reference=_conv_ref, default_name="conv3d", masking="drop",
                         keras_check=keras_channels_last))
SEPARABLE1D = define(LayerDef("SeparableConv1D", keys=_conv_keys(1, ("valid", "same"), depth=True),
                              infer=_depthwise_infer(True), reference=_depthwise_ref,
                              default_name="separable_conv1d", masking="drop", keras_check=keras_channels_last))
DEPTHWISE1D = define(LayerDef("DepthwiseConv1D", keys=_conv_keys(1, ("valid", "same"), filters=False, depth=True),
                              infer=_depthwise_infer(False), reference=_depthwise_ref,
                              default_name="depthwise_conv1d", masking="drop", keras_check=keras_channels_last))


# -- pooling ------------------------------------------------------------------------

def _pool_keys(rank: int, default_size: tuple[int, ...] | None) -> dict[str, Key]:
    size = Key(S.int_tuple(rank), required=True) if default_size is None else Key(S.int_tuple(rank), default_size)
    return {"pool_size": size, "strides": Key(S.optional(S.int_tuple(rank)), None),
            "padding": Key(S.enum("valid", "same"), "valid"), "data_format": CHANNELS_LAST}


def pool_strides(cfg: dict) -> tuple[int, ...]:
    """Keras: strides default to pool_size."""
    return cfg["strides"] if cfg["strides"] is not None else cfg["pool_size"]


def _pool_infer(rank: int):
    def infer(ctx: InferCtx) -> Inferred:
        c = ctx.config
        size = c["pool_size"]
        ch = _channels(ctx)
        sp = _spatial(ctx, rank, size, pool_strides(c), (1,) * rank, c["padding"], "pool")
        return Inferred({"output": TensorType("float32", (ctx.x.dims[0], *sp, ch))})
    return infer


def _pool_ref(mode: str):
    def ref(c: RefCall) -> dict[str, np.ndarray]:
        cfg = c.config
        size, strides = cfg["pool_size"], pool_strides(cfg)
        ones = (1,) * len(size)
        pads = [pads_of(n, k, s, 1, cfg["padding"]) for n, k, s in zip(c.x.shape[1:-1], size, strides)]
        if mode == "max":
            return {"output": np.max([v for _, v in _window_views(c.x, size, strides, ones, pads, -np.inf)], axis=0)}
        total = sum(v for _, v in _window_views(c.x, size, strides, ones, pads, 0.0))
        inside = np.ones((1, *c.x.shape[1:-1], 1))
        count = sum(v for _, v in _window_views(inside, size, strides, ones, pads, 0.0))
        return {"output": total / count}      # the padding is not counted
    return ref


POOLS = {}
for _rank in (1, 2):
    for _mode, _cls in (("max", "MaxPooling"), ("average", "AveragePooling")):
        _kind = f"{_cls}{_rank}D"
        _default = ((2,) * _rank) if _mode == "max" else None
        POOLS[_kind] = define(LayerDef(
            _kind, keys=_pool_keys(_rank, _default), infer=_pool_infer(_rank), reference=_pool_ref(_mode),
            default_name=f"{'max' if _mode == 'max' else 'average'}_pooling{_rank}d", masking="drop",
            keras_check=keras_channels_last))


# -- global pooling -------------------------------------------------------------------

def _global_infer(rank: int):
    def infer(ctx: InferCtx) -> Inferred:
        ctx.rank(rank + 2)
        ch = _channels(ctx)
        dims = (ctx.x.dims[0], *(1,) * rank, ch) if ctx.config["keepdims"] else (ctx.x.dims[0], ch)
        return Inferred({"output": TensorType("float32", dims)})
    return infer


def _global_ref(mode: str, rank: int):
    def ref(c: RefCall) -> dict[str, np.ndarray]:
        axes = tuple(range(1, rank + 1))
        keep = c.config["keepdims"]
        m = c.masks[0] if c.masks else None
        if mode == "max":
            return {"output": np.max(c.x, axis=axes, keepdims=keep)}
        if m is None:
            return {"output": np.mean(c.x, axis=axes, keepdims=keep)}
        mf = m[..., None].astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):    # an all-masked row: 0 / 0 = NaN, as in Keras
            return {"output": np.sum(np.where(m[..., None], c.x, 0.0), axis=1, keepdims=keep)
                    / np.sum(mf, axis=1, keepdims=keep)}
    return ref


GLOBAL_POOLS = {}
for _rank in (1, 2):
    for _mode, _cls in (("max", "GlobalMaxPooling"), ("average", "GlobalAveragePooling")):
        _kind = f"{_cls}{_rank}D"
        GLOBAL_POOLS[_kind] = define(LayerDef(
            _kind, keys={"data_format": CHANNELS_LAST, "keepdims": Key(S.boolean, False)},
            infer=_global_infer(_rank), reference=_global_ref(_mode, _rank),
            default_name=f"global_{'max' if _mode == 'max' else 'average'}_pooling{_rank}d",
            masking="consume" if _kind == "GlobalAveragePooling1D" else "drop", keras_check=keras_channels_last))
