"""The activations of docs/spec.md, with Keras 3's definitions (NumPy), used by the reference
interpreter. Their ONNX forms live in rnnc/lower/activations.py."""
from __future__ import annotations

import math
from typing import Callable

import numpy as np

# Keras 3's SELU constants (keras.activations.selu).
SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - np.max(x, axis=-1, keepdims=True))
    return e / np.sum(e, axis=-1, keepdims=True)


def _elu(x: np.ndarray) -> np.ndarray:
    return np.where(x > 0, x, np.expm1(np.minimum(x, 0)))


_erf = np.vectorize(math.erf, otypes=[np.float64])

NUMPY: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "tanh": np.tanh,
    "sigmoid": _sigmoid,
    "relu": lambda x: np.maximum(x, 0),
    # Keras 3: relu6(x + 3) / 6, i.e. slope 1/6 (Keras 2 used 0.2).
    "hard_sigmoid": lambda x: np.clip(x + 3.0, 0.0, 6.0) / 6.0,
    "linear": lambda x: x,
    "softmax": _softmax,
    "elu": _elu,
    "selu": lambda x: SELU_SCALE * np.where(x > 0, x, SELU_ALPHA * np.expm1(np.minimum(x, 0))),
    "softsign": lambda x: x / (1.0 + np.abs(x)),
    "softplus": lambda x: np.logaddexp(0.0, x),
    # Keras 3's gelu defaults to the exact (erf) form.
    "gelu": lambda x: 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0))),
    "silu": lambda x: x * _sigmoid(x),
}

NAMES: tuple[str, ...] = tuple(NUMPY)
# softmax normalizes over the last axis: applied to gates stacked side by side it would mix
# them, so it goes to each gate on its own (as Keras applies it)
ACROSS_AXIS = frozenset({"softmax"})
# the activations whose ONNX op ONNX Runtime's CPU provider fuses into the Gemm right before it
# (its GemmActivationFusion makes one FusedGemm kernel of the pair): a Gemm per gate run, each
# followed by its activation, then runs as one kernel per run (rnnc/passes/sink_slices.py)
GEMM_FUSED = frozenset({"tanh", "sigmoid", "relu", "hard_sigmoid", "elu", "selu", "softsign", "softplus"})


def per_gate(ops, name: str, x, n: int) -> list:
    """act(name) of each of the n gates stacked along x's last axis: one op over all of them
    for an element-wise activation."""
    if name in ACROSS_AXIS:
        return [ops.act(name, g) for g in ops.split(x, n)]
    return ops.split(ops.act(name, x), n)


def apply(name: str, x: np.ndarray) -> np.ndarray:
    """Apply activation `name` in float64 and return x's dtype."""
    y = NUMPY[name](np.asarray(x, dtype=np.float64))
    return np.asarray(y, dtype=np.asarray(x).dtype)
