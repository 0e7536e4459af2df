"""Gate layouts as data, and the one permutation function that moves between them.
Keras: LSTM i f c o, GRU z r h. ONNX: LSTM i o f c, GRU z r h. PyTorch: LSTM i f g o
(g is Keras's c), GRU r z n (n is Keras's h)."""
from __future__ import annotations

import numpy as np

LAYOUTS: dict[str, str] = {
    "keras_lstm": "ifco",
    "onnx_lstm": "iofc",
    "torch_lstm": "ifco",   # i f g o, with g = c
    "keras_gru": "zrh",
    "onnx_gru": "zrh",
    "torch_gru": "rzh",     # r z n, with n = h
    "rnnc_lstm": "ifoc",    # the Loop body's order: one activation over the contiguous i f o
    "keras_rnn": "h",
    "onnx_rnn": "h",
}
ONNX_LAYOUT = {"LSTM": "onnx_lstm", "GRU": "onnx_gru", "SimpleRNN": "onnx_rnn"}
KERAS_LAYOUT = {"LSTM": "keras_lstm", "GRU": "keras_gru", "SimpleRNN": "keras_rnn"}


def permute_gates(w: np.ndarray, src: str, dst: str, *, axis: int = -1) -> np.ndarray:
    """Reorder the gate blocks of `w` along `axis` from layout `src` to layout `dst`."""
    a, b = LAYOUTS[src], LAYOUTS[dst]
    if sorted(a) != sorted(b):
        raise ValueError(f"layouts {src} ({a}) and {dst} ({b}) have different gates")
    blocks = np.split(w, len(a), axis=axis)
    return np.concatenate([blocks[a.index(g)] for g in b], axis=axis)
