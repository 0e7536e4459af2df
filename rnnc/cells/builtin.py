"""The built-in cells, written once. Each cell states its equations (Keras 3's) against a
small op interface, so the same code drives the NumPy reference (rnnc/reference.py) and
the ONNX Loop lowering (rnnc/lower/loop.py).

Every cell is split into the part that depends on the step input only (`project`, hoisted
out of the time loop and computed for all steps at once) and the recurrent `step`.

Op interface (`ops`): matmul(a, b), matmul_add(a, b, c) = a @ b + c (a, b 2-D), affine(x, w, b)
= x @ w + b over any leading axes (b may be None), add(a, b), sub(a, b), mul(a, b), act(name, x),
split(x, n) -> list (last axis), one_minus(x), param(name), has(name); for the convolutional
cells, conv(x, w, b, strides, dilation, pads, from_input) (a convolution over the spatial axes,
b may be None; from_input: x is a step input in Keras's channels_last layout, else a state in
the ops' own layout) and split_channels(x, n) (along the channel axis of the ops' layout: the
last one for NumPy, the first after the batch in a time-loop body, as ONNX Conv reads)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from .activations import per_gate
from .gates import permute_gates


@dataclass(frozen=True)
class CellDef:
    kind: str
    gates: str                      # Keras gate order, as in lower/gates.py
    state_names: tuple[str, ...]
    param_shapes: Callable[[int, int, dict], dict[str, tuple[int, ...]]]
    prepare: Callable[[dict[str, np.ndarray], int, dict], dict[str, np.ndarray]]
    project: Callable[[Any, Any, int, dict], Any]
    step: Callable[[Any, Any, tuple, int, dict], tuple[Any, tuple]]
    # the time-loop body keeps the states and outputs channels-first (ONNX Conv's layout,
    # (channels, spatial...) per example); the loop transposes them at its edges only
    channels_first: bool = False


def _bias_shape(cfg: dict, shape: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
    return {"bias": shape} if cfg.get("use_bias", True) else {}


# ---- SimpleRNN:  h_t = act(x_t @ W + b + h_{t-1} @ U)
def _rnn_shapes(units: int, inp: int, cfg: dict) -> dict[str, tuple[int, ...]]:
    return {"kernel": (inp, units), "recurrent_kernel": (units, units), **_bias_shape(cfg, (units,))}


def _rnn_prepare(p: dict, units: int, cfg: dict) -> dict:
    return {"W": p["kernel"], "U": p["recurrent_kernel"], **({"b": p["bias"]} if "bias" in p else {})}


def _rnn_project(ops, x, units, cfg):
    # x W + b: [.., in] -> [.., G*u] (the input bias; GRU (reset_after) has its recurrent z r bias folded in)
    return ops.affine(x, ops.param("W"), ops.param("b") if ops.has("b") else None)


def _rnn_step(ops, xp, states, units, cfg):
    (h,) = states
    h = ops.act(cfg["activation"], ops.matmul_add(h, ops.param("U"), xp))
    return h, (h,)


# ---- LSTM (Keras gates i f c o; kept here as i f o c so one recurrent activation covers
# the three contiguous sigmoid gates):
#   z = x W + b + h U;  i, f, o = split(ra(z[:, :3u]));  g = act(z[:, 3u:])
#   c' = f * c + i * g;  h' = o * act(c')
def _lstm_shapes(units: int, inp: int, cfg: dict) -> dict[str, tuple[int, ...]]:
    return {"kernel": (inp, 4 * units), "recurrent_kernel": (units, 4 * units), **_bias_shape(cfg, (4 * units,))}


def _lstm_prepare(p: dict, units: int, cfg: dict) -> dict:
    out = {"W": permute_gates(p["kernel"], "keras_lstm", "rnnc_lstm"),
           "U": permute_gates(p["recurrent_kernel"], "keras_lstm", "rnnc_lstm")}
    if "bias" in p:
        out["b"] = permute_gates(p["bias"], "keras_lstm", "rnnc_lstm")
    return out


def _lstm_step(ops, xp, states, units, cfg):
    h, c = states
    z = ops.matmul_add(h, ops.param("U"), xp)                              # [B, 4u] (i f o c)
    ifo, g = ops.split(z, [3 * units, units])
    ra, act = cfg["recurrent_activation"], cfg["activation"]
    i, f, o = per_gate(ops, ra, ifo, 3)
    c = ops.add(ops.mul(f, c), ops.mul(i, ops.act(act, g)))
    h = ops.mul(o, ops.act(act, c))
    return h, (h, c)


# ---- GRU (gates z r h), Keras 3:
#   reset_after=True : xz,xr,xh = x W + b_in;  rz,rr,rh = h U + b_rec
#                      z = ra(xz+rz); r = ra(xr+rr); hh = act(xh + r * rh)
#   reset_after=False: xz,xr,xh = x W + b;  z = ra(xz + h Uz); r = ra(xr + h Ur)
#                      hh = act(xh + (r * h) Uh)
#   h' = z * h + (1 - z) * hh
def _gru_shapes(units: int, inp: int, cfg: dict) -> dict[str, tuple[int, ...]]:
    bias = (2, 3 * units) if cfg.get("reset_after", True) else (3 * units,)
    return {"kernel": (inp, 3 * units), "recurrent_kernel": (units, 3 * units), **_bias_shape(cfg, bias)}


def _gru_prepare(p: dict, units: int, cfg: dict) -> dict:
    out = {"W": p["kernel"]}
    if cfg.get("reset_after", True):
        # z and r add both biases to one sum: the recurrent one's z and r part is folded into
        # the input projection's bias (computed for all steps at once), so z and r are one
        # product h @ U_zr + xp_zr followed by their activation -- one FusedGemm on ONNX
        # Runtime's CPU provider -- and only hh's product keeps a bias of its own
        u = p["recurrent_kernel"]
        out["U_zr"], out["U_h"] = u[:, :2 * units], u[:, 2 * units:]
        if "bias" in p:
            b_in, b_rec = p["bias"][0], p["bias"][1]
            out["b"] = b_in + np.concatenate([b_rec[:2 * units], np.zeros_like(b_rec[2 * units:])])
            out["b_h"] = b_rec[2 * units:]
    else:
        out["U_zr"], out["U_h"] = p["recurrent_kernel"][:, : 2 * units], p["recurrent_kernel"][:, 2 * units:]
        if "bias" in p:
            out["b"] = p["bias"]
    return out


def _gru_step(ops, xp, states, units, cfg):
    (h,) = states
    ra, act = cfg["recurrent_activation"], cfg["activation"]
    if cfg.get("reset_after", True):
        xzr, xh = ops.split(xp, [2 * units, units])                         # xp: x W + b (b_rec's z r folded in)
        z, r = per_gate(ops, ra, ops.matmul_add(h, ops.param("U_zr"), xzr), 2)
        rh = (ops.matmul_add(h, ops.param("U_h"), ops.param("b_h")) if ops.has("b_h")
              else ops.matmul(h, ops.param("U_h")))                         # [B, u]
        hh = ops.act(act, ops.add(xh, ops.mul(r, rh)))
    else:
        xzr, xh = ops.split(xp, [2 * units, units])
        z, r = per_gate(ops, ra, ops.add(xzr, ops.matmul(h, ops.param("U_zr"))), 2)
        hh = ops.act(act, ops.add(xh, ops.matmul(ops.mul(r, h), ops.param("U_h"))))
    h = ops.add(ops.mul(z, h), ops.mul(ops.one_minus(z), hh))
    return h, (h,)


# ---- ConvLSTM (Keras 3's ConvLSTMCell, layers/rnn/conv_lstm.py; gates i f c o, kept as i f o c):
#   z = conv(x, W; strides, dilation, padding) + b + conv(h, U; stride 1, "same")
#   i, f, o = ra(z[i f o]);  g = act(z[c]);  c' = f * c + i * g;  h' = o * act(c')
# Per example: x (*spatial, in), h and c (*out_spatial, filters). cfg (rnnc/ir/build.py) adds
# input_pads and recurrent_pads, ((before, after), ...) per spatial axis.
def _convlstm_shapes(units: int, inp: int, cfg: dict) -> dict[str, tuple[int, ...]]:
    k = tuple(cfg["kernel_size"])
    return {"kernel": (*k, inp, 4 * units), "recurrent_kernel": (*k, units, 4 * units),
            **_bias_shape(cfg, (4 * units,))}


def _conv_kernel(w: np.ndarray) -> np.ndarray:
    """Keras (*k, in, 4u) in i f c o -> (4u, in, *k) in i f o c (ONNX Conv's layout)."""
    w = permute_gates(w, "keras_lstm", "rnnc_lstm")
    n = w.ndim - 2
    return np.ascontiguousarray(np.transpose(w, (n + 1, n, *range(n))))


def _convlstm_prepare(p: dict, units: int, cfg: dict) -> dict:
    out = {"W": _conv_kernel(p["kernel"]), "U": _conv_kernel(p["recurrent_kernel"])}
    if "bias" in p:
        out["b"] = permute_gates(p["bias"], "keras_lstm", "rnnc_lstm")
    return out


def _convlstm_project(ops, x, units, cfg):
    return ops.conv(x, ops.param("W"), ops.param("b") if ops.has("b") else None, tuple(cfg["strides"]),
                    tuple(cfg["dilation_rate"]), cfg["input_pads"], True)


def _convlstm_step(ops, xp, states, units, cfg):
    h, c = states
    ones = (1,) * len(cfg["kernel_size"])
    z = ops.add(xp, ops.conv(h, ops.param("U"), None, ones, ones, cfg["recurrent_pads"], False))
    ifo, g = ops.split_channels(z, [3 * units, units])
    act = cfg["activation"]
    i, f, o = ops.split_channels(ops.act(cfg["recurrent_activation"], ifo), 3)   # element-wise (build.py)
    c = ops.add(ops.mul(f, c), ops.mul(i, ops.act(act, g)))
    h = ops.mul(o, ops.act(act, c))
    return h, (h, c)


CELLS: dict[str, CellDef] = {
    "SimpleRNN": CellDef("SimpleRNN", "h", ("h",), _rnn_shapes, _rnn_prepare, _rnn_project, _rnn_step),
    "LSTM": CellDef("LSTM", "ifco", ("h", "c"), _lstm_shapes, _lstm_prepare, _rnn_project, _lstm_step),
    "GRU": CellDef("GRU", "zrh", ("h",), _gru_shapes, _gru_prepare, _rnn_project, _gru_step),
    "ConvLSTM": CellDef("ConvLSTM", "ifco", ("h", "c"), _convlstm_shapes, _convlstm_prepare, _convlstm_project,
                        _convlstm_step, channels_first=True),
}
CELL_TYPES = {"SimpleRNNCell": "SimpleRNN", "GRUCell": "GRU", "LSTMCell": "LSTM"}


class NumpyOps:
    """The op interface over NumPy arrays (the reference interpreter's backend)."""

    def __init__(self, params: dict[str, np.ndarray]):
        self.params = params

    def param(self, name: str) -> np.ndarray:
        return self.params[name]

    def has(self, name: str) -> bool:
        return name in self.params

    @staticmethod
    def affine(x, w, b):
        return x @ w if b is None else x @ w + b

    @staticmethod
    def matmul(a, b):
        return a @ b

    @staticmethod
    def matmul_add(a, b, c):
        return a @ b + c

    @staticmethod
    def add(a, b):
        return a + b

    @staticmethod
    def sub(a, b):
        return a - b

    @staticmethod
    def mul(a, b):
        return a * b

    @staticmethod
    def one_minus(a):
        return 1.0 - a

    @staticmethod
    def act(name, x):
        from .activations import apply
        return apply(name, x)

    @staticmethod
    def split(x, n):
        if isinstance(n, int):
            return np.split(x, n, axis=-1)
        return np.split(x, np.cumsum(n)[:-1], axis=-1)

    split_channels = split      # channels_last: the channels are the last axis

    @staticmethod
    def conv(x, w, b, strides, dilation, pads, from_input):
        """x (B, *n, in) channels_last, w (out, in, *k): Keras's convolution, its own arithmetic
        (rnnc/layers/conv.py), with zero padding `pads`."""
        from ..layers.conv import conv
        k = np.transpose(w, (*range(2, w.ndim), 1, 0))          # (*k, in, out)
        y = conv(x, k, strides, dilation, [tuple(p) for p in pads], 1)
        return y if b is None else y + b
