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


# ---- the weights held once: compiled, saved and read without copies of their data ----------

def test_large_tensors_are_held_as_arrays_until_the_whole_model_is_asked_for(tmp_path):
    c = rnnc.compile_spec(load_spec_text(SPEC, "m.yaml"))
    table = c.weights["embedding/embeddings"]                  # 2000 x 32 float32: 256 KB
    held = c._arrays
    assert any(a is table for a in held.values())              # the weight itself, not a copy
    structure = c.structure
    names = {t.name for t in structure.graph.initializer}
    assert set(held) <= names
    for t in structure.graph.initializer:
        if t.name in held:
            assert not t.raw_data and list(t.dims) == list(held[t.name].shape)
    # the bytes written from the arrays are the whole model's
    data = c.serialize()
    assert c._arrays                                           # serializing made no whole model
    from rnnc.emit.model import serialized_size
    assert serialized_size(c._model, c._arrays) == len(data)   # what the 2 GB limit is judged on
    whole = c.model
    assert not c._arrays and {t.name for t in whole.graph.initializer} == names
    assert onnx.ModelProto.FromString(data) == whole
    assert len(data) == whole.ByteSize()
    tokens = np.random.default_rng(1).integers(0, 2000, size=(3, 4)).astype(np.int32)
    path = tmp_path / "m.onnx"
    c2 = rnnc.compile_spec(load_spec_text(SPEC, "m.yaml"))
    c2.save(path)                                              # written from the arrays
    assert onnx.load(str(path)) == whole
    np.testing.assert_array_equal(run(path, tokens), rnnc.Session(c2).run({"tokens": tokens})["lstm"])


def test_a_large_file_is_checked_and_inspected_without_its_weights(tmp_path, monkeypatch):
    import rnnc.metadata as meta
    c = rnnc.compile_spec(load_spec_text(SPEC, "m.yaml"))
    path = tmp_path / "m.onnx"
    c.save(path)
    monkeypatch.setattr(meta, "LARGE_FILE", 0)
    m = meta.load_model(path)
    table = next(t for t in m.graph.initializer if t.name.startswith("embedding/"))
    assert not table.raw_data and list(table.dims) == [2000, 32]          # read without its data
    from rnnc.inspect import inspect_model
    assert inspect_model(path).data["onnx_params"] == inspect_model(c.model).data["onnx_params"] > 2000 * 32
    tokens = np.random.default_rng(2).integers(0, 2000, size=(2, 3)).astype(np.int32)
    np.testing.assert_array_equal(rnnc.Session(path).run({"tokens": tokens})["lstm"], run(path, tokens))
    # a tensor whose data does not fit its dims is named
    whole = onnx.load(str(path))
    t = next(t for t in whole.graph.initializer if t.name.startswith("embedding/"))
    t.raw_data = t.raw_data[:-4]
    onnx.save(whole, str(tmp_path / "bad.onnx"))
    with pytest.raises(rnnc.RnncError, match=r"initializer 'embedding/\S+' has 255,996 bytes of data; its type "
                                             r"and dims \[2000, 32\] need 256,000"):
        meta.load_model(tmp_path / "bad.onnx")


def test_strip_raw_data_keeps_every_other_field():
    from rnnc.protowire import WireError, strip_raw_data
    c = rnnc.compile_spec(load_spec_text(SPEC, "m.yaml"))
    model = c.model
    data = model.SerializeToString()
    skeleton, stripped = strip_raw_data(data, 1 << 12)
    sizes = {i: len(t.raw_data) for i, t in enumerate(model.graph.initializer) if len(t.raw_data) >= 1 << 12}
    assert dict(stripped) == sizes and sizes
    expect = onnx.ModelProto()
    expect.CopyFrom(model)
    for i in sizes:
        expect.graph.initializer[i].ClearField("raw_data")
    assert onnx.ModelProto.FromString(skeleton) == expect
    same, none = strip_raw_data(data, len(data))                # nothing stripped
    assert none == [] and onnx.ModelProto.FromString(same) == model
    for bad in (data[:-1], data[:len(data) // 2], b"\x0f" + data, b"\x00" + data, data + b"\x08"):
        with pytest.raises(WireError):      # truncated; wire type 7; field number 0; a varint cut off
            strip_raw_data(bad, 1)


MEMORY_PROBE = r"""
import resource, sys
import rnnc, rnnc.pipeline, rnnc.metadata
from rnnc.spec import load_spec_text
spec = load_spec_text(sys.argv[1], "big.yaml")
peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
before = peak()
if sys.argv[3] == "compile":
    rnnc.compile_spec(spec).save(sys.argv[2])
else:
    rnnc.metadata.load_model(sys.argv[2])
print(peak() - before)
"""


def test_compile_and_save_hold_the_weights_once(tmp_path):
    """A 120 MB model (an embedding table, mostly) compiled and saved: the peak memory beyond
    the imports is near the weights' size (it was about 5 times it when the model was built
    as protos, copied into the graph and serialized whole); and the saved file, read as large
    files are (what inspect and run do first), takes a small part of it."""
    import subprocess
    import sys
    big = SPEC.replace("input_dim: 2000, output_dim: 32", "input_dim: 30000, output_dim: 1000")
    path = tmp_path / "big.onnx"

    def probe(what: str) -> float:
        r = subprocess.run([sys.executable, "-c", MEMORY_PROBE, big, str(path), what], capture_output=True,
                           text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        return int(r.stdout) / weights

    weights = 30000 * 1000 * 4
    compiled = probe("compile")
    assert path.stat().st_size > weights
    loaded = probe("load")
    assert compiled < 1.5, f"compile + save peaked at {compiled:.2f} x the weights"
    assert loaded < 0.25, f"reading the file peaked at {loaded:.2f} x the weights"


def test_the_checker_sees_a_model_whose_large_tensors_are_held_apart():
    """compile's onnx.checker pass on the model without its held arrays (they are typed graph
    inputs there): a broken node is still found."""
    from rnnc.emit.model import check
    from rnnc.errors import InternalError
    c = rnnc.compile_spec(load_spec_text(SPEC, "m.yaml"))
    model, held = c._model, c._arrays
    assert held and not any(t.name in held for t in model.graph.initializer)
    check(model, held)
    gather = next(n for n in model.graph.node if n.op_type == "Gather")
    gather.op_type = "MatMul"
    with pytest.raises(InternalError, match="fails onnx.checker"):
        check(model, held)
