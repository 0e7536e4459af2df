"""Weights: Keras-default initializers (seeded), .npz/.safetensors files, and clear errors."""
from __future__ import annotations

import numpy as np
import pytest

import rnnc
from helpers import random_weights
from rnnc.cells.gates import permute_gates
from rnnc.errors import WeightsError
from rnnc.ir import build_graph
from rnnc.spec import load_spec_text
from rnnc.weights import default_weights, save_npz

TEXT = """rnnc: 1
inputs: {t: {shape: [batch, time], dtype: int32}}
layers:
  - {type: Embedding, name: emb, input_dim: 50, output_dim: 8}
  - {type: LSTM, name: lstm, units: 6, return_sequences: true}
  - {type: GRU, name: gru, units: 5}
  - {type: BatchNormalization, name: bn}
  - {type: Dense, name: dense, units: 3}
"""


def graph():
    return build_graph(load_spec_text(TEXT, "m.yaml"))


def test_keras_default_initializers():
    w = default_weights(graph(), seed=0)
    k = w["lstm/kernel"]
    limit = np.sqrt(6 / (8 + 24))
    assert k.shape == (8, 24) and np.abs(k).max() <= limit and np.abs(k).max() > 0.8 * limit
    rk = w["lstm/recurrent_kernel"].astype(np.float64)          # [6, 24]: orthogonal rows
    assert np.allclose(rk @ rk.T, np.eye(6), atol=1e-5)
    assert np.array_equal(w["lstm/bias"], np.r_[np.zeros(6), np.ones(6), np.zeros(12)].astype(np.float32))
    assert w["gru/bias"].shape == (2, 15) and not w["gru/bias"].any()
    assert np.abs(w["emb/embeddings"]).max() <= 0.05
    assert (w["bn/gamma"] == 1).all() and (w["bn/moving_variance"] == 1).all() and not w["bn/beta"].any()
    assert w["lstm/kernel"].dtype == np.float32


def test_unit_forget_bias_false_is_zeros():
    g = build_graph(load_spec_text(TEXT.replace("units: 6,", "units: 6, unit_forget_bias: false,"), "m.yaml"))
    assert not default_weights(g, 0)["lstm/bias"].any()


def test_seed_is_reproducible_and_per_parameter():
    a, b, c = default_weights(graph(), 0), default_weights(graph(), 0), default_weights(graph(), 1)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["lstm/kernel"], c["lstm/kernel"])
    # adding a layer leaves the others' values unchanged
    g2 = build_graph(load_spec_text(TEXT + "  - {type: Dense, name: extra, units: 2}\n", "m.yaml"))
    d = default_weights(g2, 0)
    assert np.array_equal(a["gru/kernel"], d["gru/kernel"])


def test_npz_and_safetensors_round_trip(tmp_path):
    g = graph()
    w = random_weights(g, 3)
    save_npz(w, tmp_path / "w.npz")
    from safetensors.numpy import save_file
    save_file(w, str(tmp_path / "w.safetensors"))
    spec = load_spec_text(TEXT, str(tmp_path / "m.yaml"))
    for f in ("w.npz", "w.safetensors"):
        c = rnnc.compile_spec(spec, weights=tmp_path / f)
        assert all(np.array_equal(c.weights[k], w[k]) for k in w)


def test_weights_key_in_spec_is_relative_to_the_spec(tmp_path):
    g = graph()
    w = random_weights(g, 5)
    save_npz(w, tmp_path / "model.npz")
    (tmp_path / "m.yaml").write_text(TEXT + "weights: model.npz\n")
    c = rnnc.compile_spec(tmp_path / "m.yaml")
    assert np.array_equal(c.weights["dense/kernel"], w["dense/kernel"])


def test_missing_unexpected_misshapen_are_listed_together():
    w = random_weights(graph(), 0)
    del w["gru/bias"]
    w["gru/kernal"] = w["gru/kernel"]
    w["lstm/kernel"] = w["lstm/kernel"][:, :8]
    w["dense/bias"] = np.array(["a", "b", "c"])
    with pytest.raises(WeightsError) as e:
        rnnc.compile_spec(load_spec_text(TEXT, "m.yaml"), weights=w)
    text = e.value.report()
    assert "missing 1 weight(s): gru/bias" in text
    assert "unexpected 1 weight(s): gru/kernal" in text
    assert "lstm/kernel: expected shape [8, 24], got [8, 8]" in text
    assert "dense/bias: expected a float array, got dtype <U1" in text


def test_non_finite_weights_and_bad_files(tmp_path):
    w = random_weights(graph(), 0)
    w["dense/kernel"][0, 0] = np.nan
    with pytest.raises(WeightsError, match="dense/kernel: contains NaN"):
        rnnc.compile_spec(load_spec_text(TEXT, "m.yaml"), weights=w)
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(WeightsError, match=r"expected a NumPy archive \(\.npz\), got a text file"):
        rnnc.compile_spec(load_spec_text(TEXT, "m.yaml"), weights=tmp_path / "bad.npz")
    with pytest.raises(WeightsError, match="expected a .npz or .safetensors file"):
        (tmp_path / "w.bin").write_bytes(b"")
        rnnc.compile_spec(load_spec_text(TEXT, "m.yaml"), weights=tmp_path / "w.bin")
    with pytest.raises(WeightsError, match="weights file not found"):
        rnnc.compile_spec(load_spec_text(TEXT, "m.yaml"), weights=tmp_path / "none.npz")


def test_pickled_npz_is_not_loaded(tmp_path):
    np.savez(tmp_path / "p.npz", **{"dense/kernel": np.array([object()], dtype=object)})
    with pytest.raises(WeightsError, match="which rnnc never loads") as e:
        rnnc.compile_spec(load_spec_text(TEXT, "m.yaml"), weights=tmp_path / "p.npz")
    assert "allow_pickle" not in str(e.value)


@pytest.mark.parametrize("src, dst, expected", [
    ("keras_lstm", "onnx_lstm", "iofc"), ("keras_lstm", "torch_lstm", "ifco"), ("onnx_lstm", "keras_lstm", "ifco"),
    ("keras_gru", "torch_gru", "rzh"), ("torch_gru", "keras_gru", "zrh"), ("keras_lstm", "rnnc_lstm", "ifoc"),
])
def test_permute_gates(src, dst, expected):
    from rnnc.cells.gates import LAYOUTS
    gates = LAYOUTS[src]
    w = np.concatenate([np.full((2, 3), ord(g)) for g in gates], axis=1)       # [in, G*u], block per gate
    out = permute_gates(w, src, dst)
    assert "".join(chr(int(v)) for v in out[0, ::3]) == expected
    with pytest.raises(ValueError):
        permute_gates(w, "keras_lstm", "keras_gru")
