"""Activations as ONNX: as nodes (layers, Loop bodies) and as the `activations`
attribute of the native LSTM/GRU/RNN ops."""
from __future__ import annotations

from ..cells.activations import SELU_ALPHA, SELU_SCALE
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


def emit(b: GraphBuilder, name: str, x: str) -> str:
    """y = activation(x) as ONNX nodes (Keras 3 definitions)."""
    if name == "linear":
        return x
    if name == "tanh":
        return b.op("Tanh", [x])
    if name == "sigmoid":
        return b.op("Sigmoid", [x])
    if name == "relu":
        return b.op("Relu", [x])
    if name == "hard_sigmoid":
        return b.op("HardSigmoid", [x], alpha=1.0 / 6.0, beta=0.5)
    if name == "softmax":
        return b.op("Softmax", [x], axis=-1)
    if name == "elu":
        return b.op("Elu", [x], alpha=1.0)
    if name == "selu":
        return b.op("Selu", [x], alpha=SELU_ALPHA, gamma=SELU_SCALE)
    if name == "softsign":
        return b.op("Softsign", [x])
    if name == "softplus":
        return b.op("Softplus", [x])
    if name == "gelu":  # Keras 3 default: exact (erf) form
        return b.op("Gelu", [x], approximate="none")
    if name == "silu":  # x * sigmoid(x)
        return b.op("Mul", [x, b.op("Sigmoid", [x])], name="Silu")
    raise ValueError(f"unknown activation {name!r}")

