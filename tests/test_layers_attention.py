"""Attention, AdditiveAttention and MultiHeadAttention against Keras 3 (masks on query and
value: right-padded, left-padded, holed and all-masked rows; causal and not; symbolic time;
query and value lengths that differ)."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from keras_parity import floats, keras, keras_parity, masked_floats

from rnnc.errors import SpecError
from rnnc.importers import import_keras
from rnnc.importers.common import ImportProblem
from rnnc.ir import build_graph
from rnnc.spec import load_spec, load_spec_text

L = keras.layers
pytestmark = [pytest.mark.keras, pytest.mark.torch]
ROOT = Path(__file__).resolve().parents[1]


def _feeds(tq: int, tv: int, fq: int = 4, fv: int = 4, b: int = 5, seed: int = 1) -> dict[str, np.ndarray]:
    return {"q": masked_floats(b, tq, fq, seed=seed), "v": masked_floats(b, tv, fv, seed=seed + 1)}


def _inputs(fq: int = 4, fv: int = 4, masked: bool = True):
    q, v = keras.Input((None, fq), name="q"), keras.Input((None, fv), name="v")
    return q, v, (L.Masking()(q) if masked else q), (L.Masking()(v) if masked else v)


# -- Attention (Luong) ---------------------------------------------------------------------

@pytest.mark.parametrize("use_scale", [False, True])
@pytest.mark.parametrize("score_mode", ["dot", "concat"])
@pytest.mark.parametrize("causal", [False, True])
def test_attention(tmp_path, use_scale, score_mode, causal):
    q, v, mq, mv = _inputs()
    y, s = L.Attention(use_scale=use_scale, score_mode=score_mode, name="att")([mq, mv], use_causal_mask=causal,
                                                                  return_attention_scores=True)
    m = keras.Model([q, v], [y, s])
    imp, ops = keras_parity(m, tmp_path, _feeds(4, 6), _feeds(6, 3, seed=7))
    assert ops["Softmax"] == 1 and ops["MatMul"] == (2 if score_mode == "dot" else 1)
    assert ops["Tanh"] == (score_mode == "concat")
    # masked keys (Where on the scores), masked queries (Where on the output)
    assert ops["Where"] == 2 and ops["Sub"] == 1
    assert ops["GreaterOrEqual"] == (1 if causal else 0)      # the causal mask, from the symbolic lengths
    layer = imp.compiled.graph.layers["att"]
    want = {"scale": ()} if use_scale else {}
    if score_mode == "concat":
        want["concat_score_weight"] = ()
    assert layer.params == want
    assert list(layer.outputs) == ["output", "scores"]


def test_attention_with_key_unmasked_and_mask_goes_on(tmp_path):
    """key ≠ value (the value's dim differs); no masks; then the query's mask reaches an LSTM."""
    q, v, _, _ = _inputs(4, 5, masked=False)
    k = keras.Input((None, 4), name="k")
    y = L.Attention(score_mode="dot")([q, v, k])
    m = keras.Model([q, v, k], y)
    feeds = {"q": floats(3, 4, 4), "v": floats(3, 6, 5, seed=2), "k": floats(3, 6, 4, seed=3)}
    _, ops = keras_parity(m, tmp_path, feeds)
    assert ops["Where"] == 0 and ops["Softmax"] == 1

    q, v, mq, mv = _inputs(4, 4)
    h = L.Attention()([mq, mv])
    y = L.LSTM(3, name="lstm")(h)
    imp, ops = keras_parity(keras.Model([q, v], y), tmp_path, _feeds(6, 5))
    lstm = imp.compiled.graph.layers["lstm"]
    assert lstm.mask_in is not None and lstm.mask_in.layer == imp.compiled.graph.layers[lstm.inputs[0].layer].inputs[0].layer      # the query's mask
    assert ops["LSTM"] == 1


@pytest.mark.parametrize("use_scale", [True, False])
@pytest.mark.parametrize("causal", [False, True])
def test_additive_attention(tmp_path, use_scale, causal):
    q, v, mq, mv = _inputs(4, 4)
    k = keras.Input((None, 4), name="k")
    y, s = L.AdditiveAttention(use_scale=use_scale, name="add_att")([mq, mv, L.Dense(4)(k)], use_causal_mask=causal,
                                                    return_attention_scores=True)
    m = keras.Model([q, v, k], [y, s])
    feeds = _feeds(5, 6)
    feeds["k"] = floats(5, 6, 4, seed=9)
    imp, ops = keras_parity(m, tmp_path, feeds)
    assert ops["Tanh"] == 1 and ops["Softmax"] == 1
    assert ops["ReduceSum"] == (0 if use_scale else 1)        # with a scale: MatMul by the [dim] vector
    assert imp.compiled.graph.layers["add_att"].params == ({"scale": (4,)} if use_scale else {})


# -- MultiHeadAttention -------------------------------------------------------------------------

@pytest.mark.parametrize("opts,call", [
    ({"num_heads": 2, "key_dim": 3}, {}),
    ({"num_heads": 3, "key_dim": 2, "value_dim": 5, "use_bias": False}, {"use_causal_mask": True}),
    ({"num_heads": 2, "key_dim": 4, "output_shape": 7}, {"return_attention_scores": True}),
    ({"num_heads": 2, "key_dim": 3, "output_shape": (2, 3)}, {"use_causal_mask": True,
                                                              "return_attention_scores": True}),
])
def test_mha_self_attention(tmp_path, opts, call):
    x = keras.Input((None, 6), name="x")
    h = L.Masking()(x)
    out = L.MultiHeadAttention(**opts, name="mha")(h, h, **call)
    m = keras.Model(x, list(out) if isinstance(out, tuple) else out)
    feeds = [{"x": masked_floats(5, 6, 6)}, {"x": masked_floats(5, 3, 6, seed=4)}]
    imp, ops = keras_parity(m, tmp_path, *feeds)
    layer = imp.compiled.graph.layers["mha"]
    h_, kd = opts["num_heads"], opts["key_dim"]
    vd = opts.get("value_dim", kd)
    assert layer.params["query/kernel"] == (6, h_, kd) and layer.params["value/kernel"] == (6, h_, vd)
    out_shape = opts.get("output_shape", 6)
    out_shape = (out_shape,) if isinstance(out_shape, int) else tuple(out_shape)
    assert layer.params["attention_output/kernel"] == (h_, vd, *out_shape)
    assert ("query/bias" in layer.params) == opts.get("use_bias", True)
    assert ops["Softmax"] == 1 and ops["MatMul"] == 6
    # the masks: query AND value (AND causal); a second Where only with the scores (Keras's
    # Softmax-layer path zeros the masked probabilities)
    assert ops["Where"] == (2 if call.get("return_attention_scores") else 1)
    assert ops["And"] == (2 if call.get("use_causal_mask") else 1)


def test_mha_cross_attention_with_key_and_attention_mask(tmp_path):
    q, v, mq, mv = _inputs(4, 6)
    k = keras.Input((None, 5), name="k")
    am = keras.Input((None, None), name="am")          # float 0/1: Keras casts it to bool
    o, s = L.MultiHeadAttention(2, 3, value_dim=4)(mq, mv, key=L.Masking()(k), attention_mask=am,
                                                   return_attention_scores=True, use_causal_mask=True)
    m = keras.Model([q, v, k, am], [o, s])
    rng = np.random.default_rng(3)
    feeds = []
    for tq, tv in ((4, 6), (6, 3)):
        f = _feeds(tq, tv, 4, 6)
        f["k"] = masked_floats(5, tv, 5, seed=11)
        f["am"] = (rng.random((5, tq, tv)) > 0.3).astype(np.float32)
        feeds.append(f)
    imp, ops = keras_parity(m, tmp_path, *feeds)
    spec = imp.spec_text
    assert "attention_mask: true" in spec and re.search(r"input: \[masking\w*, masking\w*, masking\w*, am\]", spec), spec
    assert ops["And"] == 4 and ops["Equal"] == 4     # 3 Masking layers, the attention mask


def test_mha_with_a_bool_attention_mask_input(tmp_path):
    q = keras.Input((None, 4), name="q")
    v = keras.Input((None, 6), name="v")
    am = keras.Input((None, None), dtype="bool", name="am")
    m = keras.Model([q, v, am], L.MultiHeadAttention(2, 3)(q, v, attention_mask=am))
    rng = np.random.default_rng(5)
    feeds = [{"q": floats(5, tq, 4, seed=1), "v": floats(5, tv, 6, seed=2), "am": rng.random((5, tq, tv)) > 0.3}
             for tq, tv in ((4, 6), (3, 5))]
    imp, ops = keras_parity(m, tmp_path, *feeds)
    assert imp.compiled.graph.inputs["am"].dtype == "bool"
    assert ops["Equal"] == 0 and ops["Where"] >= 1      # the bool mask is used as it is


def test_mha_over_bigru_with_embedding_mask(tmp_path):
    tok = keras.Input((None,), dtype="int32", name="tok")
    e = L.Embedding(20, 5, mask_zero=True)(tok)
    h = L.Bidirectional(L.GRU(4, return_sequences=True))(e)
    a = L.MultiHeadAttention(2, 4)(h, h)
    y = L.Dense(3)(L.GlobalAveragePooling1D(name="gap")(a))
    ids = np.random.default_rng(0).integers(1, 20, size=(4, 7)).astype(np.int32)
    ids[1, 5:] = 0
    ids[2, :3] = 0
    ids[3, 2] = 0
    imp, ops = keras_parity(keras.Model(tok, y), tmp_path, {"tok": ids})
    assert imp.compiled.graph.layers["gap"].mask_in is not None


# -- the spec: refusals, located ----------------------------------------------------------------

BASE = """rnnc: 1
inputs: {q: {shape: [batch, tq, 4]}, v: {shape: [batch, tv, 6]}, m2: {shape: [tq, tv]}, a3: {shape: [batch, 3, 4]},
         b5: {shape: [batch, 5, 6]}, r1: {shape: [batch]}}
layers:
"""


@pytest.mark.parametrize("layer,message", [
    ("{type: Attention, name: a, input: [q, v]}", "the dot product of query and key needs the same feature size"),
    ("{type: AdditiveAttention, name: a, input: [q, v]}", "adding query and key needs the same feature size"),
    ("{type: Attention, name: a, input: [q]}", "a Attention layer takes 2 to 3 input"),
    ("{type: Attention, name: a, input: [q, m2]}", "its value \\(m2\\) is"),
    ("{type: MultiHeadAttention, name: a, input: [q, v], num_heads: 2, key_dim: 2, attention_axes: [2]}",
     "attention_axes=\\[2\\] is not supported"),
    ("{type: MultiHeadAttention, name: a, input: [q, v], num_heads: 2}", "key_dim"),
    ("{type: MultiHeadAttention, name: a, input: [q, b5, a3], num_heads: 2, key_dim: 2}",
     "the value .* and the key .* must have the same time dim"),
    ("{type: MultiHeadAttention, name: a, input: [a3, b5, b5], num_heads: 1, key_dim: 2, attention_mask: true}",
     "the attention mask \\(b5\\) \\(batch, 5, 6\\) does not fit"),
    ("{type: MultiHeadAttention, name: a, input: [q, v, r1], num_heads: 1, key_dim: 2, attention_mask: true}",
     "the attention mask \\(r1\\) is \\(batch\\): expected"),
    ("{type: MultiHeadAttention, name: a, input: [q, m2], num_heads: 1, key_dim: 2, attention_mask: true}",
     "takes \\[query, value, attention_mask\\]"),
])
def test_bad_specs_are_located(layer, message):
    text = BASE + f"  - {layer}\n"
    with pytest.raises(SpecError) as e:
        build_graph(load_spec_text(text, "s.yaml"))
    shown = str(e.value)
    assert re.search(message, shown), shown
    assert "s.yaml:5: layers[0]" in shown


def test_spec_scores_port_and_ok_axes():
    text = BASE + ("  - {type: MultiHeadAttention, name: a, input: [q, v, m2], num_heads: 2, key_dim: 3, "
                   "attention_axes: -2, attention_mask: true, return_attention_scores: true}\n"
                   "outputs: [a, a.scores]\n")
    g = build_graph(load_spec_text(text))
    assert [(o.ref.layer, o.ref.port) for o in g.outputs] == [("a", "output"), ("a", "scores")]
    assert g.layers["a"].outputs["scores"].dims == ("batch", 2, "tq", "tv")
    with pytest.raises(SpecError, match="a.scores"):
        build_graph(load_spec_text(BASE + "  - {type: Attention, name: a, input: [q, q]}\noutputs: [a.scores]\n"))


def test_keras_mask_argument_is_refused(tmp_path):
    q, v = keras.Input((None, 4), name="q"), keras.Input((None, 4), name="v")
    mq, mv = keras.Input((None,), dtype="bool", name="mq"), keras.Input((None,), dtype="bool", name="mv")
    y = L.Attention()([q, v], mask=[mq, mv])
    keras.Model([q, v, mq, mv], y).save(tmp_path / "m.keras")
    with pytest.raises(ImportProblem, match="called with mask="):
        import_keras(tmp_path / "m.keras")


# -- the example specs: rnnc summary against Keras's parameter counts ---------------------------

def _luong_keras():
    src, tgt = keras.Input((None,), dtype="int32", name="source"), keras.Input((None,), dtype="int32", name="target")
    enc = L.Embedding(1000, 64, mask_zero=True, name="enc_embedding")(src)
    enc_seq, h, c = L.LSTM(128, return_sequences=True, return_state=True, name="encoder")(enc)
    dec = L.Embedding(1200, 64, mask_zero=True, name="dec_embedding")(tgt)
    dec_seq = L.LSTM(128, return_sequences=True, name="decoder")(dec, initial_state=[h, c])
    ctx = L.Attention(name="attention")([dec_seq, enc_seq])
    cat = L.Concatenate(name="concat")([dec_seq, ctx])
    y = L.Dense(1200, activation="softmax", name="probs")(L.Dense(128, activation="tanh", name="attn_out")(cat))
    return keras.Model([src, tgt], y)


def _bigru_mha_keras():
    tok = keras.Input((None,), dtype="int32", name="tokens")
    e = L.Embedding(5000, 64, mask_zero=True, name="embedding")(tok)
    h = L.Bidirectional(L.GRU(64, return_sequences=True), name="encoder")(e)
    a = L.MultiHeadAttention(4, 32, name="self_attention")(h, h)
    p = L.GlobalAveragePooling1D(name="pool")(a)
    return keras.Model(tok, L.Dense(5, activation="softmax", name="classes")(p))


@pytest.mark.parametrize("spec,model", [("luong_seq2seq.yaml", _luong_keras), ("bigru_mha.yaml", _bigru_mha_keras)])
def test_spec_summary_matches_keras(spec, model):
    from rnnc.ir.printer import summary

    m = model()
    g = build_graph(load_spec(ROOT / "specs" / spec))
    for layer in m.layers:
        if layer.count_params() or layer.name in g.layers:
            assert g.layers[layer.name].param_count() == layer.count_params(), layer.name
    text = summary(g)
    assert f"Total params: {m.count_params():,}" in text, text
    assert f"{m.get_layer(g.layers[list(g.layers)[-1]].name).count_params():,}" in text


@pytest.mark.parametrize("spec,total,row", [("luong_seq2seq.yaml", "526,128", "attention (Attention)"),
                                            ("bigru_mha.yaml", "436,613", "self_attention (MultiHeadAttention)")])
def test_cli_summary_of_the_specs(spec, total, row):
    r = subprocess.run([sys.executable, "-m", "rnnc", "summary", str(ROOT / "specs" / spec)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert f"Total params: {total}" in r.stdout and row in r.stdout
