"""Big models: ONNX external data above the size limit (lowered here so the test needs no
2 GB), Compiled.save, and partial weights (ignore_extra)."""
from __future__ import annotations

import numpy as np
import onnx
import pytest

import rnnc
from rnnc.errors import WeightsError
from rnnc.spec import load_spec_text
from rnnc.weights import init as winit

SPEC = """rnnc: 1
name: big
inputs:
  tokens: {shape: [batch, time], dtype: int32}
layers:
  - {type: Embedding, name: embedding, input_dim: 2000, output_dim: 32}
  - {type: LSTM, name: lstm, units: 16}
"""


def run(model_path, tokens):
    import onnxruntime as ort
    sess = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    return sess.run(None, {"tokens": tokens})[0]


def test_above_the_limit_the_model_is_written_with_external_data(tmp_path):
    tokens = np.random.default_rng(0).integers(0, 2000, size=(2, 5)).astype(np.int32)
    small = rnnc.compile_spec(load_spec_text(SPEC, "m.yaml"))
    assert small.save(tmp_path / "inline.onnx") == [tmp_path / "inline.onnx"]      # under the limit: one file
    want = run(tmp_path / "inline.onnx", tokens)

    c = rnnc.compile_spec(load_spec_text(SPEC, "m.yaml"))
    size = c.model.ByteSize()
    files = c.save(tmp_path / "m.onnx", limit=size - 1)                             # just above the limit
    assert files == [tmp_path / "m.onnx", tmp_path / "m.onnx.data"]
    assert (tmp_path / "m.onnx").stat().st_size < 20_000                            # the tensors are in .data
    assert (tmp_path / "m.onnx.data").stat().st_size >= 2000 * 32 * 4
    m = onnx.load(str(tmp_path / "m.onnx"), load_external_data=False)
    table = next(t for t in m.graph.initializer if t.name.startswith("embedding/"))
    assert table.data_location == onnx.TensorProto.EXTERNAL
    assert {e.key: e.value for e in table.external_data}["location"] == "m.onnx.data"   # relative: movable
    np.testing.assert_array_equal(run(tmp_path / "m.onnx", tokens), want)
    onnx.checker.check_model(str(tmp_path / "m.onnx"), full_check=True)


def test_external_data_on_request_and_a_bad_name(tmp_path):
    c = rnnc.compile_spec(load_spec_text(SPEC, "m.yaml"))
    assert len(c.save(tmp_path / "e.onnx", external_data=True)) == 2
    with pytest.raises(rnnc.RnncError, match="ending in .onnx"):
        c.save(tmp_path / "e.bin")


def test_the_size_bound_is_memory_not_the_onnx_file():
    from rnnc.ir import build
    assert build.MAX_PARAMS > 500_000_000      # over 2 GB of float32 is external data, not a refusal
    big = SPEC.replace("input_dim: 2000, output_dim: 32", "input_dim: 800000, output_dim: 600").replace("units: 16", "units: 2048")
    graph = build.build_graph(load_spec_text(big, "m.yaml"))
    assert graph.param_count() > 500_000_000


def test_default_weights_are_drawn_in_float32_chunks_with_the_same_values(monkeypatch):
    rng = np.random.default_rng([0, 7])
    want = rng.uniform(-0.05, 0.05, size=(300, 7)).astype(np.float32)
    monkeypatch.setattr(winit, "CHUNK", 64)      # many chunks, a partial last one
    got = winit.init_param("uniform", (300, 7), np.random.default_rng([0, 7]))
    assert got.dtype == np.float32 and np.array_equal(got, want)


ENCODER = """rnnc: 1
inputs:
  tokens: {shape: [batch, time], dtype: int32}
layers:
  - {type: Embedding, name: embedding, input_dim: 50, output_dim: 8}
  - {type: LSTM, name: encoder, units: 6}
"""


def test_ignore_extra_loads_an_encoder_from_a_seq2seqs_weights():
    enc = rnnc.compile_spec(load_spec_text(ENCODER, "e.yaml"))
    seq2seq = dict(enc.weights)
    seq2seq["decoder/kernel"] = np.zeros((8, 24), np.float32)        # the decoder's, not in the encoder spec
    seq2seq["dense/bias"] = np.zeros((3,), np.float32)
    with pytest.raises(WeightsError, match=r"unexpected 2 weight\(s\).*ignore_extra=True"):
        rnnc.compile_spec(load_spec_text(ENCODER, "e.yaml"), weights=seq2seq)
    c = rnnc.compile_spec(load_spec_text(ENCODER, "e.yaml"), weights=seq2seq, ignore_extra=True)
    assert set(c.weights) == set(enc.weights)
    bad = {**seq2seq, "encoder/kernel": np.zeros((3, 3), np.float32)}  # still checked: shapes, missing keys
    with pytest.raises(WeightsError, match="encoder/kernel: expected shape"):
        rnnc.compile_spec(load_spec_text(ENCODER, "e.yaml"), weights=bad, ignore_extra=True)
    del seq2seq["encoder/bias"]
    with pytest.raises(WeightsError, match="missing 1 weight"):
        rnnc.compile_spec(load_spec_text(ENCODER, "e.yaml"), weights=seq2seq, ignore_extra=True)
