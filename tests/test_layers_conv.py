"""Convolution and pooling layers (channels_last) against Keras 3, the Transpose peephole, and
the two specs built on them (specs/crnn_ocr.yaml, specs/pooled_bigru_classifier.yaml)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from keras_parity import MASK, floats, keras, keras_out, keras_parity, masked_floats
from onnx import helper

import rnnc
from helpers import op_counts, run_onnx_reference, run_ort
from rnnc.emit.peephole import cancel_transposes
from rnnc.errors import SpecError
from rnnc.importers import ImportProblem, import_keras
from rnnc.ir import build_graph
from rnnc.ir.printer import summary
from rnnc.reference import run_reference
from rnnc.spec import load_spec, load_spec_text

L = keras.layers
pytestmark = [pytest.mark.keras, pytest.mark.torch]
SPECS = Path(__file__).resolve().parents[1] / "specs"


def _t(n: int, steps: int = 9, ch: int = 4) -> np.ndarray:
    return floats(n, steps, ch, seed=steps)


# -- convolutions ---------------------------------------------------------------------

@pytest.mark.parametrize("opts", [
    {}, {"padding": "same"}, {"padding": "causal"}, {"strides": 2}, {"strides": 3, "padding": "same"},
    {"dilation_rate": 2, "padding": "same"}, {"dilation_rate": 3, "padding": "causal"}, {"dilation_rate": 2},
    {"groups": 2, "padding": "same"}, {"use_bias": False, "activation": "relu"}, {"activation": "softmax"},
    {"kernel_size": 1}, {"strides": 2, "padding": "causal", "activation": "tanh"},
])
def test_conv1d(tmp_path, opts):
    """Over a symbolic time length (two lengths fed): same/causal strides 1 keep it."""
    opts = {"kernel_size": 3, **opts}
    x = keras.Input((None, 4), name="x")
    m = keras.Model(x, L.Conv1D(6, **opts)(x))
    imp, ops = keras_parity(m, tmp_path, {"x": _t(2, 9)}, {"x": _t(3, 12)})
    assert ops["Conv"] == 1 and ops["Transpose"] == 2
    assert ops["Relu"] == (opts.get("activation") == "relu") and ops["Softmax"] == (opts.get("activation") == "softmax")
    assert ops["Pad"] == 0                                           # padding is the Conv's own
    steps = imp.compiled.graph.layers[m.layers[1].name].outputs["output"].dims[1]
    time = imp.compiled.graph.inputs["x"].dims[1]
    keeps = opts.get("padding") in ("same", "causal") and opts.get("strides", 1) == 1
    assert isinstance(time, str) and isinstance(steps, str) and (steps == time) == keeps


@pytest.mark.parametrize("opts", [
    {}, {"padding": "same"}, {"strides": (2, 1)}, {"strides": 2, "padding": "same"}, {"dilation_rate": (2, 1)},
    {"dilation_rate": 2, "padding": "same"}, {"groups": 3, "filters": 6}, {"kernel_size": (3, 2), "use_bias": False},
    {"activation": "relu", "padding": "same", "kernel_size": 4},
])
def test_conv2d(tmp_path, opts):
    opts = {"filters": 5, "kernel_size": 3, **opts}
    x = keras.Input((7, 6, 3), name="x")
    m = keras.Model(x, L.Conv2D(**opts)(x))
    _, ops = keras_parity(m, tmp_path, {"x": floats(2, 7, 6, 3)})
    assert ops["Conv"] == 1 and ops["Transpose"] == 2


def test_conv2d_symbolic_sizes(tmp_path):
    x = keras.Input((None, None, 2), name="x")
    m = keras.Model(x, L.Conv2D(4, 3, strides=2, padding="same", activation="relu")(L.Conv2D(3, 2)(x)))
    _, ops = keras_parity(m, tmp_path, {"x": floats(2, 8, 7, 2)}, {"x": floats(1, 5, 9, 2)})
    assert ops["Conv"] == 2 and ops["Transpose"] == 2               # one layout change at each edge


@pytest.mark.parametrize("opts", [
    {}, {"depth_multiplier": 2}, {"padding": "same", "depth_multiplier": 3}, {"strides": 2},
    {"dilation_rate": 2, "padding": "same"}, {"use_bias": False, "activation": "relu"},
])
def test_separable_conv1d(tmp_path, opts):
    x = keras.Input((None, 4), name="x")
    m = keras.Model(x, L.SeparableConv1D(5, 3, **opts)(x))
    _, ops = keras_parity(m, tmp_path, {"x": _t(2, 9)}, {"x": _t(1, 11)})
    assert ops["Conv"] == 2 and ops["Transpose"] == 2               # depthwise, then pointwise


@pytest.mark.parametrize("opts", [
    {}, {"depth_multiplier": 3}, {"padding": "same", "depth_multiplier": 2}, {"strides": 2, "padding": "same"},
    {"dilation_rate": 2}, {"use_bias": False, "activation": "elu"},
])
def test_depthwise_conv1d(tmp_path, opts):
    x = keras.Input((None, 4), name="x")
    m = keras.Model(x, L.DepthwiseConv1D(3, **opts)(x))
    _, ops = keras_parity(m, tmp_path, {"x": _t(2, 9)}, {"x": _t(1, 10)})
    assert ops["Conv"] == 1 and ops["Transpose"] == 2


# -- pooling ------------------------------------------------------------------------

def _pads_even(n: int, k: int, s: int) -> bool:
    out = -(-n // s)
    return max((out - 1) * s + k - n, 0) % 2 == 0


@pytest.mark.parametrize("kind", ["MaxPooling1D", "AveragePooling1D"])
@pytest.mark.parametrize("opts", [{"pool_size": 2}, {"pool_size": 3}, {"pool_size": 3, "strides": 1},
                                  {"pool_size": 2, "padding": "same"}, {"pool_size": 3, "strides": 1, "padding": "same"},
                                  {"pool_size": 3, "strides": 2, "padding": "same"}])
def test_pooling1d(tmp_path, kind, opts):
    """Lengths 9 and 11; average pooling with `same` padding divides by the cells inside the
    input (Keras's torch backend agrees where the padding is even: the odd case is below)."""
    x = keras.Input((None, 4), name="x")
    m = keras.Model(x, getattr(L, kind)(**opts)(L.Dense(4)(x)))
    k, s = opts["pool_size"], opts.get("strides", opts["pool_size"])
    feeds = [{"x": _t(2, n)} for n in (9, 11)
             if kind.startswith("Max") or opts.get("padding") != "same" or _pads_even(n, k, s)]
    if feeds:
        _, ops = keras_parity(m, tmp_path, *feeds)
        assert ops["MaxPool" if kind.startswith("Max") else "AveragePool"] == 1 and ops["Transpose"] == 2


@pytest.mark.parametrize("kind", ["MaxPooling2D", "AveragePooling2D"])
@pytest.mark.parametrize("opts", [{"pool_size": 2}, {"pool_size": (3, 2)}, {"pool_size": 3, "strides": (1, 2)},
                                  {"pool_size": 3, "strides": 1, "padding": "same"}, {"pool_size": 2, "padding": "same"}])
def test_pooling2d(tmp_path, kind, opts):
    x = keras.Input((8, 6, 3), name="x")
    m = keras.Model(x, getattr(L, kind)(**opts)(x))
    _, ops = keras_parity(m, tmp_path, {"x": floats(2, 8, 6, 3)})
    assert ops["MaxPool" if kind.startswith("Max") else "AveragePool"] == 1 and ops["Transpose"] == 2


def test_max_pooling_defaults_to_2_and_average_needs_a_size():
    g = build_graph(load_spec_text("rnnc: 1\ninputs: {x: {shape: [batch, 8, 3]}}\nlayers:\n  - {type: MaxPooling1D}\n"))
    assert g.layers["max_pooling1d"].outputs["output"].dims == ("batch", 4, 3)
    with pytest.raises(SpecError, match="pool_size"):
        build_graph(load_spec_text("rnnc: 1\ninputs: {x: {shape: [batch, 8, 3]}}\nlayers:\n  - {type: AveragePooling1D}\n"))


@pytest.mark.parametrize("rank,n,k,s", [(1, 6, 3, 2), (1, 5, 4, 1), (2, 5, 2, 2), (2, 6, 3, 2)])
def test_average_pooling_odd_same_padding_excludes_the_padding(tmp_path, rank, n, k, s):
    """Keras's rule (TensorFlow, JAX; keras-team/keras#23233 for torch): the mean over the
    window's cells inside the input. Keras 3.15's torch backend pads an odd `same` padding by
    replicating the edge and counts those cells; the expectation here is computed by Keras
    itself from valid pooling of the zero-padded input and of ones (sum / count), and the
    installed Keras's own output differs at most in the windows that touch the padding."""
    shape = (n,) * rank + (3,)
    x = keras.Input(shape, name="x")
    pool = getattr(L, f"AveragePooling{rank}D")(k, strides=s, padding="same")
    m = keras.Model(x, pool(x))
    m.save(tmp_path / "m.keras")
    c = import_keras(tmp_path / "m.keras").compiled
    feed = floats(2, *shape)
    out = -(-n // s)
    total = max((out - 1) * s + k - n, 0)
    assert total % 2 == 1
    pad = [(0, 0)] + [(total // 2, total - total // 2)] * rank + [(0, 0)]
    valid = getattr(L, f"AveragePooling{rank}D")(k, strides=s, padding="valid")
    sums = keras.ops.convert_to_numpy(valid(np.pad(feed, pad)))
    counts = keras.ops.convert_to_numpy(valid(np.pad(np.ones_like(feed), pad)))
    want = sums / counts
    for got in (run_ort(c.model, {"x": feed}), run_onnx_reference(c.model, {"x": feed}),
                run_reference(c.graph, c.weights, {"x": feed})):
        assert np.max(np.abs(next(iter(got.values())) - want)) <= 1e-5
    inner = keras_out(m, {"x": feed})[0]
    ok = np.isclose(inner, want, atol=1e-5)
    left = total // 2
    touches = [i for i in range(out) if i * s - left < 0 or i * s - left + k > n]   # windows over padding
    edge = np.zeros(ok.shape, bool)
    for ax in range(1, rank + 1):
        idx = [slice(None)] * ok.ndim
        idx[ax] = touches
        edge[tuple(idx)] = True
    assert ok[~edge].all() and edge.any() and not edge.all()


# -- global pooling and masks -----------------------------------------------------------

@pytest.mark.parametrize("kind", ["GlobalAveragePooling1D", "GlobalMaxPooling1D"])
@pytest.mark.parametrize("keepdims", [False, True])
def test_global_pooling1d(tmp_path, kind, keepdims):
    x = keras.Input((None, 4), name="x")
    m = keras.Model(x, L.Dense(3)(getattr(L, kind)(keepdims=keepdims)(x)))
    _, ops = keras_parity(m, tmp_path, {"x": _t(2, 7)}, {"x": _t(3, 4)})
    assert ops["ReduceMean" if "Average" in kind else "ReduceMax"] == 1 and ops["Transpose"] == 0


@pytest.mark.parametrize("kind", ["GlobalAveragePooling2D", "GlobalMaxPooling2D"])
@pytest.mark.parametrize("keepdims", [False, True])
def test_global_pooling2d_after_a_conv(tmp_path, kind, keepdims):
    x = keras.Input((None, None, 2), name="x")
    m = keras.Model(x, getattr(L, kind)(keepdims=keepdims)(L.Conv2D(3, 2, activation="relu")(x)))
    _, ops = keras_parity(m, tmp_path, {"x": floats(2, 5, 6, 2)})
    assert ops["ReduceMean" if "Average" in kind else "ReduceMax"] == 1 and ops["Transpose"] == 2


@pytest.mark.parametrize("keepdims", [False, True])
def test_global_average_pooling1d_is_a_masked_mean(tmp_path, keepdims):
    """Keras 3 consumes the mask: sum over the unmasked steps / their count (rows: full, right-
    and left-padded, holes); the mask does not go on."""
    x = keras.Input((None, 3), name="x")
    y = L.Dense(2)(L.GlobalAveragePooling1D(keepdims=keepdims, name="gap")(L.Masking()(x)))
    imp, ops = keras_parity(keras.Model(x, y), tmp_path, {"x": masked_floats(4, 6, 3)})
    assert ops["ReduceSum"] == 2 and ops["Where"] == 1 and ops["ReduceMean"] == 0
    gap = imp.compiled.graph.layers["gap"]
    assert gap.mask_in is not None and gap.mask_out is None


def test_global_average_pooling1d_all_masked_row_is_nan_as_in_keras(tmp_path):
    x = keras.Input((None, 3), name="x")
    m = keras.Model(x, L.GlobalAveragePooling1D()(L.Masking()(x)))
    m.save(tmp_path / "m.keras")
    c = import_keras(tmp_path / "m.keras").compiled
    feed = masked_floats(5, 6, 3)
    assert not MASK[4].any()
    want = keras_out(m, {"x": feed})[0]
    assert np.isnan(want[4]).all() and not np.isnan(want[:4]).any()
    for got in (run_ort(c.model, {"x": feed}), run_onnx_reference(c.model, {"x": feed}),
                run_reference(c.graph, c.weights, {"x": feed})):
        g = next(iter(got.values()))
        assert np.isnan(g[4]).all() and np.max(np.abs(g[:4] - want[:4])) <= 1e-5


@pytest.mark.parametrize("layer", [lambda: L.Conv1D(4, 2, padding="causal"), lambda: L.MaxPooling1D(2),
                                   lambda: L.GlobalMaxPooling1D(), lambda: L.DepthwiseConv1D(2, padding="same")])
def test_masks_are_dropped_like_keras(tmp_path, layer):
    """Keras 3's convolutions, pooling and GlobalMaxPooling1D do not support masking: the mask
    is dropped (noted), and the layer after them sees none."""
    x = keras.Input((None, 3), name="x")
    h = layer()(L.Masking()(x))
    y = L.LSTM(4)(h) if len(h.shape) == 3 else L.Dense(2)(h)
    imp, ops = keras_parity(keras.Model(x, y), tmp_path, {"x": masked_floats(4, 6, 3)})
    assert ops["If"] == 0                              # no mask reached the LSTM
    notes = [n for lay in imp.compiled.graph.layers.values() for n in lay.notes]
    assert any("incoming mask dropped" in n for n in notes), notes


# -- layout: one Transpose at each edge of a run --------------------------------------------

def _crnn_like(x):
    h = L.Conv2D(4, 3, padding="same", activation="relu")(x)
    h = L.MaxPooling2D(2)(h)
    h = L.Conv2D(6, 3, padding="same", activation="relu")(h)
    return L.MaxPooling2D(2)(h)


def test_a_run_of_conv_and_pool_layers_changes_layout_once_at_each_edge(tmp_path):
    x = keras.Input((8, 12, 1), name="x")
    m = keras.Model(x, _crnn_like(x))
    imp, ops = keras_parity(m, tmp_path, {"x": floats(2, 8, 12, 1)})
    assert ops["Conv"] == 2 and ops["MaxPool"] == 2 and ops["Transpose"] == 2
    t = [n for n in imp.compiled.model.graph.node if n.op_type == "Transpose"]
    assert [list(n.attribute[0].ints) for n in t] == [[0, 3, 1, 2], [0, 2, 3, 1]]
    meta = {lay["name"]: lay["nodes"] for lay in json.loads(
        {p.key: p.value for p in imp.compiled.model.metadata_props}["rnnc.model"])["layers"]}
    assert sum(v.count("Transpose") for v in meta.values()) == 2     # the metadata agrees


def test_a_conv_output_read_twice_keeps_its_transpose(tmp_path):
    """conv -> (pool, dense): the pool's input Transpose goes, the conv's output Transpose stays
    (the Dense reads it)."""
    x = keras.Input((None, 3), name="x")
    h = L.Conv1D(4, 3, padding="same")(x)
    y = L.Concatenate()([L.MaxPooling1D(1)(h), L.Dense(4)(h)])
    _, ops = keras_parity(keras.Model(x, y), tmp_path, {"x": _t(2, 6, 3)})
    assert ops["Transpose"] == 3                        # conv in, conv out (for the Dense), pool out


def test_softmax_conv_activation_sits_after_the_layout_change(tmp_path):
    x = keras.Input((None, 3), name="x")
    m = keras.Model(x, L.MaxPooling1D(2)(L.Conv1D(4, 3, activation="softmax")(x)))
    _, ops = keras_parity(m, tmp_path, {"x": _t(2, 8, 3)})
    assert ops["Transpose"] == 4 and ops["Softmax"] == 1


# -- the peephole on its own ----------------------------------------------------------------

def _T(x: str, y: str, perm: list[int]) -> onnx.NodeProto:
    return helper.make_node("Transpose", [x], [y], perm=perm, name=f"l/{y}")


def _relu(x: str, y: str) -> onnx.NodeProto:
    return helper.make_node("Relu", [x], [y], name=f"l/{y}")


def test_peephole_removes_a_cancelling_pair_and_rewires():
    nodes = [_relu("x", "a"), _T("a", "b", [0, 2, 3, 1]), _T("b", "c", [0, 3, 1, 2]), _relu("c", "d")]
    kept, renames, gone = cancel_transposes(nodes)
    assert [n.op_type for n in kept] == ["Relu", "Relu"] and kept[1].input[0] == "a"
    assert renames == {"c": "a"} and len(gone) == 2


def test_peephole_never_removes_a_transpose_whose_output_is_read_elsewhere():
    nodes = [_relu("x", "a"), _T("a", "b", [0, 2, 1]), _T("b", "c", [0, 2, 1]), _relu("c", "d"), _relu("b", "e")]
    kept, _, gone = cancel_transposes(nodes)
    assert [n.output[0] for n in kept] == ["a", "b", "d", "e"]        # b (read by e) stays; c goes
    assert kept[2].input[0] == "a" and kept[3].input[0] == "b" and [n.output[0] for n in gone] == ["c"]
    # a model output, or a read inside a subgraph, keeps it too
    kept, _, _ = cancel_transposes([_T("x", "b", [1, 0]), _T("b", "c", [1, 0]), _relu("c", "d")], keep={"b"})
    assert [n.output[0] for n in kept] == ["b", "d"]
    body = helper.make_graph([_relu("b", "inner")], "body", [], [helper.make_tensor_value_info("inner", 1, None)])
    ifnode = helper.make_node("If", ["cond"], ["o"], then_branch=body, else_branch=body)
    kept, _, _ = cancel_transposes([_T("x", "b", [1, 0]), _T("b", "c", [1, 0]), _relu("c", "d"), ifnode])
    assert [n.output[0] for n in kept] == ["b", "d", "o"]


def test_peephole_leaves_pairs_that_do_not_cancel_and_renames_inside_subgraphs():
    nodes = [_T("x", "b", [0, 2, 3, 1]), _T("b", "c", [0, 2, 3, 1]), _relu("c", "d")]
    kept = cancel_transposes(nodes)[0]                               # p then p: not the identity,
    assert len(kept) == 2 and list(kept[0].attribute[0].ints) == [0, 3, 1, 2]   # but one Transpose
    body = helper.make_graph([_relu("c", "inner")], "body", [], [helper.make_tensor_value_info("inner", 1, None)])
    loop = helper.make_node("If", ["cond"], ["o"], then_branch=body, else_branch=body)
    kept, _, _ = cancel_transposes([_T("x", "b", [1, 0]), _T("b", "c", [1, 0]), loop])
    assert [n.op_type for n in kept] == ["If"] and kept[0].attribute[0].g.node[0].input[0] == "x"
    chain = [_T("x", "a", [1, 0]), _T("a", "b", [1, 0]), _T("b", "c", [1, 0]), _T("c", "d", [1, 0]), _relu("d", "e")]
    kept, _, _ = cancel_transposes(chain)
    assert [n.op_type for n in kept] == ["Relu"] and kept[0].input[0] == "x"


# -- errors -------------------------------------------------------------------------------

def _errors(layer: str, shape: str = "[batch, time, 4]") -> str:
    with pytest.raises(SpecError) as e:
        build_graph(load_spec_text(f"rnnc: 1\ninputs: {{x: {{shape: {shape}}}}}\nlayers:\n  - {layer}\n", "m.yaml"))
    return "\n".join(str(p) for p in e.value.problems)


@pytest.mark.parametrize("layer,shape,needles", [
    ("{type: Conv1D, filters: 6, kernel_size: 3, groups: 3}", "[batch, time, 4]", ["groups", "4 channels", "groups=3"]),
    ("{type: Conv1D, filters: 5, kernel_size: 3, groups: 2}", "[batch, time, 4]", ["filters=5", "groups=2"]),
    ("{type: Conv1D, filters: 5, kernel_size: 4}", "[batch, 3, 4]", ["at least 4 steps", "got 3"]),
    ("{type: Conv1D, filters: 5, kernel_size: 2, strides: 2, dilation_rate: 2}", "[batch, time, 4]",
     ["dilation_rate", "strides > 1"]),
    ("{type: Conv2D, filters: 5, kernel_size: 2, padding: causal}", "[batch, 5, 5, 4]", ["padding", "valid, same"]),
    ("{type: Conv1D, filters: 5, kernel_size: [2, 2]}", "[batch, time, 4]", ["kernel_size", "list of 1 integers"]),
    ("{type: Conv1D, filters: 5, kernel_size: 2}", "[batch, time, features]", ["fixed channel count"]),
    ("{type: Conv2D, filters: 5, kernel_size: 2}", "[batch, time, 4]", ["rank 4"]),
    ("{type: Conv1D, filters: 5, kernel_size: 2, data_format: channels_first}", "[batch, time, 4]",
     ["data_format", "channels_last"]),
    ("{type: MaxPooling2D, pool_size: [3, 3]}", "[batch, 2, 5, 4]", ["at least 3 rows"]),
    ("{type: SeparableConv1D, filters: 2, kernel_size: 2, padding: causal}", "[batch, time, 4]", ["valid, same"]),
    ("{type: GlobalAveragePooling2D}", "[batch, time, 4]", ["rank 4"]),
])
def test_spec_errors_are_located(layer, shape, needles):
    err = _errors(layer, shape)
    assert err.startswith("m.yaml:4"), err
    for n in needles:
        assert n in err, err


def test_channels_first_keras_model_is_refused_with_why(tmp_path):
    x = keras.Input((4, 9), name="x")
    m = keras.Model(x, L.Conv1D(3, 2, data_format="channels_first", name="conv")(x))
    m.save(tmp_path / "m.keras")
    with pytest.raises(ImportProblem) as e:
        import_keras(tmp_path / "m.keras")
    text = str(e.value) + "\n".join(str(p) for p in getattr(e.value, "problems", []))
    assert "(conv, Conv1D)" in text and "channels_first" in text and "channels_last" in text


# -- the specs ----------------------------------------------------------------------------

def _summary_counts(graph) -> dict[str, int]:
    return {name: layer.param_count() for name, layer in graph.layers.items()}


def test_crnn_spec_matches_keras_ocr_captcha_model():
    """keras.io's OCR captcha CRNN: parameter counts as Keras counts them, and the compiled
    graph transposes once into and once out of the conv run (and none around the BiLSTMs)."""
    spec = load_spec(SPECS / "crnn_ocr.yaml")
    graph = build_graph(spec)
    x = keras.Input((200, 50, 1), name="image")
    h = L.Conv2D(32, 3, activation="relu", padding="same", name="Conv1")(x)
    h = L.MaxPooling2D(2, name="pool1")(h)
    h = L.Conv2D(64, 3, activation="relu", padding="same", name="Conv2")(h)
    h = L.MaxPooling2D(2, name="pool2")(h)
    h = L.Reshape((50, 12 * 64), name="reshape")(h)
    h = L.Dropout(0.2, name="dropout")(L.Dense(64, activation="relu", name="dense1")(h))
    h = L.Bidirectional(L.LSTM(128, return_sequences=True, dropout=0.25), name="bilstm1")(h)
    h = L.Bidirectional(L.LSTM(64, return_sequences=True, dropout=0.25), name="bilstm2")(h)
    y = L.Dense(21, activation="softmax", name="dense2")(h)
    m = keras.Model(x, y)
    assert _summary_counts(graph) == {lay.name: lay.count_params() for lay in m.layers[1:]}
    text = summary(graph)
    assert f"{m.count_params():,}" in text
    c = rnnc.compile_spec(SPECS / "crnn_ocr.yaml")
    conv_t = [n for n in c.model.graph.node if n.op_type == "Transpose" and n.name.split("/")[0] in
              ("Conv1", "pool1", "Conv2", "pool2")]
    assert len(conv_t) == 2
    assert op_counts(c.model)["Conv"] == 2 and op_counts(c.model)["MaxPool"] == 2


def test_pooled_bigru_spec_matches_keras():
    spec = load_spec(SPECS / "pooled_bigru_classifier.yaml")
    graph = build_graph(spec)
    kinds = [lay.kind for lay in graph.layers.values()]
    tok = keras.Input((None,), dtype="int32", name="tokens")
    h = L.Embedding(2000, 64, mask_zero=True, name="embedding")(tok)
    if "SpatialDropout1D" in kinds:
        h = L.SpatialDropout1D(0.2, name="spatial_dropout1d")(h)
    h = L.Bidirectional(L.GRU(48, return_sequences=True), name="bigru")(h)
    pooled = L.Concatenate(name="concatenate")([L.GlobalAveragePooling1D(name="avg_pool")(h),
                                                L.GlobalMaxPooling1D(name="max_pool")(h)])
    y = L.Dense(5, activation="softmax", name="dense")(pooled)
    m = keras.Model(tok, y)
    assert _summary_counts(graph) == {lay.name: lay.count_params() for lay in m.layers[1:]}
    assert f"{m.count_params():,}" in summary(graph)
    assert graph.layers["avg_pool"].mask_in is not None                # the masked mean
    assert any("incoming mask dropped" in n for n in graph.layers["max_pool"].notes)


def test_pooled_bigru_model_from_keras(tmp_path):
    """The spec's model built in Keras, imported and run: padded token rows (none empty; one
    with a hole, so the batch runs the exact time loop, which onnx.reference runs too)."""
    tok = keras.Input((None,), dtype="int32", name="tokens")
    h = L.Bidirectional(L.GRU(6, return_sequences=True))(L.Embedding(30, 5, mask_zero=True)(tok))
    y = L.Dense(3, activation="softmax")(L.Concatenate()([L.GlobalAveragePooling1D()(h), L.GlobalMaxPooling1D()(h)]))
    tokens = np.random.default_rng(0).integers(1, 30, size=(4, 7)).astype(np.int32)
    tokens[1, 5:] = 0
    tokens[2, 2:] = 0
    tokens[3, 3] = 0
    _, ops = keras_parity(keras.Model(tok, y), tmp_path, {"tokens": tokens})
    assert ops["Where"] >= 1 and ops["ReduceMax"] >= 1
