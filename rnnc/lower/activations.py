"""Activations as ONNX: as nodes (layers, Loop bodies) and as the `activations`
attribute of the native LSTM/GRU/RNN ops."""
from __future__ import annotations

from typing import Callable

from ..cells.activations import NAMES, SELU_ALPHA, SELU_SCALE
from ..emit.builder import GraphBuilder

# Keras name → (ONNX RNN-op activation, alpha, beta). Keras 3's hard_sigmoid is
# relu6(x + 3) / 6 = HardSigmoid(alpha=1/6, beta=0.5); ONNX's default alpha is 0.2.
RNN_OP: dict[str, tuple[str, float | None, float | None]] = {
    "tanh": ("Tanh", None, None),
    "sigmoid": ("Sigmoid", None, None),
    "relu": ("Relu", None, None),
    "hard_sigmoid": ("HardSigmoid", 1.0 / 6.0, 0.5),
    "linear": ("Affine", 1.0, 0.0),
    "elu": ("Elu", 1.0, None),
    "softsign": ("Softsign", None, None),
    # not softplus: ONNX Runtime's recurrent ops compute log(1 + exp(x)), which overflows to inf
    # above x = 88 (its Softplus op, used in the Loop, is stable)
}


_ONNX: dict[str, Callable[[GraphBuilder, str], str]] = {
    "linear": lambda b, x: x,
    "tanh": lambda b, x: b.op("Tanh", [x]),
    "sigmoid": lambda b, x: b.op("Sigmoid", [x]),
    "relu": lambda b, x: b.op("Relu", [x]),
    "hard_sigmoid": lambda b, x: b.op("HardSigmoid", [x], alpha=1.0 / 6.0, beta=0.5),
    "softmax": lambda b, x: b.op("Softmax", [x], axis=-1),
    "elu": lambda b, x: b.op("Elu", [x], alpha=1.0),
    "selu": lambda b, x: b.op("Selu", [x], alpha=SELU_ALPHA, gamma=SELU_SCALE),
    "softsign": lambda b, x: b.op("Softsign", [x]),
    "softplus": lambda b, x: b.op("Softplus", [x]),
    "gelu": lambda b, x: b.op("Gelu", [x], approximate="none"),              # Keras 3 default: exact (erf) form
    "silu": lambda b, x: b.op("Mul", [x, b.op("Sigmoid", [x])], name="Silu"),   # x * sigmoid(x)
}
if set(_ONNX) != set(NAMES):   # a developer error: every activation needs both forms
    raise RuntimeError(f"activations without an ONNX form: {sorted(set(NAMES) - set(_ONNX))}; "
                       f"ONNX forms of unknown activations: {sorted(set(_ONNX) - set(NAMES))}")


def emit(b: GraphBuilder, name: str, x: str) -> str:
    """y = activation(x) as ONNX nodes (Keras 3 definitions; `linear` is x itself)."""
    fn = _ONNX.get(name)
    if fn is None:
        raise ValueError(f"unknown activation {name!r}")
    return fn(b, x)
