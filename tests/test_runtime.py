"""rnnc.Session: providers, output order, and input validation with clear errors."""
from __future__ import annotations

import numpy as np
import pytest

import rnnc
from helpers import compile_text
from rnnc.errors import InputError, ModelFileError, RnncError

TEXT = """rnnc: 1
inputs:
  tokens: {shape: [batch, time], dtype: int32}
  h0: {shape: [batch, 4]}
layers:
  - {type: Embedding, name: emb, input: tokens, input_dim: 20, output_dim: 3}
  - {type: GRU, name: gru, units: 4, initial_state: [h0], return_state: true, return_sequences: true}
  - {type: Dense, name: dense, units: 2}
outputs: {logits: dense, state: gru.state}
"""


@pytest.fixture(scope="module")
def sess():
    return rnnc.Session(compile_text(TEXT), providers="auto")


def feeds(batch=2, time=3):
    return {"tokens": np.ones((batch, time), np.int32), "h0": np.zeros((batch, 4), np.float32)}


def test_names_order_and_provider(sess):
    assert sess.input_names == ["tokens", "h0"]
    assert sess.output_names == ["logits", "state"]
    assert sess.provider in ("CUDAExecutionProvider", "CPUExecutionProvider")
    out = sess.run(feeds())
    assert list(out) == ["logits", "state"]
    assert out["logits"].shape == (2, 3, 2) and out["state"].shape == (2, 4)


def test_cpu_provider_explicit():
    s = rnnc.Session(compile_text(TEXT), providers="cpu")
    assert s.providers == ["CPUExecutionProvider"]


@pytest.mark.parametrize("bad, message", [
    ({"tokens": np.ones((2, 3), np.float32)}, "input 'tokens': expected dtype int32, got float32"),
    ({"tokens": np.ones((2, 3, 1), np.int32)}, "input 'tokens': expected rank 2 (batch, time), got shape (2, 3, 1)"),
    ({"h0": np.zeros((2, 5), np.float32)}, "input 'h0': expected size 4 on axis 1 (batch, 4), got shape (2, 5)"),
    ({"h0": np.zeros((3, 4), np.float32)}, "input 'h0': dim 'batch' is 3 on axis 0, but 2 in input 'tokens'"),
    ({"tokens": np.full((2, 3), 20, np.int32)}, "token id 20 is outside [0, 20) of embedding 'emb'"),
    ({"tokens": np.full((2, 3), -1, np.int32)}, "token id -1 is outside [0, 20)"),
    ({"extra": np.zeros(1)}, "unknown input(s) 'extra': expected tokens, h0"),
])
def test_bad_inputs_are_clear_errors(sess, bad, message):
    with pytest.raises(InputError) as e:
        sess.run({**feeds(), **bad})
    assert message in e.value.report()


def test_missing_input(sess):
    with pytest.raises(InputError, match="missing input"):
        sess.run({"tokens": np.ones((2, 3), np.int32)})


def test_bad_model_files(tmp_path):
    with pytest.raises(ModelFileError, match="model file not found"):
        rnnc.Session(tmp_path / "none.onnx")
    (tmp_path / "bad.onnx").write_bytes(b"garbage")
    with pytest.raises(ModelFileError, match="this is a text file, not an ONNX model"):
        rnnc.Session(tmp_path / "bad.onnx")
    with pytest.raises(RnncError, match="providers: expected auto, cpu, cuda"):
        rnnc.Session(compile_text(TEXT), providers="tpu")


def test_dims_named_apart_but_combined_are_checked_at_run_time():
    """Keras lets two None dims meet in a merge or an initial_state: they must then agree at
    run time, which the session checks (instead of ONNX Runtime's broadcast error, or a silent
    broadcast of a size-1 dim)."""
    text = ("rnnc: 1\ninputs:\n  a: {shape: [batch, t1, 4]}\n  b: {shape: [batch, t2, 4]}\n  h: {shape: [n, 3]}\n"
            "layers:\n  - {type: Add, name: add, input: [a, b]}\n"
            "  - {type: GRU, name: gru, units: 3, initial_state: [h]}\n")
    sess = rnnc.Session(compile_text(text))
    ok = {"a": np.ones((2, 5, 4), np.float32), "b": np.ones((2, 5, 4), np.float32), "h": np.zeros((2, 3), np.float32)}
    assert sess.run(ok)["gru"].shape == (2, 3)
    for bad, message in [({"b": np.ones((2, 1, 4), np.float32)},
                          "dims 't1' = 5 and 't2' = 1 differ, but layer 'add' needs axis 1 of its inputs equal"),
                         ({"h": np.zeros((3, 3), np.float32)},
                          "dims 'n' = 3 and 'batch' = 2 differ, but layer 'gru' needs the batch of initial state 0")]:
        with pytest.raises(InputError) as e:
            sess.run({**ok, **bad})
        assert message in e.value.report()


@pytest.mark.parametrize("table, what", [
    ("{not json", "not JSON"), ("[1]", "expected a JSON object, got list"),
    ('{"layers": [{"kind": "Embedding", "name": "e", "inputs": ["tokens"]}]}', "Embedding without a positive input_dim"),
    ('{"layers": [{"kind": "LSTM"}]}', "layer 0 is not a"),
    ('{"layers": [], "states": [{"layer": "g", "port": "state", "input": "g/state_in", "output": "g/state_out", '
     '"dims": [100000, 100000, 100000]}]}', "state 0 has"),
    ('{"layers": [], "states": [{"layer": "g", "port": "state", "input": "nope", "output": "x", "dims": [2, 4]}]}',
     "names state 'nope' of shape [2, 4], which the graph does not have"),
])
def test_damaged_metadata_is_a_clear_error(tmp_path, table, what):
    """A model file is data from anywhere: rnnc's table in it is checked, not trusted."""
    import onnx
    from onnx import helper

    from rnnc.inspect import inspect_model
    m = compile_text(TEXT).model
    del m.metadata_props[:]
    helper.set_model_props(m, {"rnnc.model": table})
    path = tmp_path / "m.onnx"
    onnx.save(m, path)
    with pytest.raises(ModelFileError, match="metadata") as e:
        rnnc.Session(path)
    assert what in str(e.value)
    if "graph does not have" not in what:     # inspect reads the table alone
        with pytest.raises(ModelFileError, match="metadata"):
            inspect_model(path)


def test_api_arguments_of_the_wrong_type_are_rnnc_errors(tmp_path):
    from rnnc.spec import load_spec_text
    spec = load_spec_text(TEXT, "m.yaml")
    w = compile_text(TEXT).weights
    for kwargs, message in [({"weights": {**w, 1: np.zeros(2)}}, "expected weight names"),
                            ({"weights": {**w, "dense/bias": [[1.0], [2.0, 3.0]]}}, "dense/bias: expected an array"),
                            ({"weights": 123}, "expected a file path or a dict of arrays, got int"),
                            ({"opset": "21"}, "opset: expected an integer, got '21'")]:
        with pytest.raises(RnncError, match=message):
            rnnc.compile_spec(spec, **kwargs)
    with pytest.raises(RnncError, match="expected a file path, got NoneType"):
        rnnc.load_spec(None)
    sess = rnnc.Session(compile_text(TEXT))
    with pytest.raises(InputError, match="expected a dict"):
        sess.run(None)
    with pytest.raises(InputError, match="input 'tokens': expected an array"):
        sess.run({**feeds(), "tokens": [[1, 2], [3]]})
    with pytest.raises(RnncError, match="threads: expected a non-negative integer"):
        rnnc.Session(compile_text(TEXT), threads="x")


def test_big_endian_inputs_are_read(sess):
    f = feeds()
    want = sess.run(f)["logits"]
    got = sess.run({"tokens": f["tokens"].astype(">i4"), "h0": f["h0"].astype(">f4")})["logits"]
    assert np.array_equal(got, want)
