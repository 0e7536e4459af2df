"""Layer kinds of the normalization family (one LayerDef each; the ONNX forms are in rnnc/lower/normalization.py).

LayerNormalization follows Keras 3 (keras/src/layers/normalization/layer_normalization.py and
ops.nn._layer_normalization): the axes are sorted as written (so [-1, 1] is [-1, 1], not
[1, -1]); gamma and beta have the sizes of those axes in that order and are reshaped (not
transposed) onto the input's axes; the variance is E[x^2] - E[x]^2 (Keras's `moments`), and
with the deprecated rms_scaling the input is scaled by the variance (not the mean square),
without centring."""
from __future__ import annotations

import numpy as np

from ..spec import schema as S
from ..spec.schema import Key
from .activation import axes_of
from .base import InferCtx, Inferred, LayerDef, RefCall, define


def _axis(v):
    """An integer or a non-empty list of integers (an int stays an int)."""
    if isinstance(v, int) and not isinstance(v, bool):
        return True, v, ""
    return S.int_tuple(None, minimum=None)(v)


def layer_norm_axes(axis: int | tuple[int, ...], rank: int) -> tuple[list[int], list[int]]:
    """(Keras's order: the axes sorted as written, the input's axes they name in increasing order)."""
    written = sorted(axes_of(axis))
    return written, sorted(a % rank for a in written)


def has_gamma(cfg: dict) -> bool:
    return bool(cfg["scale"] or cfg["rms_scaling"])


def has_beta(cfg: dict) -> bool:
    return bool(cfg["center"] and not cfg["rms_scaling"])


def _layer_norm_infer(ctx: InferCtx) -> Inferred:
    x, cfg = ctx.x, ctx.config
    axes = axes_of(cfg["axis"])
    if any(not -x.rank <= a < x.rank for a in axes) or any(a % x.rank == 0 for a in axes) \
            or len({a % x.rank for a in axes}) != len(axes):
        raise ctx.fail("axis", f"expected distinct axes in 1..{x.rank - 1} or -{x.rank - 1}..-1 (not the batch "
                       f"axis) for input {x}, got {cfg['axis']}")
    written, _ = layer_norm_axes(cfg["axis"], x.rank)
    shape = tuple(ctx.fixed(x.dims[a], f"size on axis {a}") for a in written)
    params = {**({"gamma": shape} if has_gamma(cfg) else {}), **({"beta": shape} if has_beta(cfg) else {})}
    notes = ("rms_scaling (deprecated in Keras 3): x / sqrt(variance + epsilon) * gamma, not centred",) \
        if cfg["rms_scaling"] else ()
    return Inferred({"output": x}, params=params, notes=notes)


def broadcast_shape(dims: tuple, positions: list[int]) -> list[int]:
    return [int(d) if i in positions else 1 for i, d in enumerate(dims)]


def _layer_norm_ref(c: RefCall) -> dict[str, np.ndarray]:
    x, cfg = c.x, c.config
    _, pos = layer_norm_axes(cfg["axis"], x.ndim)
    ax = tuple(pos)
    shape = broadcast_shape(x.shape, pos)
    gamma = c.w["gamma"].reshape(shape) if "gamma" in c.w else 1.0
    beta = c.w["beta"].reshape(shape) if "beta" in c.w else 0.0
    if cfg["rms_scaling"]:
        y = x / np.sqrt(np.var(x, axis=ax, keepdims=True) + cfg["epsilon"]) * gamma
    else:
        mean = np.mean(x, axis=ax, keepdims=True)
        var = np.mean(x * x, axis=ax, keepdims=True) - mean * mean
        y = (x - mean) / np.sqrt(var + cfg["epsilon"]) * gamma + beta
    return {"output": y}


LAYER_NORMALIZATION = define(LayerDef(
    "LayerNormalization",
    keys={"axis": Key(_axis, -1), "epsilon": Key(S.positive_float, 0.001), "center": Key(S.boolean, True),
          "scale": Key(S.boolean, True), "rms_scaling": Key(S.boolean, False)},
    infer=_layer_norm_infer, reference=_layer_norm_ref, default_name="layer_normalization"))
