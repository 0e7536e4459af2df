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


# -- identity at inference: noise and dropout act only in training ---------------------

def _identity(kind: str):
    def infer(ctx: InferCtx) -> Inferred:
        return Inferred({"output": ctx.x}, notes=(f"{kind} is the identity at inference",))
    return infer


def _identity_ref(c: RefCall) -> dict[str, np.ndarray]:
    return {"output": c.x}


IDENTITY_AT_INFERENCE = {
    "GaussianNoise": ("gaussian_noise", {"stddev": Key(S.nonneg_float, required=True)}),
}
for _kind, (_name, _keys) in IDENTITY_AT_INFERENCE.items():
    define(LayerDef(_kind, keys=_keys, infer=_identity(_kind), reference=_identity_ref, default_name=_name,
                    keras_ignore=frozenset({"seed"})))
