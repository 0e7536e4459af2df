"""Parity with Keras 3 itself (torch backend): every case builds the Keras model, gives every
weight random non-zero values, exports them under rnnc's weight names, writes the equivalent
rnnc spec, compiles it, and compares ONNX Runtime (and the NumPy reference, and onnx.reference
where the model is portable) with `model(x, training=False)` within 1e-5. Each case also pins
the lowering path (native op count, Loop count, If for masks)."""
from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "torch")

import numpy as np
import onnx
import pytest

# the test extras: keras on its torch backend; without them this module skips
pytest.importorskip("torch")
keras = pytest.importorskip("keras")
import rnnc  # noqa: E402  (after importorskip)
from helpers import RNN_OPS, TOL, assert_close, op_counts, run_onnx_reference, run_ort, time_loops  # noqa: E402  (after importorskip)
from rnnc.reference import run_reference  # noqa: E402  (after importorskip)
from rnnc.spec import load_spec_text  # noqa: E402  (after importorskip)

assert keras.backend.backend() == "torch", "these tests run Keras on its torch backend"
# torch tensors' __array__ predates NumPy 2's copy keyword; Keras's conversions warn on every call.
pytestmark = [pytest.mark.keras, pytest.mark.torch,
              pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")]

B, T, F = 3, 6, 3                      # batch, time, features
UNITS = {"LSTM": 4, "GRU": 5, "SimpleRNN": 6}
STATES = {"LSTM": ("state_h", "state_c"), "GRU": ("state",), "SimpleRNN": ("state",)}
KERAS_LAYER = {"LSTM": keras.layers.LSTM, "GRU": keras.layers.GRU, "SimpleRNN": keras.layers.SimpleRNN}
KERAS_CELL = {"LSTMCell": keras.layers.LSTMCell, "GRUCell": keras.layers.GRUCell,
              "SimpleRNNCell": keras.layers.SimpleRNNCell}
RNNC_ONLY = ("lowering", "type", "name", "input", "initial_state")


# --------------------------------------------------------------------------- spec text

def flow(v) -> str:
    """A YAML flow rendering of plain Python values."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "null"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}: {flow(x)}" for k, x in v.items()) + "}"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(flow(x) for x in v) + "]"
    return str(v)


def spec_text(inputs: dict, layers: list[dict], outputs: list[str]) -> str:
    lines = ["rnnc: 1", "name: keras_parity", "inputs:"]
    lines += [f"  {name}: {flow(t)}" for name, t in inputs.items()]
    lines.append("layers:")
    lines += [f"  - {flow(layer)}" for layer in layers]
    lines.append(f"outputs: {flow(outputs)}")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- Keras side

def keras_kwargs(cfg: dict) -> dict:
    return {k: v for k, v in cfg.items() if k not in RNNC_ONLY}


def keras_rnn(cfg: dict):
    """The Keras recurrent layer for an rnnc layer mapping (LSTM / GRU / SimpleRNN)."""
    return KERAS_LAYER[cfg["type"]](name=cfg.get("name"), **keras_kwargs(cfg))


def randomize(model: keras.Model, seed: int) -> None:
    """Every weight random and non-zero (BN moving_variance positive)."""
    rng = np.random.default_rng(seed)
    for v in model.weights:
        a = rng.normal(0.0, 0.4, size=tuple(v.shape))
        if v.name == "moving_variance":
            a = np.abs(a) + 0.5
        v.assign(a.astype(np.float32))


def export_weights(model: keras.Model) -> dict[str, np.ndarray]:
    """The model's weights under rnnc's names (docs/spec.md, "Weights")."""
    out: dict[str, np.ndarray] = {}

    def put(prefix: str, obj) -> None:
        for v in obj.weights:
            key = f"{prefix}/{v.name}"
            assert key not in out, f"duplicate weight key {key}"
            out[key] = np.array(keras.ops.convert_to_numpy(v))

    def recurrent(prefix: str, layer) -> None:
        cell = layer.cell
        if isinstance(cell, keras.layers.StackedRNNCells):
            for i, c in enumerate(cell.cells):
                put(f"{prefix}/cells/{i}", c)
        else:
            put(prefix, cell)

    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        if isinstance(layer, keras.layers.Bidirectional):
            recurrent(f"{layer.name}/forward", layer.forward_layer)
            recurrent(f"{layer.name}/backward", layer.backward_layer)
        elif isinstance(layer, keras.layers.RNN):
            recurrent(layer.name, layer)
        else:
            put(layer.name, layer)
    assert len(out) == len(model.weights), f"exported {sorted(out)} but the model has {len(model.weights)} weights"
    assert all(np.all(a != 0) for a in out.values()), "every weight must be non-zero"
    return out


def keras_outputs(model: keras.Model, feeds: dict, names: list[str]) -> dict[str, np.ndarray]:
    args = [feeds[t.name] for t in model.inputs]
    y = model(args[0] if len(args) == 1 else args, training=False)
    flat = [np.asarray(keras.ops.convert_to_numpy(t)) for t in keras.tree.flatten(y)]
    assert len(flat) == len(names), f"Keras gives {len(flat)} outputs, the test names {names}"
    return dict(zip(names, flat))


# --------------------------------------------------------------------------- the check

class Compiled:
    """A compiled spec with its Keras model; `check(feeds)` compares one batch."""

    def __init__(self, model: keras.Model, spec: str, names: list[str], *, seed: int = 0, tie=None,
                 portable: bool = False):
        randomize(model, seed)
        if tie is not None:
            tie(model)
        self.keras, self.names, self.portable = model, names, portable
        self.weights = export_weights(model)
        self.c = rnnc.compile_spec(load_spec_text(spec, "test.yaml"), weights=self.weights)
        onnx.checker.check_model(self.c.model, full_check=True)
        self.counts = op_counts(self.c.model)

    def check(self, feeds: dict, what: str = "") -> dict[str, np.ndarray]:
        want = keras_outputs(self.keras, feeds, self.names)
        got = run_ort(self.c.model, feeds)
        assert_close(got, want, TOL, f"onnxruntime vs Keras {what}")
        ref = run_reference(self.c.graph, self.c.weights, feeds)
        assert_close(ref, want, TOL, f"rnnc.reference vs Keras {what}")
        if self.portable:
            assert_close(run_onnx_reference(self.c.model, feeds), want, TOL, f"onnx.reference vs Keras {what}")
        return want

    @property
    def native(self) -> int:
        return sum(self.counts[o] for o in RNN_OPS)

    def expect(self, *, native: int | None = None, loops: int | None = None, masked: bool = False) -> None:
        if native is not None:
            assert self.native == native, f"native ops: {dict(self.counts)}"
        if loops is not None:
            assert time_loops(self.counts) == loops, f"time loops: {dict(self.counts)}"
        if masked:   # auto + mask: If(right-padded: native + sequence_lens, else: exact Loop)
            assert self.native >= 1 and time_loops(self.counts) >= 1 and self.counts["If"] >= 1, \
                f"masked lowering: {dict(self.counts)}"


def rand_x(shape, seed: int = 1, scale: float = 1.0) -> np.ndarray:
    return (np.random.default_rng(seed).normal(0.0, scale, size=shape)).astype(np.float32)


def x_input(time=None) -> dict:
    return {"shape": ["batch", "time" if time is None else time, F]}


def state_names(layer: str, kind: str) -> list[str]:
    return [f"{layer}.{s}" for s in STATES[kind]]


def output_refs(name: str, cfg: dict) -> tuple[list[str], list[str]]:
    """(spec outputs, ONNX output names) for one recurrent layer."""
    if cfg.get("return_state"):
        return [name, f"{name}.states"], [name, *state_names(name, cfg["type"])]
    return [name], [name]


def single_layer(cfg: dict, *, time=None, masking: bool = False, portable: bool = False) -> Compiled:
    name = cfg["name"]
    x = keras.Input((time, F), name="x")
    layers = []
    h = x
    if masking:
        h = keras.layers.Masking(mask_value=0.0, name="masking")(h)
        layers.append({"type": "Masking", "name": "masking", "mask_value": 0.0})
    y = keras_rnn(cfg)(h)
    layers.append(cfg)
    refs, names = output_refs(name, cfg)
    spec = spec_text({"x": x_input(time)}, layers, refs)
    return Compiled(keras.Model(x, y), spec, names, portable=portable)


# --------------------------------------------------------------------------- 1. basic options

KINDS = {"LSTM": ("LSTM", {}), "GRU": ("GRU", {}), "GRU_reset_after_false": ("GRU", {"reset_after": False}),
         "SimpleRNN": ("SimpleRNN", {})}
VARIANTS = {
    "last": {},
    "seq": {"return_sequences": True},
    "state": {"return_state": True},
    "seq_state": {"return_sequences": True, "return_state": True},
    "back_seq": {"go_backwards": True, "return_sequences": True},
    "back_last": {"go_backwards": True},
    "back_state": {"go_backwards": True, "return_state": True},
    "no_bias": {"use_bias": False, "return_sequences": True},
    "no_bias_state": {"use_bias": False, "return_state": True},
}


def rnn_cfg(kind_id: str, **extra) -> dict:
    kind, base = KINDS[kind_id]
    return {"type": kind, "name": {"LSTM": "lstm", "GRU": "gru", "SimpleRNN": "simple_rnn"}[kind],
            "units": UNITS[kind], **base, **extra}


BASIC = [(k, v) for k in KINDS for v in VARIANTS] + [("LSTM", "no_unit_forget_bias")]


@pytest.mark.parametrize("kind_id,variant", BASIC, ids=[f"{k}-{v}" for k, v in BASIC])
def test_recurrent_options(kind_id, variant):
    extra = {"unit_forget_bias": False, "return_sequences": True} if variant == "no_unit_forget_bias" \
        else VARIANTS[variant]
    c = single_layer(rnn_cfg(kind_id, **extra), portable=True)
    c.check({"x": rand_x((B, T, F))})
    c.check({"x": rand_x((2, 3, F), seed=7)}, "(other batch and time)")
    c.expect(native=1, loops=0)


# --------------------------------------------------------------------------- 2. activations

NATIVE_ACTS = ["relu", "hard_sigmoid", "elu", "softsign", "linear"]
LOOP_ACTS = ["gelu", "selu", "silu", "softmax", "softplus"]
ACT_CASES = [(k, a) for k in ("SimpleRNN", "GRU", "LSTM") for a in NATIVE_ACTS + LOOP_ACTS]


@pytest.mark.parametrize("kind,act", ACT_CASES, ids=[f"{k}-{a}" for k, a in ACT_CASES])
def test_activations(kind, act):
    extra = {"activation": act, "return_sequences": True, "return_state": True}
    if kind != "SimpleRNN":
        extra["recurrent_activation"] = "hard_sigmoid"
    c = single_layer(rnn_cfg(kind, **extra))
    c.check({"x": rand_x((B, T, F))})
    if act in NATIVE_ACTS:
        c.expect(native=1, loops=0)
    else:
        c.expect(native=0, loops=1)


REC_ACT_CASES = [("LSTM", "hard_sigmoid", 1), ("GRU", "hard_sigmoid", 1), ("LSTM", "relu", 1),
                 ("GRU", "softsign", 1), ("LSTM", "gelu", 0), ("GRU", "silu", 0),
                 # softmax is not element-wise: Keras applies it to each gate on its own
                 ("LSTM", "softmax", 0), ("GRU", "softmax", 0), ("GRU_reset_after_false", "softmax", 0)]


@pytest.mark.parametrize("kind,rec_act,native", REC_ACT_CASES, ids=[f"{k}-{a}" for k, a, _ in REC_ACT_CASES])
def test_recurrent_activation(kind, rec_act, native):
    c = single_layer(rnn_cfg(kind, recurrent_activation=rec_act, return_sequences=True))
    c.check({"x": rand_x((B, T, F))})
    c.expect(native=native, loops=1 - native)


ALPHA_CASES = [(k, a, r) for k in ("LSTM", "GRU") for a, r in (
    ("linear", "sigmoid"), ("elu", "sigmoid"), ("hard_sigmoid", "sigmoid"), ("tanh", "hard_sigmoid"),
    ("linear", "hard_sigmoid"), ("elu", "hard_sigmoid"))] + [("SimpleRNN", a, None) for a in ("linear", "elu")]


@pytest.mark.parametrize("kind,act,rec_act", ALPHA_CASES, ids=[f"{k}-{a}-{r}" for k, a, r in ALPHA_CASES])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bidi"])
def test_native_activation_parameters(kind, act, rec_act, bidirectional):
    """Activations that take ONNX alpha/beta (Affine for linear, Elu, HardSigmoid) in any position
    of the op's `activations`, both directions of one bidirectional op included."""
    extra = {"activation": act, **({"recurrent_activation": rec_act} if rec_act else {})}
    if bidirectional:
        c = bidi(kind, "concat", return_sequences=True, inner=extra)
    else:
        c = single_layer(rnn_cfg(kind, return_sequences=True, **extra))
    c.check({"x": rand_x((B, T, F))})
    c.expect(native=1, loops=0)


def test_hard_sigmoid_is_keras3():
    """Keras 3 hard_sigmoid is relu6(x + 3) / 6 (slope 1/6), not Keras 2's slope 0.2."""
    x = np.linspace(-4, 4, 9, dtype=np.float32)
    want = np.clip(x + 3, 0, 6) / 6
    np.testing.assert_allclose(keras.ops.convert_to_numpy(keras.activations.hard_sigmoid(x)), want, atol=1e-7)


# --------------------------------------------------------------------------- 3. lowering loop / unroll

LOWER_CASES = [(k, low, v) for k in KINDS for low in ("loop", "unroll") for v in ("seq_state", "back_seq", "back_state")]


@pytest.mark.parametrize("kind_id,lowering,variant", LOWER_CASES, ids=[f"{k}-{l}-{v}" for k, l, v in LOWER_CASES])
def test_lowering_loop_unroll(kind_id, lowering, variant):
    c = single_layer(rnn_cfg(kind_id, lowering=lowering, **VARIANTS[variant]), time=T, portable=True)
    c.check({"x": rand_x((B, T, F))})
    c.check({"x": rand_x((5, T, F), seed=3)}, "(other batch)")
    c.expect(native=0, loops=1 if lowering == "loop" else 0)


@pytest.mark.parametrize("kind_id", ["LSTM", "GRU"])
def test_keras_unroll_key(kind_id):
    """`unroll: true` (a Keras key) with a fixed time length: auto picks unroll."""
    c = single_layer(rnn_cfg(kind_id, unroll=True, return_sequences=True, return_state=True), time=T, portable=True)
    c.check({"x": rand_x((B, T, F))})
    c.expect(native=0, loops=0)


@pytest.mark.parametrize("kind_id", ["LSTM", "GRU_reset_after_false", "SimpleRNN"])
def test_lowering_native_requested(kind_id):
    c = single_layer(rnn_cfg(kind_id, lowering="native", return_sequences=True), portable=True)
    c.check({"x": rand_x((B, T, F))})
    c.expect(native=1, loops=0)


# --------------------------------------------------------------------------- 4. dropout

@pytest.mark.parametrize("kind_id", ["LSTM", "GRU", "SimpleRNN"])
def test_dropout_is_inference_noop(kind_id):
    c = single_layer(rnn_cfg(kind_id, dropout=0.3, recurrent_dropout=0.2, return_sequences=True,
                             return_state=True), portable=True)
    c.check({"x": rand_x((B, T, F))})
    c.expect(native=1, loops=0)


def test_dropout_layer():
    x = keras.Input((None, F), name="x")
    h = keras.layers.Dropout(0.5, name="dropout")(x)
    y = keras.layers.LSTM(4, dropout=0.3, recurrent_dropout=0.2, name="lstm")(h)
    spec = spec_text({"x": x_input()}, [{"type": "Dropout", "name": "dropout", "rate": 0.5},
                                        {"type": "LSTM", "name": "lstm", "units": 4, "dropout": 0.3,
                                         "recurrent_dropout": 0.2}], ["lstm"])
    c = Compiled(keras.Model(x, y), spec, ["lstm"], portable=True)
    c.check({"x": rand_x((B, T, F))})
    c.expect(native=1, loops=0)


# --------------------------------------------------------------------------- 5. masks

MASKS = {
    "full": [[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]],
    "right": [[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0], [1, 1, 0, 0, 0, 0]],
    "left": [[1, 1, 1, 1, 1, 1], [0, 0, 1, 1, 1, 1], [0, 0, 0, 0, 0, 1]],
    "holes": [[1, 0, 1, 1, 0, 1], [1, 1, 0, 0, 1, 1], [0, 1, 1, 0, 1, 0]],
    "empty_row_right": [[1, 1, 1, 1, 1, 1], [0, 0, 0, 0, 0, 0], [1, 1, 1, 0, 0, 0]],
    "empty_row_holes": [[1, 0, 1, 1, 1, 1], [0, 0, 0, 0, 0, 0], [0, 1, 1, 1, 1, 1]],
}


def masked_x(pattern: str, seed: int = 1, features: int = F) -> np.ndarray:
    m = np.asarray(MASKS[pattern], dtype=np.float32)
    x = rand_x((B, T, features), seed)
    x[x == 0] = 0.5                       # a real step never equals the mask value
    return x * m[:, :, None]


def masked_tokens(pattern: str, seed: int = 1) -> np.ndarray:
    m = np.asarray(MASKS[pattern], dtype=np.int32)
    return np.random.default_rng(seed).integers(1, 20, size=(B, T)).astype(np.int32) * m


def check_all_masks(c: Compiled, make) -> None:
    for pattern in MASKS:
        c.check(make(pattern), f"(mask {pattern})")


MASK_VARIANTS = ("last", "seq", "state", "seq_state", "back_seq", "back_state")
MASK_CASES = [(k, v) for k in KINDS for v in MASK_VARIANTS]


@pytest.mark.parametrize("kind_id,variant", MASK_CASES, ids=[f"{k}-{v}" for k, v in MASK_CASES])
def test_masking(kind_id, variant):
    c = single_layer(rnn_cfg(kind_id, **VARIANTS[variant]), masking=True)
    check_all_masks(c, lambda p: {"x": masked_x(p)})
    c.expect(masked=True)


ZERO_OUT_CASES = [(k, v, low) for k in ("LSTM", "GRU", "SimpleRNN") for v in ("last", "seq", "back_seq", "back_state")
                  for low in ("auto", "loop")]


@pytest.mark.parametrize("kind_id,variant,lowering", ZERO_OUT_CASES, ids=[f"{k}-{v}-{l}" for k, v, l in ZERO_OUT_CASES])
def test_zero_output_for_mask(kind_id, variant, lowering):
    """Masked steps output zeros (PyTorch's packed sequences too), and the last output is zero
    where the last step is masked."""
    cfg = rnn_cfg(kind_id, zero_output_for_mask=True, **VARIANTS[variant])
    if lowering != "auto":
        cfg["lowering"] = lowering
    c = single_layer(cfg, masking=True)
    check_all_masks(c, lambda p: {"x": masked_x(p)})
    if lowering == "auto":
        c.expect(masked=True)
    else:
        c.expect(native=0, loops=1)


def test_masking_value_and_partial_steps():
    """mask_value -1: a step is masked only where ALL its features equal the mask value."""
    x = keras.Input((None, F), name="x")
    h = keras.layers.Masking(mask_value=-1.0, name="masking")(x)
    y = keras.layers.GRU(5, return_sequences=True, return_state=True, name="gru")(h)
    spec = spec_text({"x": x_input()}, [{"type": "Masking", "name": "masking", "mask_value": -1.0},
                                        {"type": "GRU", "name": "gru", "units": 5, "return_sequences": True,
                                         "return_state": True}], ["gru", "gru.states"])
    c = Compiled(keras.Model(x, y), spec, ["gru", "gru.state"])
    for pattern in MASKS:
        m = np.asarray(MASKS[pattern], dtype=bool)
        xs = rand_x((B, T, F))
        xs[~m] = -1.0
        xs[:, :, 0] = np.where(m, -1.0, xs[:, :, 0])     # real steps with one feature at the mask value
        c.check({"x": xs}, f"(mask {pattern})")
    c.expect(masked=True)


@pytest.mark.parametrize("lowering", ["loop", "unroll"])
def test_masking_loop_unroll(lowering):
    c = single_layer(rnn_cfg("LSTM", lowering=lowering, return_sequences=True, return_state=True),
                     time=T, masking=True)
    check_all_masks(c, lambda p: {"x": masked_x(p)})
    c.expect(native=0, loops=1 if lowering == "loop" else 0)


@pytest.mark.parametrize("return_sequences", [False, True])
def test_embedding_mask_zero(return_sequences):
    tok = keras.Input((None,), dtype="int32", name="tokens")
    h = keras.layers.Embedding(20, F, mask_zero=True, name="embedding")(tok)
    y = keras.layers.LSTM(4, return_sequences=return_sequences, return_state=True, name="lstm")(h)
    spec = spec_text({"tokens": {"shape": ["batch", "time"], "dtype": "int32"}},
                     [{"type": "Embedding", "name": "embedding", "input_dim": 20, "output_dim": F, "mask_zero": True},
                      {"type": "LSTM", "name": "lstm", "units": 4, "return_sequences": return_sequences,
                       "return_state": True}],
                     ["lstm", "lstm.states"])
    c = Compiled(keras.Model(tok, y), spec, ["lstm", "lstm.state_h", "lstm.state_c"])
    check_all_masks(c, lambda p: {"tokens": masked_tokens(p)})
    c.expect(masked=True)


def test_mask_propagates_through_return_sequences():
    """Masking → LSTM(return_sequences) → GRU: Keras passes the mask on to the GRU."""
    x = keras.Input((None, F), name="x")
    h = keras.layers.Masking(name="masking")(x)
    h = keras.layers.LSTM(4, return_sequences=True, name="lstm")(h)
    y = keras.layers.GRU(5, return_sequences=True, name="gru")(h)
    spec = spec_text({"x": x_input()}, [{"type": "Masking", "name": "masking"},
                                        {"type": "LSTM", "name": "lstm", "units": 4, "return_sequences": True},
                                        {"type": "GRU", "name": "gru", "units": 5, "return_sequences": True}],
                     ["gru"])
    c = Compiled(keras.Model(x, y), spec, ["gru"])
    check_all_masks(c, lambda p: {"x": masked_x(p)})
    assert c.counts["If"] >= 2, dict(c.counts)


def test_mask_propagates_through_dense():
    """Masking → Dense → LSTM: Dense supports masking in Keras 3, so the LSTM gets the mask."""
    x = keras.Input((None, F), name="x")
    h = keras.layers.Masking(name="masking")(x)
    h = keras.layers.Dense(4, name="dense")(h)
    y = keras.layers.LSTM(4, return_sequences=True, name="lstm")(h)
    spec = spec_text({"x": x_input()}, [{"type": "Masking", "name": "masking"},
                                        {"type": "Dense", "name": "dense", "units": 4},
                                        {"type": "LSTM", "name": "lstm", "units": 4, "return_sequences": True}],
                     ["lstm"])
    c = Compiled(keras.Model(x, y), spec, ["lstm"])
    check_all_masks(c, lambda p: {"x": masked_x(p)})
    c.expect(masked=True)


# --------------------------------------------------------------------------- 6. Bidirectional

MERGES = ["concat", "sum", "mul", "ave", None]


def bidi_names(name: str, merge, kind: str, return_state: bool) -> tuple[list[str], list[str]]:
    main = [f"{name}.forward", f"{name}.backward"] if merge is None else [name]
    if not return_state:
        return [name], main
    states = [f"{name}.{d}_{s}" for d in ("forward", "backward") for s in STATES[kind]]
    return [name, f"{name}.states"], main + states


def bidi(kind: str, merge, *, return_sequences: bool, return_state: bool = False, masking: bool = False,
         inner: dict | None = None, backward: dict | None = None, portable: bool = False) -> Compiled:
    inner_cfg = {"type": kind, "units": UNITS[kind], "return_sequences": return_sequences,
                 "return_state": return_state, **(inner or {})}
    x = keras.Input((None, F), name="x")
    h = x
    layers = []
    if masking:
        h = keras.layers.Masking(name="masking")(h)
        layers.append({"type": "Masking", "name": "masking"})
    kw = {}
    bidi_cfg = {"type": "Bidirectional", "name": "bi", "layer": inner_cfg, "merge_mode": merge}
    if backward is not None:
        kw["backward_layer"] = keras_rnn({**backward, "name": "backward_rnn"})
        bidi_cfg["backward_layer"] = backward
    y = keras.layers.Bidirectional(keras_rnn(inner_cfg), merge_mode=merge, name="bi", **kw)(h)
    layers.append(bidi_cfg)
    refs, names = bidi_names("bi", merge, kind, return_state)
    spec = spec_text({"x": x_input()}, layers, refs)
    return Compiled(keras.Model(x, y), spec, names, portable=portable)


BIDI_CASES = [(k, m, rs) for k in ("LSTM", "GRU") for m in MERGES for rs in (True, False)]


@pytest.mark.parametrize("kind,merge,return_sequences", BIDI_CASES,
                         ids=[f"{k}-{m}-{'seq' if rs else 'last'}" for k, m, rs in BIDI_CASES])
def test_bidirectional_merge(kind, merge, return_sequences):
    c = bidi(kind, merge, return_sequences=return_sequences, portable=True)
    c.check({"x": rand_x((B, T, F))})
    c.expect(native=1, loops=0)
    nodes = [n for n in c.c.model.graph.node if n.op_type in RNN_OPS]
    direction = [a.s.decode() for n in nodes for a in n.attribute if a.name == "direction"]
    assert direction == ["bidirectional"], direction


BIDI_STATE_CASES = [(k, m, rs) for k in ("LSTM", "GRU", "SimpleRNN") for m in ("concat", None) for rs in (True, False)]


@pytest.mark.parametrize("kind,merge,return_sequences", BIDI_STATE_CASES,
                         ids=[f"{k}-{m}-{'seq' if rs else 'last'}" for k, m, rs in BIDI_STATE_CASES])
def test_bidirectional_return_state(kind, merge, return_sequences):
    c = bidi(kind, merge, return_sequences=return_sequences, return_state=True, portable=True)
    c.check({"x": rand_x((B, T, F))})
    c.expect(native=1, loops=0)


BIDI_MASK_CASES = [(k, m, rs) for k in ("LSTM", "GRU") for m in ("concat", None) for rs in (True, False)]


@pytest.mark.parametrize("kind,merge,return_sequences", BIDI_MASK_CASES,
                         ids=[f"{k}-{m}-{'seq' if rs else 'last'}" for k, m, rs in BIDI_MASK_CASES])
def test_bidirectional_mask(kind, merge, return_sequences):
    c = bidi(kind, merge, return_sequences=return_sequences, return_state=True, masking=True)
    check_all_masks(c, lambda p: {"x": masked_x(p)})
    c.expect(masked=True)


def test_bidirectional_explicit_backward_layer():
    back = {"type": "GRU", "units": 5, "return_sequences": True, "go_backwards": True}
    c = bidi("GRU", "concat", return_sequences=True, backward=back, portable=True)
    c.check({"x": rand_x((B, T, F))})
    c.expect(native=1, loops=0)     # same kind and config but direction: still one fused op


def test_bidirectional_explicit_backward_layer_different():
    back = {"type": "GRU", "units": 4, "reset_after": False, "activation": "relu",
            "return_sequences": True, "go_backwards": True}
    c = bidi("GRU", "concat", return_sequences=True, backward=back)
    c.check({"x": rand_x((B, T, F))})
    c.expect(native=2, loops=0)     # different configs: one native op per half


@pytest.mark.parametrize("return_sequences", [True, False])
@pytest.mark.parametrize("masking", [False, True])
def test_bidirectional_forward_half_reads_backwards(return_sequences, masking):
    """layer with go_backwards: true, backward_layer with false: Keras flips the backward half's
    sequence and never the forward half's, so both come out reversed in time."""
    back = {"type": "SimpleRNN", "units": 6, "return_sequences": return_sequences}
    c = bidi("SimpleRNN", None, return_sequences=return_sequences, inner={"go_backwards": True}, backward=back,
             masking=masking)
    if masking:
        check_all_masks(c, lambda p: {"x": masked_x(p)})
    else:
        c.check({"x": rand_x((B, T, F))})
    assert c.native == 2 and c.c.graph.layers["bi"].reason.startswith("native: one ONNX op per half")


def test_bidirectional_loop_activation():
    c = bidi("GRU", "ave", return_sequences=True, inner={"activation": "gelu"})
    c.check({"x": rand_x((B, T, F))})
    c.expect(native=0)
    assert time_loops(c.counts) >= 1, dict(c.counts)


# --------------------------------------------------------------------------- 7. RNN(cell) and stacked cells

@pytest.mark.parametrize("kind", ["LSTM", "GRU", "SimpleRNN"])
def test_rnn_single_cell_equals_layer(kind):
    n = UNITS[kind]
    x = keras.Input((None, F), name="x")
    a = keras.layers.RNN(KERAS_CELL[kind + "Cell"](n), return_sequences=True, return_state=True, name="rnn")(x)
    b = KERAS_LAYER[kind](n, return_sequences=True, return_state=True, name="layer")(x)
    model = keras.Model(x, [*a, *b])

    def tie(m):
        m.get_layer("layer").set_weights(m.get_layer("rnn").get_weights())

    spec = spec_text({"x": x_input()},
                     [{"type": "RNN", "name": "rnn", "input": "x", "cell": {"type": kind + "Cell", "units": n},
                       "return_sequences": True, "return_state": True},
                      {"type": kind, "name": "layer", "input": "x", "units": n, "return_sequences": True,
                       "return_state": True}],
                     ["rnn", "rnn.states", "layer", "layer.states"])
    names = ["rnn", *state_names("rnn", kind), "layer", *state_names("layer", kind)]
    c = Compiled(model, spec, names, tie=tie, portable=True)
    want = c.check({"x": rand_x((B, T, F))})
    k = len(STATES[kind]) + 1
    for (na, va), (nb, vb) in zip(list(want.items())[:k], list(want.items())[k:]):
        np.testing.assert_allclose(va, vb, rtol=0, atol=TOL, err_msg=f"Keras RNN(cell) {na} != layer {nb}")
    c.expect(native=2, loops=0)


STACK_STATES = ["rnn.state_h_0", "rnn.state_c_0", "rnn.state_1", "rnn.state_2"]   # cell i's states, in order


@pytest.mark.parametrize("return_sequences,return_state", [(False, True), (True, False), (True, True)])
def test_stacked_cells(return_sequences, return_state):
    x = keras.Input((None, F), name="x")
    cells = [keras.layers.LSTMCell(4), keras.layers.GRUCell(5), keras.layers.SimpleRNNCell(6)]
    y = keras.layers.RNN(cells, return_sequences=return_sequences, return_state=return_state, name="rnn")(x)
    spec = spec_text({"x": x_input()},
                     [{"type": "RNN", "name": "rnn",
                       "cell": [{"type": "LSTMCell", "units": 4}, {"type": "GRUCell", "units": 5},
                                {"type": "SimpleRNNCell", "units": 6}],
                       "return_sequences": return_sequences, "return_state": return_state}],
                     ["rnn", "rnn.states"] if return_state else ["rnn"])
    names = ["rnn", *STACK_STATES] if return_state else ["rnn"]
    c = Compiled(keras.Model(x, y), spec, names, portable=True)
    c.check({"x": rand_x((B, T, F))})
    c.expect(native=3, loops=0)


def test_stacked_cells_masked():
    x = keras.Input((None, F), name="x")
    h = keras.layers.Masking(name="masking")(x)
    y = keras.layers.RNN([keras.layers.GRUCell(5), keras.layers.LSTMCell(4)], return_sequences=True, name="rnn")(h)
    spec = spec_text({"x": x_input()},
                     [{"type": "Masking", "name": "masking"},
                      {"type": "RNN", "name": "rnn", "cell": [{"type": "GRUCell", "units": 5},
                                                              {"type": "LSTMCell", "units": 4}],
                       "return_sequences": True}], ["rnn"])
    c = Compiled(keras.Model(x, y), spec, ["rnn"])
    check_all_masks(c, lambda p: {"x": masked_x(p)})
    c.expect(masked=True)


# --------------------------------------------------------------------------- 8. initial_state

@pytest.mark.parametrize("kind", ["LSTM", "GRU", "SimpleRNN"])
def test_initial_state_from_inputs(kind):
    n = UNITS[kind]
    x = keras.Input((None, F), name="x")
    st_names = ["h0", "c0"] if kind == "LSTM" else ["h0"]
    states = [keras.Input((n,), name=s) for s in st_names]
    y = KERAS_LAYER[kind](n, return_sequences=True, return_state=True, name="rec")(x, initial_state=states)
    spec = spec_text({"x": x_input(), **{s: {"shape": ["batch", n]} for s in st_names}},
                     [{"type": kind, "name": "rec", "input": "x", "units": n, "return_sequences": True,
                       "return_state": True, "initial_state": st_names}],
                     ["rec", "rec.states"])
    c = Compiled(keras.Model([x, *states], y), spec, ["rec", *state_names("rec", kind)], portable=True)
    for b, seed in ((B, 1), (5, 2)):
        feeds = {"x": rand_x((b, T, F), seed), **{s: rand_x((b, n), seed + 10 + i) for i, s in enumerate(st_names)}}
        c.check(feeds, f"(batch {b})")
    c.expect(native=1, loops=0)


def test_initial_state_from_inputs_masked():
    """Masking → LSTM(initial_state=[h0, c0]) with the states as model inputs."""
    x = keras.Input((None, F), name="x")
    h0, c0 = keras.Input((4,), name="h0"), keras.Input((4,), name="c0")
    h = keras.layers.Masking(name="masking")(x)
    y = keras.layers.LSTM(4, return_sequences=True, return_state=True, name="lstm")(h, initial_state=[h0, c0])
    spec = spec_text({"x": x_input(), "h0": {"shape": ["batch", 4]}, "c0": {"shape": ["batch", 4]}},
                     [{"type": "Masking", "name": "masking", "input": "x"},
                      {"type": "LSTM", "name": "lstm", "units": 4, "return_sequences": True, "return_state": True,
                       "initial_state": ["h0", "c0"]}],
                     ["lstm", "lstm.states"])
    c = Compiled(keras.Model([x, h0, c0], y), spec, ["lstm", "lstm.state_h", "lstm.state_c"])
    check_all_masks(c, lambda p: {"x": masked_x(p), "h0": rand_x((B, 4), 11), "c0": rand_x((B, 4), 12)})
    # Keras 3 passes no mask to a layer called with initial_state (several tensor arguments):
    # the LSTM runs unmasked, and rnnc does the same (and says so in the layer's notes).
    c.expect(native=1, loops=0)
    assert c.counts["If"] == 0


@pytest.mark.parametrize("mask_zero", [False, True])
def test_encoder_decoder(mask_zero):
    enc_in = keras.Input((None,), dtype="int32", name="encoder_tokens")
    dec_in = keras.Input((None,), dtype="int32", name="decoder_tokens")
    e = keras.layers.Embedding(20, F, mask_zero=mask_zero, name="encoder_embedding")(enc_in)
    _, h, cst = keras.layers.LSTM(4, return_state=True, name="encoder")(e)
    d = keras.layers.Embedding(30, F, mask_zero=mask_zero, name="decoder_embedding")(dec_in)
    d = keras.layers.LSTM(4, return_sequences=True, name="decoder")(d, initial_state=[h, cst])
    y = keras.layers.Dense(7, name="dense")(d)
    ints = {"shape": ["batch", "time"], "dtype": "int32"}
    spec = spec_text(
        {"encoder_tokens": ints, "decoder_tokens": ints},
        [{"type": "Embedding", "name": "encoder_embedding", "input": "encoder_tokens", "input_dim": 20,
          "output_dim": F, "mask_zero": mask_zero},
         {"type": "LSTM", "name": "encoder", "units": 4, "return_state": True},
         {"type": "Embedding", "name": "decoder_embedding", "input": "decoder_tokens", "input_dim": 30,
          "output_dim": F, "mask_zero": mask_zero},
         {"type": "LSTM", "name": "decoder", "units": 4, "return_sequences": True,
          "initial_state": ["encoder.state_h", "encoder.state_c"]},
         {"type": "Dense", "name": "dense", "units": 7}],
        ["dense", "encoder.state_h"])
    c = Compiled(keras.Model([enc_in, dec_in], [y, h]), spec, ["dense", "encoder.state_h"], portable=not mask_zero)
    if mask_zero:
        for pe, pd in (("right", "left"), ("holes", "right"), ("full", "empty_row_holes")):
            c.check({"encoder_tokens": masked_tokens(pe, 1), "decoder_tokens": masked_tokens(pd, 2)},
                    f"(masks {pe}, {pd})")
        # the encoder is masked; the decoder (called with initial_state) runs unmasked, as in Keras 3
        assert c.counts["If"] == 1, dict(c.counts)
    else:
        c.check({"encoder_tokens": masked_tokens("full", 1), "decoder_tokens": masked_tokens("full", 2)})
        c.expect(native=2, loops=0)


# --------------------------------------------------------------------------- 9. whole models

@pytest.mark.parametrize("return_sequences", [False, True])
def test_embedding_lstm_bn_dense(return_sequences):
    tok = keras.Input((None,), dtype="int32", name="tokens")
    h = keras.layers.Embedding(20, 4, name="embedding")(tok)
    h = keras.layers.LSTM(5, return_sequences=return_sequences, name="lstm")(h)
    h = keras.layers.BatchNormalization(name="batch_normalization")(h)
    h = keras.layers.Dropout(0.2, name="dropout")(h)
    y = keras.layers.Dense(6, activation="softmax", name="dense")(h)
    spec = spec_text({"tokens": {"shape": ["batch", "time"], "dtype": "int32"}},
                     [{"type": "Embedding", "name": "embedding", "input_dim": 20, "output_dim": 4},
                      {"type": "LSTM", "name": "lstm", "units": 5, "return_sequences": return_sequences},
                      {"type": "BatchNormalization", "name": "batch_normalization"},
                      {"type": "Dropout", "name": "dropout", "rate": 0.2},
                      {"type": "Dense", "name": "dense", "units": 6, "activation": "softmax"}],
                     ["dense"])
    c = Compiled(keras.Model(tok, y), spec, ["dense"], portable=True)
    c.check({"tokens": masked_tokens("full")})
    c.expect(native=1, loops=0)


MERGE_LAYERS = ["Concatenate", "Add", "Multiply", "Average"]


@pytest.mark.parametrize("merge", MERGE_LAYERS)
@pytest.mark.parametrize("return_sequences", [False, True])
def test_merge_layers(merge, return_sequences):
    x = keras.Input((None, F), name="x")
    a = keras.layers.LSTM(4, return_sequences=return_sequences, name="lstm_a")(x)
    b = keras.layers.GRU(4, return_sequences=return_sequences, go_backwards=True, name="gru_b")(x)
    m = getattr(keras.layers, merge)(name="merge")([a, b])
    y = keras.layers.Dense(3, activation="tanh", name="dense")(m)
    spec = spec_text({"x": x_input()},
                     [{"type": "LSTM", "name": "lstm_a", "input": "x", "units": 4, "return_sequences": return_sequences},
                      {"type": "GRU", "name": "gru_b", "input": "x", "units": 4, "return_sequences": return_sequences,
                       "go_backwards": True},
                      {"type": merge, "name": "merge", "input": ["lstm_a", "gru_b"]},
                      {"type": "Dense", "name": "dense", "units": 3, "activation": "tanh"}],
                     ["dense", "merge"])
    c = Compiled(keras.Model(x, [y, m]), spec, ["dense", "merge"], portable=True)
    c.check({"x": rand_x((B, T, F))})
    c.expect(native=2, loops=0)


# --------------------------------------------------------------------------- merged masks

@pytest.mark.parametrize("kind, axis", [("Add", -1), ("Multiply", -1), ("Average", -1), ("Concatenate", -1),
                                        ("Concatenate", 1)])
@pytest.mark.parametrize("masked", ["both", "one"])
def test_merged_masks_follow_keras(kind, axis, masked):
    """Keras 3 merges masks with OR (Add/Multiply/Average: none if an input has none;
    Concatenate: an unmasked input counts as all-true), and Multiply treats masked steps as 1."""
    a_in, b_in = keras.Input((None, F), name="a"), keras.Input((None, F), name="b")
    ha = keras.layers.Masking(name="ma")(a_in)
    hb = keras.layers.Masking(name="mb")(b_in) if masked == "both" else b_in
    merge = keras.layers.Concatenate(axis=axis, name="m") if kind == "Concatenate" else getattr(keras.layers, kind)(name="m")
    y = keras.layers.GRU(4, return_sequences=True, name="g")(merge([ha, hb]))
    model = keras.Model([a_in, b_in], y)
    rng = np.random.default_rng(5)
    g = model.get_layer("g")
    w = [rng.normal(0, 0.4, size=v.shape).astype(np.float32) for v in g.get_weights()]
    g.set_weights(w)
    b_ref = "mb" if masked == "both" else "b"
    text = (f"rnnc: 1\ninputs: {{a: {{shape: [batch, time, {F}]}}, b: {{shape: [batch, time, {F}]}}}}\nlayers:\n"
            "  - {type: Masking, name: ma, input: a}\n" + ("  - {type: Masking, name: mb, input: b}\n" if masked == "both" else "")
            + f"  - {{type: {kind}, name: m, input: [ma, {b_ref}]" + (f", axis: {axis}" if kind == "Concatenate" else "")
            + "}\n  - {type: GRU, name: g, units: 4, return_sequences: true}\n")
    c = rnnc.compile_spec(load_spec_text(text, "m.yaml"),
                          weights={"g/kernel": w[0], "g/recurrent_kernel": w[1], "g/bias": w[2]})
    xa, xb = rand_x((B, 6, F), 1), rand_x((B, 6, F), 2)
    xa[0, 4:] = 0
    xa[1, 2] = 0
    xb[0, 3:] = 0
    xb[2, :2] = 0
    want = keras.ops.convert_to_numpy(model([xa, xb], training=False))
    got = run_ort(c.model, {"a": xa, "b": xb})["g"]
    assert np.max(np.abs(got - want)) <= 1e-5
    assert np.max(np.abs(run_reference(c.graph, c.weights, {"a": xa, "b": xb})["g"] - want)) <= 1e-5
