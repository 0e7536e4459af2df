"""Activation layers and the layers that are identity at inference (Keras 3 semantics).

Each kind is one LayerDef; its ONNX form is in rnnc/lower/activation.py."""
from __future__ import annotations

import numpy as np

from ..spec import schema as S
from ..spec.schema import Key
from .base import InferCtx, Inferred, LayerDef, RefCall, define


def _same(ctx: InferCtx) -> Inferred:
    return Inferred({"output": ctx.x})


def relu(x: np.ndarray, negative_slope: float = 0.0, max_value: float | None = None,
         threshold: float = 0.0) -> np.ndarray:
    """Keras 3's relu (keras.activations.relu / layers.ReLU): x where threshold <= x (capped at
    max_value), negative_slope * (x - threshold) below the threshold."""
    y = np.where(x >= threshold, x, negative_slope * (x - threshold))
    return np.minimum(y, max_value) if max_value is not None else y


def _relu_ref(c: RefCall) -> dict[str, np.ndarray]:
    cfg = c.config
    return {"output": relu(c.x, cfg["negative_slope"], cfg["max_value"], cfg["threshold"])}


RELU = define(LayerDef(
    "ReLU",
    keys={"max_value": Key(S.optional(S.nonneg_float), None), "negative_slope": Key(S.nonneg_float, 0.0),
          "threshold": Key(S.nonneg_float, 0.0)},
    infer=_same, reference=_relu_ref, default_name="re_lu"))


def _leaky_relu_ref(c: RefCall) -> dict[str, np.ndarray]:
    return {"output": relu(c.x, c.config["negative_slope"])}


# Keras 3's layer defaults to 0.3 (the keras.activations.leaky_relu function to 0.2)
LEAKY_RELU = define(LayerDef(
    "LeakyReLU", keys={"negative_slope": Key(S.nonneg_float, 0.3)},
    infer=_same, reference=_leaky_relu_ref, default_name="leaky_re_lu"))


def _elu_ref(c: RefCall) -> dict[str, np.ndarray]:
    x = c.x
    return {"output": np.where(x > 0, x, c.config["alpha"] * np.expm1(np.minimum(x, 0.0)))}


ELU = define(LayerDef("ELU", keys={"alpha": Key(S.number, 1.0)}, infer=_same, reference=_elu_ref,
                      default_name="elu"))


def _prelu_infer(ctx: InferCtx) -> Inferred:
    # Keras 3: alpha has the input's shape without the batch axis, 1 on each shared axis
    x, shared = ctx.x, ctx.config["shared_axes"] or ()
    if x.rank < 2:
        raise ctx.fail("input", f"PReLU expects an input of rank 2 or more, got {x}")
    for a in shared:
        if not 1 <= a < x.rank:
            raise ctx.fail("shared_axes", f"expected axes in 1..{x.rank - 1} (not the batch axis) for input {x}, "
                           f"got {list(shared)}")
    shape = tuple(1 if i in shared else ctx.fixed(d, f"size on axis {i} (or list the axis in shared_axes)")
                  for i, d in enumerate(x.dims) if i > 0)
    return Inferred({"output": x}, params={"alpha": shape})


def _prelu_ref(c: RefCall) -> dict[str, np.ndarray]:
    x = c.x
    return {"output": np.maximum(x, 0.0) - c.w["alpha"] * np.maximum(-x, 0.0)}   # relu(x) - alpha * relu(-x)


PRELU = define(LayerDef(
    "PReLU", keys={"shared_axes": Key(S.optional(S.int_tuple(None, minimum=None)), None)},
    infer=_prelu_infer, reference=_prelu_ref, default_name="p_re_lu"))


# Keras 3 (layers/activations/softmax.py): masked positions become -1e9 before the softmax and
# 0 after it (a fully masked row gives zeros, not a uniform distribution)
SOFTMAX_MASKED = -1e9


def axes_of(v: int | tuple[int, ...]) -> tuple[int, ...]:
    """An `axis` key (an integer or a list) as a tuple."""
    return (v,) if isinstance(v, int) else tuple(v)


def _axis(v):
    """An integer or a non-empty list of integers (kept as written: an int stays an int)."""
    if isinstance(v, int) and not isinstance(v, bool):
        return True, v, ""
    return S.int_tuple(None, minimum=None)(v)


def _softmax_axes(ctx: InferCtx) -> tuple[int, ...]:
    axes = axes_of(ctx.config["axis"])
    rank = ctx.x.rank
    if any(not -rank <= a < rank for a in axes) or len({a % rank for a in axes}) != len(axes):
        raise ctx.fail("axis", f"expected distinct axes in -{rank}..{rank - 1} for input {ctx.x}, got {list(axes)}")
    return axes


def _softmax_infer(ctx: InferCtx) -> Inferred:
    _softmax_axes(ctx)
    x, notes = ctx.x, ()
    if ctx.masks[0] is not None:
        # rnnc's masks have their tensor's dims but the last. Keras 3 broadcasts the mask against
        # the input as NumPy does, aligning the last axes: mask[i, j] of a (batch, time) mask
        # selects x[..., i, j]. Each aligned pair must agree (Keras refuses fixed sizes that differ)
        mdims = x.dims[:-1]
        for k, (m, d) in enumerate(zip(reversed(mdims), reversed(x.dims))):
            if m == 1:
                continue
            what = f"mask axis {len(mdims) - 1 - k} ({m!r}) and input axis {x.rank - 1 - k} ({d!r})"
            if not ctx.same_dim(m, d, what):
                raise ctx.fail("input", f"Softmax with a mask: Keras 3 broadcasts the mask "
                               f"{x.with_dims(*mdims)} against the input {x} from the last axis (NumPy rules), and {what} differ")
        if x.rank > 2:
            notes = ("mask applied as Keras 3 applies it: broadcast against the input's last axes "
                     f"(mask[i, j] selects x[..., i, j]; the input has rank {x.rank})",)
    return Inferred({"output": x}, notes=notes)


def softmax(x: np.ndarray, axes: tuple[int, ...], mask: np.ndarray | None = None) -> np.ndarray:
    """Keras 3's Softmax layer (NumPy broadcasting of the mask)."""
    if mask is not None:
        x = np.where(mask, x, SOFTMAX_MASKED)
    e = np.exp(x - np.max(x, axis=axes, keepdims=True))
    y = e / np.sum(e, axis=axes, keepdims=True)
    return y if mask is None else np.where(mask, y, 0.0)


def _softmax_ref(c: RefCall) -> dict[str, np.ndarray]:
    return {"output": softmax(c.x, axes_of(c.config["axis"]), c.masks[0])}


SOFTMAX = define(LayerDef(
    "Softmax", keys={"axis": Key(_axis, -1)},
    infer=_softmax_infer, reference=_softmax_ref, default_name="softmax"))


# -- identity at inference: noise, dropout and regularizers act only in training ------

def _identity(kind: str, rank: int | None = None):
    def infer(ctx: InferCtx) -> Inferred:
        if rank is not None:
            ctx.rank(rank)
        return Inferred({"output": ctx.x}, notes=(f"{kind} is the identity at inference",))
    return infer


def _identity_ref(c: RefCall) -> dict[str, np.ndarray]:
    return {"output": c.x}


def _unit_rate(v):
    """Keras's dropout rates: a number in [0, 1]."""
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 1
    return ok, float(v) if ok else v, "a number in [0, 1]"


def _noise_shape(v):
    ok = v is None or (isinstance(v, list) and all(d is None or (isinstance(d, int) and not isinstance(d, bool)
                                                                  and d > 0) for d in v))
    return ok, None if v is None else tuple(v) if ok else v, "null or a list of positive integers and nulls"


_RATE = {"rate": Key(_unit_rate, required=True)}
# kind -> (Keras's default name, keys, required input rank); every one passes the mask on
# (Keras 3: supports_masking)
IDENTITY_AT_INFERENCE = {
    "GaussianNoise": ("gaussian_noise", {"stddev": Key(S.nonneg_float, required=True)}, None),
    "GaussianDropout": ("gaussian_dropout", _RATE, None),
    "AlphaDropout": ("alpha_dropout", {**_RATE, "noise_shape": Key(_noise_shape, None)}, None),
    "SpatialDropout1D": ("spatial_dropout1d", _RATE, 3),
    "SpatialDropout2D": ("spatial_dropout2d", {**_RATE, "data_format": Key(
        S.enum("channels_last", "channels_first"), "channels_last")}, 4),
    "ActivityRegularization": ("activity_regularization", {"l1": Key(S.nonneg_float, 0.0),
                                                           "l2": Key(S.nonneg_float, 0.0)}, None),
}
for _kind, (_name, _keys, _rank) in IDENTITY_AT_INFERENCE.items():
    define(LayerDef(_kind, keys=_keys, infer=_identity(_kind, _rank), reference=_identity_ref, default_name=_name,
                    keras_ignore=frozenset({"seed"})))
