"""Tier 2: every lowering's numbers (ONNX Runtime and onnx.reference) against the NumPy
reference, and the path each case took (native RNN ops vs Loop nodes)."""
from __future__ import annotations

import numpy as np
import pytest

from helpers import (
    RNN_OPS,
    TOL,
    check_parity,
    compile_text,
    op_counts,
    random_feeds,
    run_onnx_reference,
    run_ort,
    time_loops,
)
from rnnc.errors import LoweringError, SpecError
from rnnc.reference import run_reference

HEAD = "rnnc: 1\ninputs: {{x: {{shape: [batch, {time}, 3]}}}}\nlayers:\n"

RECURRENT_OPTIONS = [
    "return_sequences: false",
    "return_sequences: true, return_state: true",
    "go_backwards: true, return_sequences: true",
    "go_backwards: true, return_state: true",
    "use_bias: false, return_sequences: true",
]
LAYERS = ["LSTM", "GRU", "GRU, reset_after: false", "SimpleRNN"]


@pytest.mark.parametrize("lowering, native, loops", [("auto", 1, 0), ("loop", 0, 1), ("unroll", 0, 0)])
@pytest.mark.parametrize("options", RECURRENT_OPTIONS)
@pytest.mark.parametrize("layer", LAYERS)
def test_recurrent_layers_each_lowering(layer, options, lowering, native, loops):
    text = HEAD.format(time=5) + f"  - {{type: {layer}, units: 4, {options}, lowering: {lowering}}}\n"
    check_parity(text, native=native, loops=loops)


@pytest.mark.parametrize("layer, acts, native", [
    ("SimpleRNN", "activation: relu", 1), ("SimpleRNN", "activation: linear", 1),
    ("SimpleRNN", "activation: softsign", 1), ("SimpleRNN", "activation: gelu", 0),
    ("GRU", "activation: elu, recurrent_activation: hard_sigmoid", 1),
    ("GRU", "activation: softplus", 0), ("GRU", "activation: selu", 0),
    ("LSTM", "recurrent_activation: hard_sigmoid", 1), ("LSTM", "activation: relu", 1),
    ("LSTM", "activation: silu", 0), ("LSTM", "activation: softmax", 0),
])
def test_activations_native_where_exact_else_loop(layer, acts, native):
    text = HEAD.format(time="time") + f"  - {{type: {layer}, units: 4, {acts}, return_sequences: true}}\n"
    # onnx.reference ignores LSTM/GRU's `activations` attribute: checked below for the portable target
    c, _, _ = check_parity(text, native=native, loops=1 - native, onnx_reference=(native == 0 or layer == "SimpleRNN"
                                                                                  and "linear" in acts))
    reason = c.graph.layers[layer.split(",")[0].lower() if layer != "SimpleRNN" else "simple_rnn"].reason
    assert reason.startswith("native" if native else "Loop: activation")


NATIVE_ACTIVATIONS = ["tanh", "sigmoid", "relu", "hard_sigmoid", "linear", "elu", "softsign"]


@pytest.mark.parametrize("layer", ["LSTM", "GRU", "SimpleRNN"])
@pytest.mark.parametrize("act", NATIVE_ACTIVATIONS + ["softplus"])
def test_every_native_activation_pair_in_both_directions(layer, act):
    """Each activation with each recurrent activation, in one bidirectional op: the alphas and
    betas reach the activations that take them, wherever they sit in the op's list. softplus
    takes the Loop (ONNX Runtime's recurrent ops overflow it above 88). Unbounded gates (linear,
    relu) make the values explode, so the error is taken relative to their size."""
    recs = NATIVE_ACTIVATIONS + ["softplus"] if layer != "SimpleRNN" else [None]
    for rec in recs:
        acts = f"activation: {act}" + (f", recurrent_activation: {rec}" if rec else "")
        text = HEAD.format(time="time") + (f"  - {{type: Bidirectional, layer: {{type: {layer}, units: 3, {acts}, "
                                           "return_sequences: true}}\n")
        c = compile_text(text)
        feeds = random_feeds(c.graph)
        want, got = run_reference(c.graph, c.weights, feeds)["bidirectional"], run_ort(c.model, feeds)["bidirectional"]
        assert np.max(np.abs(got - want)) <= TOL * max(1.0, float(np.max(np.abs(want)))), (acts, np.max(np.abs(got - want)))
        native = "softplus" not in (act, rec)
        counts = op_counts(c.model)
        assert sum(counts[o] for o in RNN_OPS) == native and time_loops(counts) == 2 * (not native), (acts, counts)


def test_softplus_large_inputs_stay_finite():
    """log(1 + exp(x)) overflows above x = 88 in ONNX Runtime's recurrent ops; rnnc's Loop does not."""
    text = HEAD.format(time="time") + "  - {type: SimpleRNN, units: 2, activation: softplus, return_sequences: true}\n"
    c = compile_text(text, weights={"simple_rnn/kernel": np.full((3, 2), 50.0, np.float32),
                                    "simple_rnn/recurrent_kernel": np.eye(2, dtype=np.float32),
                                    "simple_rnn/bias": np.zeros(2, np.float32)})
    x = np.ones((1, 3, 3), np.float32)
    got = run_ort(c.model, {"x": x})["simple_rnn"]
    assert np.isfinite(got).all() and np.allclose(got[0, :, 0], [150, 300, 450])


@pytest.mark.parametrize("acts", ["recurrent_activation: hard_sigmoid", "activation: relu"])
def test_portable_target_avoids_what_onnx_reference_ignores(acts):
    text = HEAD.format(time="time") + f"  - {{type: LSTM, units: 4, {acts}, return_sequences: true}}\n"
    c, _, _ = check_parity(text, native=0, loops=1, target="portable")   # onnx.reference agrees
    assert "portable target" in c.graph.layers["lstm"].reason


def test_hard_sigmoid_is_keras3_slope():
    c = compile_text(HEAD.format(time="time") + "  - {type: LSTM, units: 2, recurrent_activation: hard_sigmoid}\n")
    node = next(n for n in c.model.graph.node if n.op_type == "LSTM")
    attrs = {a.name: a for a in node.attribute}
    assert list(attrs["activations"].strings) == [b"HardSigmoid", b"Tanh", b"Tanh"]
    assert attrs["activation_alpha"].floats[0] == pytest.approx(1 / 6)
    assert attrs["activation_beta"].floats[0] == pytest.approx(0.5)


def masked_input(pattern: str, batch: int = 4, time: int = 6, feat: int = 3, seed: int = 3) -> dict:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(batch, time, feat)).astype(np.float32)
    keep = np.ones((batch, time), bool)
    if pattern == "right":
        keep[0, 4:] = False
        keep[1, 1:] = False
    elif pattern == "left":
        keep[0, :2] = False
        keep[2, :1] = False
    elif pattern == "holes":
        keep[1, 2] = False
        keep[2, 3:5] = False
    elif pattern == "empty_row":
        keep[0, 3:] = False
        keep[3, :] = False
    x[~keep] = 0.0
    return {"x": x}


MASK_PATTERNS = ["right", "left", "holes", "empty_row", "none"]


@pytest.mark.parametrize("pattern", MASK_PATTERNS)
@pytest.mark.parametrize("options", ["return_sequences: true, return_state: true", "go_backwards: true, "
                                     "return_sequences: true", "return_state: true"])
@pytest.mark.parametrize("layer", ["LSTM", "GRU", "SimpleRNN"])
def test_masks_native_with_runtime_check(layer, options, pattern):
    text = HEAD.format(time=6) + f"  - {{type: Masking}}\n  - {{type: {layer}, units: 4, {options}}}\n"
    c, _, _ = check_parity(text, feeds=masked_input(pattern), onnx_reference=False)
    counts = op_counts(c.model)
    assert counts["If"] == 1 and time_loops(counts) == 1 and sum(counts[o] for o in RNN_OPS) == 1
    assert "right-padded" in c.graph.layers[next(k for k in c.graph.layers if k != "masking")].reason


@pytest.mark.parametrize("pattern", MASK_PATTERNS)
@pytest.mark.parametrize("lowering", ["loop", "unroll"])
def test_masks_loop_and_unroll_exact_everywhere(pattern, lowering):
    text = HEAD.format(time=6) + ("  - {type: Masking}\n  - {type: LSTM, units: 4, return_sequences: true, "
                                  f"return_state: true, lowering: {lowering}}}\n")
    check_parity(text, feeds=masked_input(pattern), native=0, loops=int(lowering == "loop"))


@pytest.mark.parametrize("pattern", ["right", "holes"])
def test_masks_portable_target_uses_loop(pattern):
    text = HEAD.format(time=6) + "  - {type: Masking}\n  - {type: GRU, units: 4, return_sequences: true}\n"
    check_parity(text, feeds=masked_input(pattern), native=0, loops=1, target="portable")


def test_right_padding_is_decided_per_batch_not_assumed():
    """The same compiled model must be exact on a right-padded batch and on a holed one."""
    text = HEAD.format(time=6) + "  - {type: Masking}\n  - {type: LSTM, units: 4, return_sequences: true}\n"
    c = compile_text(text)
    from rnnc.reference import run_reference
    for pattern in ("right", "holes", "left"):
        feeds = masked_input(pattern)
        want = run_reference(c.graph, c.weights, feeds)["lstm"]
        assert np.max(np.abs(run_ort(c.model, feeds)["lstm"] - want)) < 1e-5


def test_embedding_mask_zero():
    text = ("rnnc: 1\ninputs: {t: {shape: [batch, time], dtype: int64}}\nlayers:\n"
            "  - {type: Embedding, input_dim: 12, output_dim: 3, mask_zero: true}\n"
            "  - {type: GRU, units: 4, return_sequences: true}\n  - {type: Dense, units: 2}\n")
    tokens = np.array([[3, 4, 5, 0, 0], [0, 0, 1, 2, 3], [1, 0, 2, 0, 3]], dtype=np.int64)
    check_parity(text, feeds={"t": tokens}, onnx_reference=False)


@pytest.mark.parametrize("mode", ["concat", "sum", "mul", "ave"])
@pytest.mark.parametrize("seqs", [True, False])
@pytest.mark.parametrize("layer", ["LSTM", "GRU", "SimpleRNN"])
def test_bidirectional_fused_into_one_op(layer, seqs, mode):
    text = HEAD.format(time="time") + (
        f"  - {{type: Bidirectional, name: bi, merge_mode: {mode}, layer: {{type: {layer}, units: 3, "
        f"return_sequences: {str(seqs).lower()}, return_state: true}}}}\noutputs: [bi, bi.states]\n")
    c, _, _ = check_parity(text, native=1, loops=0)
    node = next(n for n in c.model.graph.node if n.op_type in RNN_OPS)
    assert any(a.name == "direction" and a.s == b"bidirectional" for a in node.attribute)


@pytest.mark.parametrize("pattern", ["right", "holes", "empty_row"])
@pytest.mark.parametrize("mode", ["concat", "null"])
def test_bidirectional_masked(mode, pattern):
    text = HEAD.format(time=6) + (
        f"  - {{type: Masking}}\n  - {{type: Bidirectional, name: bi, merge_mode: {mode}, layer: "
        "{type: LSTM, units: 3, return_sequences: true}}\n")
    c, _, _ = check_parity(text, feeds=masked_input(pattern), onnx_reference=False, native=1, loops=2)
    assert op_counts(c.model)["If"] == 1   # one bidirectional op for right-padded batches, else two Loops


@pytest.mark.parametrize("lowering", ["loop", "unroll"])
def test_bidirectional_loop_and_unroll(lowering):
    text = HEAD.format(time=5) + (
        "  - {type: Bidirectional, name: bi, layer: {type: GRU, units: 3, return_sequences: true, "
        f"return_state: true, lowering: {lowering}}}}}\noutputs: [bi, bi.states]\n")
    check_parity(text, native=0, loops=2 if lowering == "loop" else 0)


def test_bidirectional_backward_layer_and_go_backwards_inner():
    text = HEAD.format(time="time") + (
        "  - {type: Bidirectional, name: bi, layer: {type: LSTM, units: 3, return_sequences: true}, "
        "backward_layer: {type: GRU, units: 2, go_backwards: true, return_sequences: true}}\n")
    check_parity(text, native=2, loops=0)
    text = HEAD.format(time="time") + (
        "  - {type: Bidirectional, name: bi, layer: {type: GRU, units: 3, go_backwards: true, return_sequences: true}, "
        "backward_layer: {type: GRU, units: 3, return_sequences: true}}\n")
    check_parity(text, native=2, loops=0)   # the halves swapped their directions: not fusable
    # Keras 3 refuses a layer reading backwards without its own backward_layer (both would)
    with pytest.raises(SpecError, match="needs a backward_layer with go_backwards: false"):
        compile_text(HEAD.format(time="time") + "  - {type: Bidirectional, layer: {type: GRU, units: 3, "
                     "go_backwards: true}}\n")


@pytest.mark.parametrize("lowering, native, loops", [("auto", 3, 0), ("loop", 0, 1), ("unroll", 0, 0)])
@pytest.mark.parametrize("options", ["return_state: true", "return_sequences: true, go_backwards: true"])
def test_stacked_cells(options, lowering, native, loops):
    text = HEAD.format(time=5) + (
        "  - {type: RNN, name: r, " + options + f", lowering: {lowering}, cell: [{{type: LSTMCell, units: 4}}, "
        "{type: GRUCell, units: 3, reset_after: false}, {type: SimpleRNNCell, units: 2}]}\n"
        + ("outputs: [r, r.states]\n" if "state" in options else ""))
    check_parity(text, native=native, loops=loops)


def test_rnn_lstmcell_equals_lstm():
    common = "units: 4, return_sequences: true, return_state: true"
    a = compile_text(HEAD.format(time="time") + f"  - {{type: LSTM, name: l, {common}}}\noutputs: [l, l.states]\n")
    b = compile_text(HEAD.format(time="time") + "  - {type: RNN, name: l, cell: {type: LSTMCell, units: 4}, "
                     "return_sequences: true, return_state: true}\noutputs: [l, l.states]\n", weights=a.weights)
    feeds = {"x": np.random.default_rng(0).normal(size=(2, 7, 3)).astype(np.float32)}
    ya, yb = run_ort(a.model, feeds), run_ort(b.model, feeds)
    assert list(ya) == list(yb) == ["l", "l.state_h", "l.state_c"]
    for k in ya:
        assert np.max(np.abs(ya[k] - yb[k])) <= 1e-6


def test_initial_state_from_inputs_and_layers():
    text = """rnnc: 1
inputs:
  x: {shape: [batch, time, 3]}
  h0: {shape: [batch, 4]}
  c0: {shape: [batch, 4]}
layers:
  - {type: LSTM, name: enc, units: 4, input: x, initial_state: [h0, c0], return_state: true}
  - {type: GRU, name: dec, units: 4, input: x, initial_state: [enc.state_h], return_sequences: true}
  - {type: RNN, name: r, input: x, initial_state: [enc.state_c], lowering: loop, cell: {type: SimpleRNNCell, units: 4}}
outputs: [enc, enc.states, dec, r]
"""
    check_parity(text, native=2, loops=1)


def test_layers_dense_bn_merges_activations():
    text = """rnnc: 1
inputs: {x: {shape: [batch, time, 3]}}
layers:
  - {type: Dense, name: d3, units: 5, activation: selu}
  - {type: BatchNormalization, name: bn, epsilon: 0.01}
  - {type: Dropout, rate: 0.5}
  - {type: LSTM, name: a, units: 4, return_sequences: true, dropout: 0.2, recurrent_dropout: 0.3}
  - {type: GRU, name: b, units: 4, input: bn, return_sequences: true}
  - {type: Concatenate, name: cat, input: [a, b]}
  - {type: Add, name: add, input: [a, b]}
  - {type: Multiply, name: mul, input: [a, b, a]}
  - {type: Average, name: avg, input: [a, b]}
  - {type: Activation, name: act, input: avg, activation: hard_sigmoid}
  - {type: Dense, name: out, input: cat, units: 3, activation: softmax}
outputs: [out, add, mul, act]
"""
    c, _, _ = check_parity(text, native=2, loops=0)
    assert c.graph.layers["a"].notes == ("dropout=0.2 ignored at inference", "recurrent_dropout=0.3 ignored at inference")
    assert c.graph.layers["a"].lowering == "native"


@pytest.mark.parametrize("act", ["tanh", "sigmoid", "relu", "hard_sigmoid", "linear", "softmax", "elu", "selu",
                                 "softsign", "softplus", "gelu", "silu"])
def test_every_activation_in_dense(act):
    text = HEAD.format(time="time") + f"  - {{type: Dense, units: 4, activation: {act}}}\n"
    check_parity(text, native=0, loops=0)


def test_batchnorm_other_axis_and_masked_merge():
    text = """rnnc: 1
inputs: {a: {shape: [batch, time, 3]}, b: {shape: [batch, time, 3]}}
layers:
  - {type: Masking, name: ma, input: a}
  - {type: Masking, name: mb, input: b}
  - {type: Add, name: add, input: [ma, mb]}
  - {type: BatchNormalization, name: bn, axis: 2}
  - {type: LSTM, name: l, units: 3, return_sequences: true, lowering: loop}
"""
    feeds = masked_input("holes")
    feeds = {"a": feeds["x"], "b": masked_input("left", seed=4)["x"]}
    check_parity(text, feeds=feeds, native=0, loops=1)


def test_native_request_that_cannot_be_exact_is_an_error():
    text = HEAD.format(time="time") + "  - {type: GRU, units: 4, activation: gelu, lowering: native}\n"
    with pytest.raises(LoweringError, match=r"lowering: native cannot be exact: activation 'gelu' has no form"):
        compile_text(text)


def test_unroll_needs_fixed_time():
    with pytest.raises(LoweringError, match="unroll needs a fixed time length"):
        compile_text(HEAD.format(time="time") + "  - {type: GRU, units: 4, lowering: unroll}\n")
    with pytest.raises(LoweringError, match="unroll: true needs a fixed time length"):
        compile_text(HEAD.format(time="time") + "  - {type: GRU, units: 4, unroll: true}\n")


def test_unroll_true_gives_straight_line_graph():
    c, _, _ = check_parity(HEAD.format(time=4) + "  - {type: LSTM, units: 3, unroll: true}\n", native=0, loops=0)
    assert c.graph.layers["lstm"].reason == "unroll: requested, time = 4"


def test_any_batch_and_length_from_one_model():
    c = compile_text(HEAD.format(time="time") + "  - {type: GRU, units: 4, return_sequences: true}\n")
    from rnnc.reference import run_reference
    for batch, time in ((1, 1), (5, 13), (2, 40)):
        feeds = {"x": np.random.default_rng(batch).normal(size=(batch, time, 3)).astype(np.float32)}
        want = run_reference(c.graph, c.weights, feeds)["gru"]
        assert run_ort(c.model, feeds)["gru"].shape == (batch, time, 4)
        assert np.max(np.abs(run_ort(c.model, feeds)["gru"] - want)) < 1e-5
        assert np.max(np.abs(run_onnx_reference(c.model, feeds)["gru"] - want)) < 1e-5


@pytest.mark.parametrize("layer", ["SimpleRNN", "LSTM", "GRU"])
def test_initial_state_from_a_layer_without_bias_runs_on_onnx_reference(layer):
    """An omitted input ("") after a node whose unused output had no name: onnx.reference
    would feed that output in. Every output gets a name."""
    text = (HEAD.format(time="time") + f"  - {{type: {layer}, name: a, units: 2, return_state: true}}\n"
            f"  - {{type: {layer}, name: b, input: x, units: 2, use_bias: false, initial_state: a.states}}\n")
    check_parity(text, native=2, loops=0, target="portable")
