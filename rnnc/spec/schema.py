"""The spec's vocabulary as data: every layer type, its keys, their kinds and defaults
(Keras 3's names and defaults, docs/spec.md's tables)."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..cells.activations import NAMES as ACTIVATIONS

Check = Callable[[Any], "tuple[bool, Any, str]"]  # (ok, normalized value, expected-text)


def printable_name(v: Any) -> bool:
    """A name that reads well in ONNX and error messages: non-empty, no '/' (rnnc's scope
    separator), no control characters (newlines, NUL)."""
    return isinstance(v, str) and v != "" and "/" not in v and v.isprintable()


def _positive_int(v: Any) -> tuple[bool, Any, str]:
    ok = isinstance(v, int) and not isinstance(v, bool) and v > 0
    return ok, v, "a positive integer"


def _bool(v: Any) -> tuple[bool, Any, str]:
    return isinstance(v, bool), v, "true or false"


def _rate(v: Any) -> tuple[bool, Any, str]:
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v < 1
    return ok, float(v) if ok else v, "a number in [0, 1)"


def _positive_float(v: Any) -> tuple[bool, Any, str]:
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0
    return ok, float(v) if ok else v, "a positive number"


def _float(v: Any) -> tuple[bool, Any, str]:
    ok = isinstance(v, (int, float)) and not isinstance(v, bool)
    return ok, float(v) if ok else v, "a number"


def _int(v: Any) -> tuple[bool, Any, str]:
    return isinstance(v, int) and not isinstance(v, bool), v, "an integer"


def _enum(*choices: Any) -> Check:
    text = "one of " + ", ".join("null" if c is None else str(c) for c in choices)

    def check(v: Any) -> tuple[bool, Any, str]:
        return v in choices and not isinstance(v, bool), v, text

    return check


def _activation(v: Any) -> tuple[bool, Any, str]:
    return v in ACTIVATIONS, v, "an activation: " + ", ".join(ACTIVATIONS)


def _optional_activation(v: Any) -> tuple[bool, Any, str]:
    if v is None:
        return True, "linear", ""
    ok, v, _ = _activation(v)
    return ok, v, "null or an activation: " + ", ".join(ACTIVATIONS)


def _refs(v: Any) -> tuple[bool, Any, str]:
    if isinstance(v, str):
        return True, (v,), ""
    ok = isinstance(v, list) and len(v) > 0 and all(isinstance(x, str) for x in v)
    return ok, tuple(v) if ok else v, "a reference (`layer`, `layer.state_h`, an input name) or a list of them"


def _dot_axes(v: Any) -> tuple[bool, Any, str]:
    if isinstance(v, int) and not isinstance(v, bool):
        return True, v, ""
    ok = isinstance(v, (list, tuple)) and len(v) == 2 and all(isinstance(a, int) and not isinstance(a, bool) for a in v)
    return ok, tuple(v) if ok else v, "an axis (integer) or a list of 2 axes, one per input"


def _mask_ref(v: Any) -> tuple[bool, Any, str]:
    return (isinstance(v, str) and v != ""), v, ("a reference to a bool (batch, time) tensor: a bool model input "
                                                  "or a layer's `.mask`")


def _nonneg_float(v: Any) -> tuple[bool, Any, str]:
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0
    return ok, float(v) if ok else v, "a number >= 0"


def optional(check: Check) -> Check:
    """`check`, or null (kept as None)."""
    def opt(v: Any) -> tuple[bool, Any, str]:
        if v is None:
            return True, None, ""
        ok, value, expected = check(v)
        return ok, value, f"null or {expected}"
    return opt


def int_tuple(n: int | None = None, *, minimum: int | None = 1) -> Check:
    """An integer or a list of integers (Keras's kernel_size, strides, ...), each at least
    `minimum` (None: any), kept as a tuple of n (an integer is repeated n times); n None: a
    non-empty list of any length."""
    kind = "an integer" if minimum is None else f"an integer >= {minimum}"

    def check(v: Any) -> tuple[bool, Any, str]:
        vals = [v] * (n or 1) if isinstance(v, int) and not isinstance(v, bool) else v
        ok = (isinstance(vals, (list, tuple)) and len(vals) > 0 and (n is None or len(vals) == n)
              and all(isinstance(x, int) and not isinstance(x, bool) and (minimum is None or x >= minimum)
                      for x in vals))
        return ok, tuple(vals) if ok else v, f"{kind} or a list of {n or 'such'} integers"
    return check


# The checks, public for rnnc/layers/ to build its keys from.
positive_int, boolean, rate, positive_float, nonneg_float, number, integer = (
    _positive_int, _bool, _rate, _positive_float, _nonneg_float, _float, _int)
enum, activation, optional_activation, refs = _enum, _activation, _optional_activation, _refs


@dataclass(frozen=True)
class Key:
    check: Check
    default: Any = None
    required: bool = False


LOWERINGS = ("auto", "native", "loop", "unroll")

_CELL_COMMON = {
    "units": Key(_positive_int, required=True),
    "activation": Key(_activation, "tanh"),
    "use_bias": Key(_bool, True),
    "dropout": Key(_rate, 0.0),
    "recurrent_dropout": Key(_rate, 0.0),
}
CELL_KEYS: dict[str, dict[str, Key]] = {
    "SimpleRNNCell": dict(_CELL_COMMON),
    "GRUCell": {**_CELL_COMMON, "recurrent_activation": Key(_activation, "sigmoid"),
                "reset_after": Key(_bool, True)},
    "LSTMCell": {**_CELL_COMMON, "recurrent_activation": Key(_activation, "sigmoid"),
                 "unit_forget_bias": Key(_bool, True)},
}
CELL_OF_LAYER = {"SimpleRNN": "SimpleRNNCell", "GRU": "GRUCell", "LSTM": "LSTMCell"}
LAYER_OF_CELL = {v: k for k, v in CELL_OF_LAYER.items()}

# ConvLSTM1D/2D/3D (Keras 3's layers/rnn/conv_lstm.py): an LSTM whose gates are convolutions,
# one built-in cell ("ConvLSTM", rnnc/cells/builtin.py) built by rnnc/ir/build.py's recurrent();
# channels_last only. The cell's keys, by the rank of the convolution:
CONV_LSTM_LAYERS = {"ConvLSTM1D": 1, "ConvLSTM2D": 2, "ConvLSTM3D": 3}


def conv_lstm_keys(rank: int) -> dict[str, Key]:
    return {"filters": Key(_positive_int, required=True),
            "kernel_size": Key(int_tuple(rank), required=True),
            "strides": Key(int_tuple(rank), (1,) * rank),
            "padding": Key(_enum("valid", "same"), "valid"),
            "data_format": Key(_enum("channels_last"), "channels_last"),
            "dilation_rate": Key(int_tuple(rank), (1,) * rank),
            "activation": Key(_activation, "tanh"),
            "recurrent_activation": Key(_activation, "sigmoid"),
            "use_bias": Key(_bool, True),
            "unit_forget_bias": Key(_bool, True),
            "dropout": Key(_rate, 0.0),
            "recurrent_dropout": Key(_rate, 0.0)}

# Keras's `layer(x, mask=m)`: the mask the layer gets instead of its input's. A key of the
# layers whose Keras call takes `mask=` (recurrent layers, Bidirectional, BatchNormalization
# and the defined kinds that read a mask: rnnc/spec/loader.py); top-level layers only, and kept
# in the layer's config only where the spec gives it.
MASK_KEY = Key(_mask_ref, None)

SEQUENCE_KEYS: dict[str, Key] = {
    "return_sequences": Key(_bool, False),
    "return_state": Key(_bool, False),
    "go_backwards": Key(_bool, False),
    "stateful": Key(_bool, False),
    "unroll": Key(_bool, False),
    # Keras: masked steps output zeros instead of repeating the previous output (PyTorch's
    # packed sequences too); Bidirectional sets it to return_sequences on both halves
    "zero_output_for_mask": Key(_bool, False),
    "initial_state": Key(_refs, None),
    "lowering": Key(_enum(*LOWERINGS), "auto"),
    "mask": MASK_KEY,
}

COMMON_KEYS: dict[str, Key] = {
    "type": Key(lambda v: (isinstance(v, str), v, "a layer type"), required=True),
    "name": Key(lambda v: (printable_name(v) and "." not in v, v,
                           "a non-empty name without '/', '.' or control characters")),
    "input": Key(_refs, None),
}

LAYER_KEYS: dict[str, dict[str, Key]] = {
    "Embedding": {"input_dim": Key(_positive_int, required=True),
                  "output_dim": Key(_positive_int, required=True),
                  "mask_zero": Key(_bool, False)},
    "Masking": {"mask_value": Key(_float, 0.0)},
    **{layer: {**CELL_KEYS[cell], **SEQUENCE_KEYS} for layer, cell in CELL_OF_LAYER.items()},
    **{layer: {**conv_lstm_keys(rank), **SEQUENCE_KEYS} for layer, rank in CONV_LSTM_LAYERS.items()},
    # `cell` is checked by the loader (a cell mapping or a list of them).
    "RNN": {"cell": Key(lambda v: (True, v, ""), required=True), **SEQUENCE_KEYS},
    # `layer` / `backward_layer` are nested layer mappings, checked by the loader.
    "Bidirectional": {"layer": Key(lambda v: (True, v, ""), required=True),
                      "merge_mode": Key(_enum("concat", "sum", "mul", "ave", None), "concat"),
                      "backward_layer": Key(lambda v: (True, v, ""), None),
                      "initial_state": Key(_refs, None), "mask": MASK_KEY},
    "Dense": {"units": Key(_positive_int, required=True),
              "activation": Key(_optional_activation, "linear"),
              "use_bias": Key(_bool, True)},
    "BatchNormalization": {"epsilon": Key(_positive_float, 0.001), "axis": Key(_int, -1), "mask": MASK_KEY},
    "Dropout": {"rate": Key(_rate, required=True)},
    "Activation": {"activation": Key(_activation, required=True)},
    "Concatenate": {"axis": Key(_int, -1)},
    "Add": {},
    "Subtract": {},
    "Multiply": {},
    "Average": {},
    "Maximum": {},
    "Minimum": {},
    "Dot": {"axes": Key(_dot_axes, required=True), "normalize": Key(_bool, False)},
}
RECURRENT_LAYERS = ("SimpleRNN", "GRU", "LSTM", "RNN")

# Keras's default layer names (keras.utils.naming: to_snake_case of the class name).
DEFAULT_NAMES = {
    "Embedding": "embedding", "Masking": "masking", "SimpleRNN": "simple_rnn", "GRU": "gru",
    "LSTM": "lstm", "RNN": "rnn", "Bidirectional": "bidirectional", "Dense": "dense",
    "BatchNormalization": "batch_normalization", "Dropout": "dropout",
    "Activation": "activation", "Concatenate": "concatenate", "Add": "add",
    "Multiply": "multiply", "Average": "average", "Subtract": "subtract", "Maximum": "maximum",
    "Minimum": "minimum", "Dot": "dot",
    "ConvLSTM1D": "conv_lstm1d", "ConvLSTM2D": "conv_lstm2d", "ConvLSTM3D": "conv_lstm3d",
}



def register_layer(kind: str, keys: dict[str, Key], default_name: str) -> None:
    """Add a layer kind's keys and Keras default name to the vocabulary: how rnnc/layers/
    (one LayerDef per kind) extends the tables above."""
    if kind in LAYER_KEYS:
        raise ValueError(f"layer kind {kind!r} is in the vocabulary already")
    LAYER_KEYS[kind] = dict(keys)
    DEFAULT_NAMES[kind] = default_name


TOP_KEYS = {"rnnc", "name", "inputs", "layers", "outputs", "weights", "seed", "cells"}
INPUT_KEYS = {"shape", "dtype"}
DTYPES = ("float32", "int32", "int64", "bool")
