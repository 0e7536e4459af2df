"""Stateful RNNs: state as model I/O, carried by rnnc.Session; chunked == whole."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import rnnc
from helpers import check_parity, compile_text
from rnnc.errors import InputError, SpecError


def spec(layer: str, batch: int = 3, feat: int = 4) -> str:
    return f"rnnc: 1\ninputs: {{x: {{shape: [{batch}, time, {feat}]}}}}\nlayers:\n  - {layer}\n"


LAYERS = {
    "lstm": "{type: LSTM, name: r, units: 5, stateful: true, return_sequences: true}",
    "gru": "{type: GRU, name: r, units: 5, stateful: true, return_sequences: true}",
    "gru_reset_before": "{type: GRU, name: r, units: 5, reset_after: false, stateful: true}",
    "simple_rnn": "{type: SimpleRNN, name: r, units: 5, stateful: true, return_sequences: true}",
    "rnn_lstmcell": "{type: RNN, name: r, stateful: true, return_sequences: true, cell: {type: LSTMCell, units: 5}}",
    "stacked": "{type: RNN, name: r, stateful: true, return_sequences: true, cell: [{type: LSTMCell, units: 5}, "
               "{type: GRUCell, units: 3}, {type: SimpleRNNCell, units: 2}]}",
    "lstm_loop": "{type: LSTM, name: r, units: 5, stateful: true, return_sequences: true, activation: gelu}",
}


def chunks(total: int, sizes: list[int], seed: int = 0, batch: int = 3, feat: int = 4) -> tuple[np.ndarray, list]:
    x = np.random.default_rng(seed).normal(size=(batch, total, feat)).astype(np.float32)
    bounds = np.cumsum([0, *sizes])
    assert bounds[-1] == total
    return x, [x[:, a:b] for a, b in zip(bounds[:-1], bounds[1:])]


@pytest.mark.parametrize("name", list(LAYERS))
def test_chunked_equals_whole_and_reset(name):
    c = compile_text(spec(LAYERS[name]))
    seqs = "return_sequences: true" in LAYERS[name]
    whole = rnnc.Session(c, providers="cpu")
    x, parts = chunks(12, [5, 1, 6])
    want = whole.run({"x": x})["r"]
    sess = rnnc.Session(c, providers="cpu")
    for _ in range(2):                       # second round: after reset_states()
        got = [sess.run({"x": p})["r"] for p in parts]
        got = np.concatenate(got, axis=1) if seqs else got[-1]
        assert np.max(np.abs(got - want)) <= 1e-5
        sess.reset_states()
    assert all(not v.any() for v in sess.states.values())


BIDIRECTIONAL = {   # each half carries its states (Keras 3); not chunk-invariant: the backward half reads each chunk from its end
    "bidi_fused": "{type: Bidirectional, name: r, layer: {type: LSTM, units: 5, stateful: true, return_sequences: true}}",
    "bidi_halves": "{type: Bidirectional, name: r, merge_mode: null, layer: {type: GRU, units: 5, stateful: true}, "
                   "backward_layer: {type: SimpleRNN, units: 3, stateful: true, go_backwards: true}}",
    "bidi_loop": "{type: Bidirectional, name: r, layer: {type: GRU, units: 5, stateful: true, lowering: loop}}",
}


@pytest.mark.parametrize("name", ["lstm", "stacked", *BIDIRECTIONAL])
def test_state_io_matches_reference(name):
    rng = np.random.default_rng(0)
    text = spec(LAYERS.get(name) or BIDIRECTIONAL[name])
    c = compile_text(text)
    feeds = {"x": rng.normal(size=(3, 4, 4)).astype(np.float32)}
    for _, name_in, _, dims in c.graph.state_io():
        feeds[name_in] = rng.normal(size=dims).astype(np.float32)
    c, got, _ = check_parity(text, feeds=feeds)
    if name.startswith("bidi"):   # the forward half's states, then the backward half's
        ins = [i.name for i in c.model.graph.input][1:]
        half = [n.split("/")[1].split("_")[0] for n in ins]
        assert half == sorted(half, key=["forward", "backward"].index) and set(half) == {"forward", "backward"}
        assert len(got) == 1 + (1 if "merge_mode: null" in text else 0) + len(ins)


def test_io_names_and_states_dict():
    c = compile_text(spec(LAYERS["lstm"]))
    assert [i.name for i in c.model.graph.input] == ["x", "r/state_h_in", "r/state_c_in"]
    assert [o.name for o in c.model.graph.output] == ["r", "r/state_h_out", "r/state_c_out"]
    sess = rnnc.Session(c)
    assert sess.input_names == ["x"] and sess.output_names == ["r"] and sess.stateful
    assert list(sess.states) == ["r.state_h", "r.state_c"]
    h = np.full((3, 5), 0.5, np.float32)
    sess.states = {"r.state_h": h}
    assert np.array_equal(sess.states["r.state_h"], h)
    x = np.zeros((3, 2, 4), np.float32)
    a = sess.run({"x": x})["r"]
    sess.reset_states({"r.state_h": h})
    b = sess.run({"x": x})["r"]
    assert np.array_equal(a, b)
    with pytest.raises(InputError, match=r"state 'r.state_c': expected shape \(3, 5\), got \(2, 5\)"):
        sess.states = {"r.state_c": np.zeros((2, 5))}
    with pytest.raises(InputError, match="unknown state 'r.state'"):
        sess.reset_states({"r.state": h})
    with pytest.raises(InputError, match="are states the session carries"):
        sess.run({"x": x, "r/state_h_in": h})


def test_wrong_batch_chunk_is_an_error_and_states_stay():
    sess = rnnc.Session(compile_text(spec(LAYERS["gru"])))
    sess.run({"x": np.ones((3, 4, 4), np.float32)})
    before = sess.states
    with pytest.raises(InputError, match=r"input 'x': expected size 3 on axis 0 \(3, time, 4\), got shape \(2, 4, 4\)"):
        sess.run({"x": np.ones((2, 4, 4), np.float32)})
    assert all(np.array_equal(before[k], v) for k, v in sess.states.items())


@pytest.mark.parametrize("name", ["lstm", "gru", "simple_rnn", "lstm_loop"])
def test_empty_chunk_is_an_error_and_states_stay(name):
    """ONNX Runtime's native ops would overwrite the states on a zero-length chunk (its GRU
    aborts the process): the session refuses the chunk first."""
    sess = rnnc.Session(compile_text(spec(LAYERS[name])))
    sess.run({"x": np.ones((3, 4, 4), np.float32)})
    before = sess.states
    with pytest.raises(InputError, match=r"input 'x': axis 1 \(time\) has size 0 in shape \(3, 0, 4\): expected at least 1"):
        sess.run({"x": np.ones((3, 0, 4), np.float32)})
    assert all(np.array_equal(before[k], v) for k, v in sess.states.items())


@pytest.mark.parametrize("values, message", [
    ({"r.state_h": "zeros"}, r"state 'r.state_h': expected a float32 array of shape \(3, 5\), got a str"),
    ({"r.state_h": [[1.0, 2.0], [3.0]]}, r"state 'r.state_h': expected a float32 array of shape \(3, 5\), got a list"),
    ([np.zeros((3, 5))], r"states: expected a dict \{state name: array\} with names from r.state_h, r.state_c, got list"),
])
def test_bad_state_values_are_clear_errors(values, message):
    sess = rnnc.Session(compile_text(spec(LAYERS["lstm"])))
    sess.run({"x": np.ones((3, 2, 4), np.float32)})
    before = sess.states
    for setter in (lambda: setattr(sess, "states", values), lambda: sess.reset_states(values)):
        with pytest.raises(InputError, match=message):
            setter()
        assert all(np.array_equal(before[k], v) for k, v in sess.states.items())


def test_keras_guide_paragraphs():
    """The guide: three paragraphs of (20, 10, 50) through LSTM(64, stateful=True), then reset_states()."""
    c = compile_text("rnnc: 1\ninputs: {x: {shape: [20, time, 50]}}\nlayers:\n"
                     "  - {type: LSTM, name: lstm, units: 64, stateful: true}\n")
    rng = np.random.default_rng(1)
    paragraphs = [rng.normal(size=(20, 10, 50)).astype(np.float32) for _ in range(3)]
    sess = rnnc.Session(c)
    outs = [sess.run({"x": p})["lstm"] for p in paragraphs]
    whole = rnnc.Session(c).run({"x": np.concatenate(paragraphs, axis=1)})["lstm"]
    assert np.max(np.abs(outs[-1] - whole)) <= 1e-5
    sess.reset_states()
    assert np.max(np.abs(sess.run({"x": paragraphs[0]})["lstm"] - outs[0])) <= 1e-6


@pytest.mark.parametrize("text, message", [
    (spec("{type: LSTM, units: 3, stateful: true}").replace("[3, time", "[batch, time"),
     "stateful: true needs a fixed batch size, got 'batch'"),
    ("rnnc: 1\ninputs: {x: {shape: [2, time, 3]}, h: {shape: [2, 3]}}\nlayers:\n"
     "  - {type: GRU, units: 3, input: x, stateful: true, initial_state: [h]}\n",
     "initial_state cannot be combined with stateful: true"),
    (spec("{type: Bidirectional, layer: {type: LSTM, units: 3, stateful: true}, "
          "backward_layer: {type: LSTM, units: 3, go_backwards: true}}"),
     "backward_layer must have the same stateful as layer"),
])
def test_stateful_spec_errors(text, message):
    with pytest.raises(SpecError, match=message):
        compile_text(text)


def test_cli_chunk_streams_and_concatenates(tmp_path):
    (tmp_path / "s.yaml").write_text(spec(LAYERS["gru"]) + "  - {type: Dense, name: d, units: 2}\n")
    model = tmp_path / "m.onnx"

    def run(*a):
        return subprocess.run([sys.executable, "-m", "rnnc", *map(str, a)], capture_output=True, text=True)

    assert run("compile", tmp_path / "s.yaml", "-o", model).returncode == 0
    np.save(tmp_path / "x.npy", np.random.default_rng(0).normal(size=(3, 23, 4)).astype(np.float32))
    r = run("run", model, "--input", f"x={tmp_path / 'x.npy'}", "--chunk", "5", "-o", tmp_path / "c.npz")
    assert r.returncode == 0, r.stderr
    assert "chunk 5/5" in r.stderr
    assert run("run", model, "--input", f"x={tmp_path / 'x.npy'}", "-o", tmp_path / "w.npz").returncode == 0
    chunked, whole = np.load(tmp_path / "c.npz")["d"], np.load(tmp_path / "w.npz")["d"]
    assert chunked.shape == (3, 23, 2) and np.max(np.abs(chunked - whole)) <= 1e-5
    (tmp_path / "p.yaml").write_text(spec("{type: GRU, units: 5}"))
    assert run("compile", tmp_path / "p.yaml", "-o", tmp_path / "p.onnx").returncode == 0
    r = run("run", tmp_path / "p.onnx", "--input", f"x={tmp_path / 'x.npy'}", "--chunk", "5")
    assert r.returncode == 2 and "--chunk needs a stateful model" in r.stderr
    for bad in ("0", "-3"):
        r = run("run", model, "--input", f"x={tmp_path / 'x.npy'}", "--chunk", bad, "-o", tmp_path / "z.npz")
        assert r.returncode == 2 and f"--chunk: expected a positive number of time steps, got {bad}" in r.stderr
        assert not (tmp_path / "z.npz").exists()
