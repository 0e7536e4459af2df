"""Time and shape layers (TimeDistributed, RepeatVector, Flatten, Reshape, Permute, Cropping1D,
ZeroPadding1D, UpSampling1D) against Keras 3, their masks, their errors, and the keras.io
number-addition seq2seq spec."""
from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from keras_parity import floats, keras, keras_parity, masked_floats

from rnnc.errors import SpecError
from rnnc.ir import build_graph
from rnnc.layers import LAYER_DEFS
from rnnc.spec import load_spec_text
from rnnc.spec import schema as S

L = keras.layers
pytestmark = [pytest.mark.keras, pytest.mark.torch]
SPECS = Path(__file__).resolve().parents[1] / "specs"
DROPPED = "incoming mask dropped: Keras 3's {} does not support masking"


@pytest.fixture(autouse=True)
def _keras_names():
    """Keras numbers default layer names per session: each test starts from `lstm`, `flatten`, ..."""
    keras.utils.clear_session()


def layer_ops(imp, layer: str) -> Counter:
    """The op types of the nodes a layer emitted (named `<layer>/...`, main graph)."""
    return Counter(n.op_type for n in imp.compiled.model.graph.node if n.name.startswith(layer + "/"))


def of_kind(imp, kind: str):
    return next(l for l in imp.compiled.graph.layers.values() if l.kind == kind)


def _model(shape, *layers, name="x"):
    x = keras.Input(shape, name=name)
    h = x
    for layer in layers:
        h = layer(h)
    return keras.Model(x, h)


# -- TimeDistributed ---------------------------------------------------------------------

def test_time_distributed_dense_passes_the_mask_to_the_lstm(tmp_path):
    x = keras.Input((None, 3), name="x")
    h = L.TimeDistributed(L.Dense(4, activation="tanh"))(L.Masking()(x))
    y = L.LSTM(5, return_sequences=True)(h)
    imp, ops = keras_parity(keras.Model(x, y), tmp_path, {"x": masked_floats(5, 6, 3)},
                            {"x": masked_floats(5, 4, 3, seed=2)})
    g = imp.compiled.graph
    td = g.layers["time_distributed"]
    assert td.wrapped is not None and td.wrapped.kind == "Dense" and td.params == {"kernel": (3, 4), "bias": (4,)}
    assert g.layers["lstm"].mask_in is not None              # the mask reached the LSTM through the wrapper
    assert layer_ops(imp, "time_distributed") == Counter({"Reshape": 2, "MatMul": 1, "Add": 1, "Tanh": 1, "Shape": 1,
                                                         "Concat": 1})
    assert ops["LSTM"] == 1
    assert "layer:" in imp.spec_text and "type: Dense" in imp.spec_text


WRAPPED = {
    "dense_softmax": (lambda: L.Dense(6, activation="softmax"), (None, 5), {"MatMul": 1, "Softmax": 1}),
    "dense_no_bias": (lambda: L.Dense(3, use_bias=False), (None, 5), {"MatMul": 1, "Add": 0}),
    "batch_norm": (lambda: L.BatchNormalization(epsilon=0.01), (None, 5), {"Mul": 1, "Add": 1}),
    "batch_norm_no_center": (lambda: L.BatchNormalization(center=False), (None, 5), {"Mul": 1, "Add": 1}),
    "batch_norm_axis1": (lambda: L.BatchNormalization(axis=1), (None, 3, 5), {"Mul": 1, "Add": 1}),
    "activation": (lambda: L.Activation("sigmoid"), (None, 5), {"Sigmoid": 1}),
    "dropout": (lambda: L.Dropout(0.3), (None, 5), {}),
    "relu": (lambda: L.ReLU(max_value=0.5), (None, 5), {"Relu": 1, "Min": 1}),
    "flatten": (lambda: L.Flatten(), (None, 3, 2), {"Flatten": 1}),
    "reshape": (lambda: L.Reshape((2, -1)), (6, 4), {"Reshape": 3}),
    "permute": (lambda: L.Permute((2, 1)), (None, 3, 4), {"Transpose": 1}),
    "repeat_vector": (lambda: L.RepeatVector(3), (None, 5), {"Tile": 1}),
    "conv1d": (lambda: L.Conv1D(4, 2), (None, 6, 3), {"Conv": 1}),
    "conv2d": (lambda: L.Conv2D(2, (2, 2), padding="same"), (None, 4, 4, 3), {"Conv": 1}),
    "max_pooling1d": (lambda: L.MaxPooling1D(2), (None, 6, 3), {"MaxPool": 1}),
}
NEEDS = {"relu": "ReLU", "conv1d": "Conv1D", "conv2d": "Conv2D", "max_pooling1d": "MaxPooling1D"}


@pytest.mark.parametrize("case", list(WRAPPED))
def test_time_distributed_around(tmp_path, case):
    make, shape, want = WRAPPED[case]
    if case in NEEDS and NEEDS[case] not in LAYER_DEFS:
        pytest.fail(f"{NEEDS[case]} is not defined in rnnc/layers/")
    t = 5 if shape[0] is None else shape[0]
    m = _model(shape, L.TimeDistributed(make()))
    imp, ops = keras_parity(m, tmp_path, {"x": floats(3, t, *shape[1:], scale=1.5)})
    td = imp.compiled.graph.layers["time_distributed"]
    assert list(td.params) == list(td.wrapped.params)
    own = layer_ops(imp, "time_distributed")
    assert own["Reshape"] >= 2                              # [B, T, ...] -> [B*T, ...] -> [B, T, ...]
    assert own["Shape"] == (0 if shape[0] else 1)           # a fixed time: the shapes are constants
    for op, n in want.items():
        assert ops[op] == n, (op, ops)


def test_time_distributed_reads_symbolic_step_dims_from_the_tensor(tmp_path):
    # the per-step shape itself symbolic: the reshapes take it from the tensor
    m = _model((None, None, 4), L.TimeDistributed(L.Dense(3)))
    imp, _ = keras_parity(m, tmp_path, {"x": floats(2, 3, 5, 4)}, {"x": floats(1, 2, 1, 4, seed=3)})
    out = imp.compiled.model.graph.output[0].type.tensor_type.shape.dim
    assert [d.dim_value or d.dim_param for d in out][2:] == ["x_dim2", 3]
    assert layer_ops(imp, "time_distributed") == Counter({"Shape": 3, "Concat": 2, "Reshape": 2, "MatMul": 1,
                                                         "Add": 1})


def test_nested_time_distributed(tmp_path):
    m = _model((None, 3, 4), L.TimeDistributed(L.TimeDistributed(L.Dense(2))))
    imp, ops = keras_parity(m, tmp_path, {"x": floats(2, 5, 3, 4)})
    outer = of_kind(imp, "TimeDistributed")
    assert outer.wrapped.kind == "TimeDistributed" and outer.wrapped.wrapped.kind == "Dense"
    assert outer.params == {"kernel": (4, 2), "bias": (2,)}
    assert ops["MatMul"] == 1 and layer_ops(imp, outer.name)["Reshape"] == 4


def test_time_distributed_in_a_masked_model_before_a_bidirectional(tmp_path):
    x = keras.Input((6, 3), name="x")
    h = L.TimeDistributed(L.BatchNormalization())(L.Masking()(x))
    y = L.Bidirectional(L.GRU(4, return_sequences=True))(L.TimeDistributed(L.Dense(5, activation="relu"))(h))
    imp, ops = keras_parity(keras.Model(x, y), tmp_path, {"x": masked_floats(5, 6, 3)})
    assert layer_ops(imp, "time_distributed")["Reshape"] == 2 and layer_ops(imp, "time_distributed_1")["MatMul"] == 1
    assert imp.compiled.graph.layers["bidirectional"].mask_in is not None


# -- RepeatVector and the seq2seq spec ------------------------------------------------------

@pytest.mark.parametrize("n", [1, 4])
def test_repeat_vector(tmp_path, n):
    m = _model((None, 3), L.LSTM(5), L.RepeatVector(n), L.GRU(4, return_sequences=True))
    imp, ops = keras_parity(m, tmp_path, {"x": floats(3, 6, 3)})
    assert layer_ops(imp, "repeat_vector") == Counter({"Unsqueeze": 1, "Tile": 1})
    assert imp.compiled.graph.layers["repeat_vector"].outputs["output"].dims[1:] == (n, 5)


def _keras_seq2seq():
    # keras.io/examples/nlp/addition_rnn: 3-digit numbers, "535+61 " -> "596 "
    chars, maxlen, digits = 12, 7, 3
    return keras.Sequential([
        keras.Input((maxlen, chars), name="question"),
        L.LSTM(128, name="encoder"),
        L.RepeatVector(digits + 1, name="repeat"),
        L.LSTM(128, return_sequences=True, name="decoder"),
        L.TimeDistributed(L.Dense(chars, activation="softmax"), name="answer"),
    ], name="seq2seq_addition")


def test_seq2seq_addition_summary_prints_keras_param_counts():
    model = _keras_seq2seq()
    r = subprocess.run([sys.executable, "-m", "rnnc", "summary", str(SPECS / "seq2seq_addition.yaml")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    for layer in model.layers:
        row = re.search(rf"^{layer.name} \((\w+)\)\s+\(.*?\)\s+([\d,]+)$", r.stdout, re.M)
        assert row, (layer.name, r.stdout)
        assert row.group(1) == type(layer).__name__
        assert int(row.group(2).replace(",", "")) == layer.count_params(), (layer.name, r.stdout)
    assert f"Total params: {model.count_params():,}" in r.stdout
    assert model.count_params() == 205_324


def test_seq2seq_addition_imports_as_the_spec(tmp_path):
    model = _keras_seq2seq()
    x = floats(4, 7, 12)
    imp, ops = keras_parity(model, tmp_path, {"question": x})
    assert ops["LSTM"] == 2 and ops["Tile"] == 1 and ops["Softmax"] == 1
    assert layer_ops(imp, "answer") == Counter({"Reshape": 2, "MatMul": 1, "Add": 1, "Softmax": 1})
    layers = imp.compiled.graph.layers
    assert [l.kind for l in layers.values()] == ["LSTM", "RepeatVector", "LSTM", "TimeDistributed"]
    assert imp.compiled.graph.param_count() == model.count_params()


# -- Flatten, Reshape, Permute -------------------------------------------------------------

@pytest.mark.parametrize("shape,opts,transposes", [
    ((4, 3), {}, 0), ((4, 3), {"data_format": "channels_first"}, 1), ((2, 3, 4), {"data_format": "channels_first"}, 1),
    ((5,), {"data_format": "channels_first"}, 0), ((2, 3, 4), {}, 0)])
def test_flatten(tmp_path, shape, opts, transposes):
    m = _model(shape, L.Flatten(**opts), L.Dense(3))
    imp, ops = keras_parity(m, tmp_path, {"x": floats(3, *shape)})
    assert layer_ops(imp, "flatten") == Counter({"Flatten": 1, **({"Transpose": 1} if transposes else {})})


def test_flatten_of_a_symbolic_time_dim(tmp_path):
    _, ops = keras_parity(_model((None, 3), L.Flatten()), tmp_path, {"x": floats(2, 5, 3)}, {"x": floats(2, 1, 3)})
    assert ops["Flatten"] == 1


@pytest.mark.parametrize("shape,target", [((6, 4), (3, 8)), ((6, 4), (-1, 2)), ((24,), (2, -1, 4)), ((2, 3, 4), (-1,)),
                                          ((None, 4), (-1, 2)), ((None, 6), (2, -1, 3))])
def test_reshape(tmp_path, shape, target):
    m = _model(shape, L.Reshape(target))
    feeds = [{"x": floats(3, *(5 if d is None else d for d in shape))}]
    if None in shape:
        feeds.append({"x": floats(2, 2, *shape[1:], seed=4)})
    imp, _ = keras_parity(m, tmp_path, *feeds)
    assert layer_ops(imp, "reshape") == Counter({"Reshape": 1})


@pytest.mark.parametrize("shape,dims", [((4, 3), (2, 1)), ((4, 3), (1, 2)), ((2, 3, 4), (3, 1, 2)),
                                        ((None, 3), (2, 1))])
def test_permute(tmp_path, shape, dims):
    m = _model(shape, L.Permute(dims))
    t = 5 if shape[0] is None else shape[0]
    imp, _ = keras_parity(m, tmp_path, {"x": floats(3, t, *shape[1:])})
    assert layer_ops(imp, "permute") == Counter({"Transpose": 1})


# -- Cropping1D, ZeroPadding1D, UpSampling1D -------------------------------------------------

@pytest.mark.parametrize("opts", [{}, {"cropping": 2}, {"cropping": (0, 2)}, {"cropping": (2, 0)},
                                  {"cropping": (0, 0)}])
@pytest.mark.parametrize("time", [6, None])
def test_cropping1d(tmp_path, opts, time):
    m = _model((time, 3), L.Cropping1D(**opts), L.Dense(2))
    imp, ops = keras_parity(m, tmp_path, {"x": floats(3, 6, 3)}, *([{"x": floats(2, 9, 3, seed=5)}] if time is None
                                                                    else []))
    assert layer_ops(imp, "cropping1d") == Counter({"Slice": 1})


@pytest.mark.parametrize("opts", [{}, {"padding": 2}, {"padding": (0, 3)}, {"padding": (2, 1)},
                                  {"padding": (1, 2), "data_format": "channels_first"}])
def test_zero_padding1d(tmp_path, opts):
    m = _model((None, 3), L.ZeroPadding1D(**opts), L.LSTM(3))
    imp, _ = keras_parity(m, tmp_path, {"x": floats(3, 5, 3)})
    assert layer_ops(imp, "zero_padding1d") == Counter({"Pad": 1})


@pytest.mark.parametrize("size", [None, 1, 3])
def test_up_sampling1d(tmp_path, size):
    m = _model((None, 3), L.UpSampling1D(**({} if size is None else {"size": size})), L.GRU(3))
    imp, ops = keras_parity(m, tmp_path, {"x": floats(3, 5, 3)}, {"x": floats(2, 1, 3, seed=6)})
    assert layer_ops(imp, "up_sampling1d") == Counter({"Unsqueeze": 1, "Tile": 1, "Reshape": 1})


# -- masks: Keras 3's reshaping layers drop them ---------------------------------------------

DROPPING = {
    "Cropping1D": (lambda: L.Cropping1D((1, 0)), []),
    "ZeroPadding1D": (lambda: L.ZeroPadding1D(1), []),
    "UpSampling1D": (lambda: L.UpSampling1D(2), []),
    "Permute": (lambda: L.Permute((1, 2)), []),
    "Reshape": (lambda: L.Reshape((-1, 3)), []),
    "Flatten": (lambda: L.Flatten(), [lambda: L.Reshape((-1, 3))]),
}


@pytest.mark.parametrize("kind", list(DROPPING))
def test_mask_is_dropped_as_keras_drops_it(tmp_path, kind):
    make, after = DROPPING[kind]
    x = keras.Input((6, 3), name="x")
    h = make()(L.Masking()(x))
    for a in after:
        h = a()(h)
    y = L.LSTM(4)(h)
    with pytest.warns(UserWarning, match="does not support masking"):
        keras.Model(x, y)(masked_floats(5, 6, 3))
    imp, _ = keras_parity(keras.Model(x, y), tmp_path, {"x": masked_floats(5, 6, 3)})
    g = imp.compiled.graph
    layer = next(l for l in g.layers.values() if l.kind == kind)
    assert DROPPED.format(kind) in layer.notes
    assert g.layers["lstm"].mask_in is None                 # the LSTM reads every step, masked rows included


# -- shapes: inferred as Keras infers them, symbolic sizes as expressions ---------------------

@pytest.mark.parametrize("layer,shape,out", [
    ("{type: RepeatVector, n: 3}", "[batch, 5]", ("batch", 3, 5)),
    ("{type: Flatten}", "[batch, 2, 3, 4]", ("batch", 24)),
    ("{type: Flatten}", "[batch]", ("batch", 1)),
    ("{type: Flatten, data_format: channels_first}", "[batch, time, 3]", ("batch", "time*3")),
    ("{type: Reshape, target_shape: [-1, 2]}", "[batch, 6, 4]", ("batch", 12, 2)),
    ("{type: Reshape, target_shape: [-1, 2]}", "[batch, time, 4]", ("batch", "(time*4)/2", 2)),
    ("{type: Reshape, target_shape: [-1]}", "[batch, time, 4]", ("batch", "time*4")),
    ("{type: Reshape, target_shape: [2, 12]}", "[batch, time, 4]", ("batch", 2, 12)),
    ("{type: Permute, dims: [3, 1, 2]}", "[batch, time, 3, 4]", ("batch", 4, "time", 3)),
    ("{type: Cropping1D}", "[batch, 6, 4]", ("batch", 4, 4)),
    ("{type: Cropping1D, cropping: [0, 3]}", "[batch, time, 4]", ("batch", "time-3", 4)),
    ("{type: Cropping1D, cropping: 0}", "[batch, time, 4]", ("batch", "time", 4)),
    ("{type: ZeroPadding1D}", "[batch, time, 4]", ("batch", "time+2", 4)),
    ("{type: ZeroPadding1D, padding: [0, 3], data_format: channels_first}", "[batch, 4, 6]", ("batch", 4, 9)),
    ("{type: UpSampling1D}", "[batch, time, 4]", ("batch", "time*2", 4)),
    ("{type: UpSampling1D, size: 3}", "[batch, 5, 4]", ("batch", 15, 4)),
    ("{type: TimeDistributed, layer: {type: Flatten}}", "[batch, time, 3, 4]", ("batch", "time", 12)),
    ("{type: TimeDistributed, layer: {type: RepeatVector, n: 2}}", "[batch, 7, 4]", ("batch", 7, 2, 4)),
    ("{type: TimeDistributed, layer: {type: Dense, units: 2}}", "[batch, time, s, 4]", ("batch", "time", "s", 2)),
])
def test_output_dims(layer, shape, out):
    text = f"rnnc: 1\ninputs: {{x: {{shape: {shape}}}}}\nlayers:\n  - {layer}\n"
    g = build_graph(load_spec_text(text, "m.yaml"))
    assert next(iter(g.layers.values())).outputs["output"].dims == out


def test_default_names_are_keras_names():
    made = {"TimeDistributed": L.TimeDistributed(L.Dense(1)), "RepeatVector": L.RepeatVector(2),
            "Flatten": L.Flatten(), "Reshape": L.Reshape((1,)), "Permute": L.Permute((1,)),
            "Cropping1D": L.Cropping1D(), "ZeroPadding1D": L.ZeroPadding1D(), "UpSampling1D": L.UpSampling1D()}
    assert {k: S.DEFAULT_NAMES[k] for k in made} == {k: layer.name for k, layer in made.items()}


# -- errors ----------------------------------------------------------------------------------

def _errors(layers: str, shape: str = "[batch, 6, 4]") -> list[str]:
    text = f"rnnc: 1\ninputs: {{x: {{shape: {shape}}}}}\nlayers:\n{layers}"
    with pytest.raises(SpecError) as e:
        build_graph(load_spec_text(text, "m.yaml"))
    return [str(p) for p in e.value.problems]


@pytest.mark.parametrize("layers,shape,expected", [
    ("  - {type: Reshape, target_shape: [5, 5]}\n", "[batch, 6, 4]",
     "m.yaml:4: layers[0].target_shape: cannot reshape (batch, 6, 4) (24 values per example) to [5, 5] (25 values)"),
    ("  - {type: Reshape, target_shape: [-1, 5]}\n", "[batch, 6, 4]",
     "to [-1, 5] (a multiple of 5 values)"),
    ("  - {type: Reshape, target_shape: [-1, -1]}\n", "[batch, 6, 4]",
     "layers[0].target_shape: expected positive sizes with at most one -1 (the size inferred), got [-1, -1]"),
    ("  - {type: Reshape, target_shape: [0, 24]}\n", "[batch, 6, 4]", "expected positive sizes"),
    ("  - {type: Reshape, target_shape: [-2]}\n", "[batch, 6, 4]",
     "layers[0].target_shape: expected an integer >= -1 or a list of such integers, got a list"),
    ("  - {type: Permute, dims: [1, 3]}\n", "[batch, 6, 4]",
     "layers[0].dims: expected a permutation of 1..2 (the non-batch axes, counted from 1), got [1, 3]"),
    ("  - {type: Permute, dims: [3, 2, 1]}\n", "[batch, 6, 4]",
     "layers[0].input: Permute expects an input of rank 4, got (batch, 6, 4)"),
    ("  - {type: Cropping1D, cropping: [3, 3]}\n", "[batch, 6, 4]",
     "layers[0].cropping: cropping (3, 3) must leave at least one of the 6 steps of (batch, 6, 4)"),
    ("  - {type: Cropping1D, cropping: [1, 2, 3]}\n", "[batch, 6, 4]",
     "layers[0].cropping: expected an integer >= 0 or a list of 2 integers, got a list"),
    ("  - {type: ZeroPadding1D, padding: -1}\n", "[batch, 6, 4]",
     "layers[0].padding: expected an integer >= 0 or a list of 2 integers, got -1"),
    ("  - {type: ZeroPadding1D, data_format: channels_middle}\n", "[batch, 6, 4]",
     "layers[0].data_format: expected one of channels_last, channels_first, got 'channels_middle'"),
    ("  - {type: UpSampling1D, size: 0}\n", "[batch, 6, 4]", "layers[0].size: expected a positive integer, got 0"),
    ("  - {type: UpSampling1D}\n", "[batch, 4]", "UpSampling1D expects an input of rank 3, got (batch, 4)"),
    ("  - {type: RepeatVector, n: 3}\n", "[batch, 6, 4]",
     "layers[0].input: RepeatVector expects an input of rank 2, got (batch, 6, 4)"),
    ("  - {type: RepeatVector}\n", "[batch, 4]", "layers[0]: missing required key 'n' for a RepeatVector layer"),
    ("  - {type: TimeDistributed, layer: {type: Dense, units: 3}}\n", "[batch, 4]",
     "layers[0].input: TimeDistributed expects an input of rank 3 or more (batch, time, ...), got (batch, 4)"),
    ("  - {type: TimeDistributed, layer: {type: LSTM, units: 3}}\n", "[batch, 6, 4]",
     "layers[0].layer.type: TimeDistributed around a recurrent layer is not supported"),
    ("  - {type: TimeDistributed, layer: {type: Dense, units: 0}}\n", "[batch, 6, 4]",
     "layers[0].layer.units: expected a positive integer, got 0"),
    ("  - {type: TimeDistributed, layer: {type: RepeatVector, n: 2}}\n", "[batch, 6, 4, 3]",
     "layers[0].layer.input: RepeatVector expects an input of rank 2, got (batch, 4, 3)"),
    ("  - {type: TimeDistributed}\n", "[batch, 6, 4]", "layers[0]: missing required key 'layer'"),
])
def test_located_errors(layers, shape, expected):
    errs = _errors(layers, shape)
    assert any(expected in e for e in errs), errs


def test_a_masked_time_distributed_around_a_mask_reader_is_refused():
    errs = _errors("  - {type: Masking}\n  - {type: TimeDistributed, layer: {type: GlobalAveragePooling1D}}\n",
                   "[batch, 6, 4, 3]")
    assert any("m.yaml:5: layers[1].layer: TimeDistributed with a masked input around GlobalAveragePooling1D is not "
               "supported" in e for e in errs), errs
    # unmasked, it is fine
    build_graph(load_spec_text("rnnc: 1\ninputs: {x: {shape: [batch, 6, 4, 3]}}\nlayers:\n"
                               "  - {type: TimeDistributed, layer: {type: GlobalAveragePooling1D}}\n", "m.yaml"))


def test_keras_time_distributed_around_a_recurrent_layer_is_refused(tmp_path):
    from rnnc.importers import ImportProblem, import_keras

    m = _model((5, 4, 3), L.TimeDistributed(L.LSTM(2)))
    m.save(tmp_path / "m.keras")
    with pytest.raises(ImportProblem) as e:
        import_keras(tmp_path / "m.keras")
    assert "TimeDistributed around a recurrent layer (LSTM) is not supported" in str(e.value.problems[0])
