"""Merge layers (Subtract, Maximum, Minimum, Dot beside Add, Multiply, Average, Concatenate),
their broadcasting and masks, explicit masks (`mask:` / Keras's `layer(x, mask=m)`), bool
inputs, and the Keras importer's shapes and problems, against Keras 3."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from keras_parity import MASK, floats, keras, keras_parity, masked_floats

import rnnc
from helpers import op_counts, run_onnx_reference, run_ort
from rnnc.errors import SpecError
from rnnc.importers import import_keras
from rnnc.importers.common import ImportProblem
from rnnc.ir import build_graph
from rnnc.reference import run_reference
from rnnc.spec import load_spec_text

L = keras.layers
pytestmark = [pytest.mark.keras, pytest.mark.torch,
              pytest.mark.filterwarnings("ignore::UserWarning"),
              pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")]

ELEMENTWISE = {"Add": "Add", "Subtract": "Sub", "Multiply": "Mul", "Average": "Div", "Maximum": "Max",
               "Minimum": "Min"}


def _two_masks(b: int = 5, t: int = 6, f: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Two inputs whose masks differ row by row (MASK's rows, then reversed: full, right- and
    left-padded, holed and fully masked rows against each other)."""
    return masked_floats(b, t, f, seed=1), masked_floats(b, t, f, seed=2)[::-1].copy()


# --------------------------------------------------------------------------- elementwise merges

@pytest.mark.parametrize("kind", list(ELEMENTWISE))
@pytest.mark.parametrize("masked", ["all", "first", "second", "none"])
def test_elementwise_merges_values_and_masks_like_keras(tmp_path, kind, masked):
    """Each merge's values (Multiply counts a masked step as 1; Maximum / Minimum take the
    other input's value there) and its mask, as the LSTM after it sees it (Keras: the OR of the
    masks, none if an input has none)."""
    n = 2 if kind == "Subtract" else 3
    ins = [keras.Input((None, 3), name=f"x{i}") for i in range(n)]
    hs = [L.Masking()(x) if masked == "all" or (masked, i) in (("first", 0), ("second", 1)) else x
          for i, x in enumerate(ins)]
    m = getattr(L, kind)(name="merge")(hs)
    y = L.LSTM(4, return_sequences=True)(m)
    a, b = _two_masks()
    feeds = {"x0": a, "x1": b, **({"x2": masked_floats(5, 6, 3, seed=3)[[2, 0, 4, 1, 3]]} if n == 3 else {})}
    imp, ops = keras_parity(keras.Model(ins, [y, m]), tmp_path, feeds)
    layer = imp.compiled.graph.layers["merge"]
    assert layer.mask_merge == ("or" if masked == "all" else None)
    assert ops["If"] == (1 if masked == "all" else 0)       # the LSTM runs masked only with a merged mask
    assert ops[ELEMENTWISE[kind]] >= 1
    if kind in ("Maximum", "Minimum") and masked != "none":
        assert ops["Where"] >= 1


@pytest.mark.parametrize("kind", ["Add", "Maximum", "Multiply"])
def test_size_one_dims_broadcast_like_keras(tmp_path, kind):
    """Add of (batch, time, 4) and (batch, 1, 4), with both masked: values and the OR of a
    (batch, time) and a (batch, 1) mask broadcast as Keras does."""
    a, c = keras.Input((None, 4), name="a"), keras.Input((1, 4), name="c")
    m = getattr(L, kind)(name="merge")([L.Masking()(a), L.Masking()(c)])
    y = L.GRU(3, return_sequences=True)(m)
    imp, ops = keras_parity(keras.Model([a, c], [y, m]), tmp_path,
                            {"a": masked_floats(5, 6, 4), "c": masked_floats(5, 1, 4, seed=3)})
    g = imp.compiled.graph
    assert str(g.layers["merge"].outputs["output"]) == "(batch, time, 4)"
    assert g.layers["merge"].mask_merge == "or" and ops["If"] == 1


def test_feature_and_rank_broadcast_like_keras(tmp_path):
    """(batch, time, 1) against (batch, time, 4), and a rank-2 (batch, 4) input, which Keras
    expands at axis 1."""
    a, f1, v = keras.Input((None, 4), name="a"), keras.Input((None, 1), name="f1"), keras.Input((4,), name="v")
    s = L.Subtract(name="sub")([a, f1])
    y = L.Minimum(name="mn")([s, v])
    imp, ops = keras_parity(keras.Model([a, f1, v], [s, y]), tmp_path,
                            {"a": floats(3, 5, 4), "f1": floats(3, 5, 1, seed=2), "v": floats(3, 4, seed=3)})
    assert ops["Unsqueeze"] == 1 and ops["Sub"] == 1 and ops["Min"] == 1
    assert str(imp.compiled.graph.layers["mn"].outputs["output"]) == "(batch, time, 4)"


# --------------------------------------------------------------------------- Dot

@pytest.mark.parametrize("shapes, axes", [(((None, 4), (None, 4)), 2), (((None, 4), (None, 4)), -1),
                                          (((5, 4), (5, 3)), (1, 1)), (((None, 4), (7, 4)), (2, 2)),
                                          (((4,), (4,)), 1), (((4,), (None, 4)), (1, 2)),
                                          (((None, 4), (4,)), (2, 1)), (((6, 4), (6,)), (1, 1))])
@pytest.mark.parametrize("normalize", [False, True])
def test_dot_like_keras(tmp_path, shapes, axes, normalize):
    x, y = keras.Input(shapes[0], name="x"), keras.Input(shapes[1], name="y")
    d = L.Dot(axes=axes, normalize=normalize, name="dot")([x, y])
    feeds = {"x": floats(3, *[s or 5 for s in shapes[0]]), "y": floats(3, *[s or 5 for s in shapes[1]], seed=2)}
    feeds["y"][1] = 0.0                      # an all-zero row: normalize divides by max(norm, 1e-7)
    imp, ops = keras_parity(keras.Model([x, y], d), tmp_path, feeds)
    assert ops["MatMul"] == 1 and ops["ReduceSumSquare"] == (2 if normalize else 0)


def test_dot_drops_masks_like_keras(tmp_path):
    """Keras's Dot.compute_mask returns None: the recurrent layer after it runs unmasked."""
    a, b = keras.Input((6, 3), name="a"), keras.Input((6, 3), name="b")
    d = L.Dot(axes=2, name="dot")([L.Masking()(a), L.Masking()(b)])      # (batch, 6, 6)
    y = L.LSTM(2)(d)
    a_, b_ = _two_masks()
    imp, ops = keras_parity(keras.Model([a, b], y), tmp_path, {"a": a_, "b": b_})
    assert ops["If"] == 0 and imp.compiled.graph.layers["dot"].mask_out is None
    assert "Keras 3's Dot ignores them" in imp.compiled.graph.layers["dot"].notes[0]


# --------------------------------------------------------------------------- spec errors

BASE = "rnnc: 1\ninputs:\n  a: {shape: [batch, time, 4]}\n  b: {shape: [batch, time, 3]}\n" \
       "  m: {shape: [batch, time], dtype: bool}\n  k: {shape: [batch, time]}\nlayers:\n"


@pytest.mark.parametrize("layer, needle", [
    ("{type: Subtract, input: [a, a, a]}", "layers[0].input: a Subtract layer takes exactly 2 inputs, got 3"),
    ("{type: Add, input: [a, b]}", "layers[0].input: Add expects inputs of the same shape or with size 1"),
    ("{type: Dot, input: [a, b], axes: 2}", "layers[0].axes: Dot axes 2: axis 2 of (batch, time, 4) (4) and "
                                             "axis 2 of (batch, time, 3) (3) differ"),
    ("{type: Dot, input: [a, b], axes: 0}", "layers[0].axes: expected axes in 1..2"),
    ("{type: Dot, input: [a, b], axes: [1, 2, 3]}", "layers[0].axes: expected an axis (integer) or a list of 2"),
    ("{type: Dot, input: [a, b]}", "missing required key 'axes'"),
    ("{type: Dot, input: [a, a, a], axes: 1}", "a Dot layer takes exactly 2 inputs, got 3"),
    ("{type: LSTM, input: a, units: 2, mask: k}", "layers[0].mask: 'k' is float32 (batch, time): expected a bool"),
    ("{type: LSTM, input: a, units: 2, mask: nothing}", "layers[0].mask: unknown reference 'nothing'"),
    ("{type: Dense, input: a, units: 2, mask: m}", "layers[0].mask: unknown key 'mask' for a Dense layer"),
    ("{type: Add, input: [a, a], mask: m}", "layers[0].mask: unknown key 'mask' for a Add layer"),
    ("{type: Bidirectional, input: a, layer: {type: LSTM, units: 2, mask: m}}",
     "layers[0].layer.mask: unknown key 'mask' for a LSTM layer"),
])
def test_merge_and_mask_spec_errors_are_located(layer, needle):
    with pytest.raises(SpecError) as e:
        rnnc.compile_spec(load_spec_text(BASE + f"  - {layer}\n", "m.yaml"))
    assert needle in str(e.value), str(e.value)
    assert "m.yaml:8:" in str(e.value)


def test_mask_that_does_not_fit_the_input_and_a_layer_without_mask():
    text = ("rnnc: 1\ninputs:\n  a: {shape: [batch, 6, 4]}\n  m: {shape: [batch, 5], dtype: bool}\nlayers:\n"
            "  - {type: Dense, name: d, input: a, units: 3}\n"
            "  - {type: LSTM, name: l1, input: a, units: 2, mask: m}\n"
            "  - {type: LSTM, name: l2, input: a, units: 2, mask: d.mask}\n"
            "  - {type: Dense, name: e, input: m, units: 2}\n")
    with pytest.raises(SpecError) as e:
        rnnc.compile_spec(load_spec_text(text, "m.yaml"))
    msgs = [p.message for p in e.value.problems]
    assert msgs[0].startswith("mask 'm' of shape (batch, 5) does not fit the input (batch, 6, 4)")
    assert msgs[1] == "'d.mask': layer 'd' carries no mask"
    assert msgs[2].startswith("Dense expects float32 input, got bool from m")
    assert [p.line for p in e.value.problems] == [7, 8, 9]


def test_cli_bad_mask_key_exits_2_without_traceback(tmp_path):
    spec = tmp_path / "m.yaml"
    spec.write_text(BASE + "  - {type: GRU, input: a, units: 2, mask: k}\n")
    r = subprocess.run([sys.executable, "-m", "rnnc", "check", str(spec)], capture_output=True, text=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert f"{spec}:8: layers[0].mask: 'k' is float32" in r.stderr


# --------------------------------------------------------------------------- explicit masks, bool inputs

def _assign(model, weights: dict[str, np.ndarray]) -> None:
    """rnnc's weights (`<layer>/<param>`) onto the Keras model's layers of the same names."""
    for layer in model.layers:
        for v in layer.weights:
            v.assign(weights[f"{layer.name}/{v.name}"])


@pytest.mark.parametrize("port", ["mask_input", "ma.mask", "d.mask"])
def test_spec_mask_key_from_an_input_or_a_layers_mask_like_keras(port):
    """`mask:` from a bool model input, a Masking layer's mask port, or the mask a Dense passes
    on: against Keras's `LSTM(...)(b, mask=...)` with the same weights."""
    text = ("rnnc: 1\ninputs:\n  a: {shape: [batch, time, 3]}\n  b: {shape: [batch, time, 2]}\n"
            "  mask_input: {shape: [batch, time], dtype: bool}\nlayers:\n"
            "  - {type: Masking, name: ma, input: a}\n  - {type: Dense, name: d, units: 2}\n"
            f"  - {{type: LSTM, name: lstm, input: b, units: 4, return_sequences: true, mask: {port}}}\n"
            "  - {type: GRU, name: gru, units: 3}\noutputs: [lstm, gru, d]\n")
    spec = load_spec_text(text, "m.yaml")
    rng = np.random.default_rng(0)
    graph = build_graph(spec)
    weights = {f"{l.name}/{k}": rng.normal(0, 0.4, s).astype(np.float32) for l in graph.layers.values()
               for k, s in l.params.items()}
    c = rnnc.compile_spec(spec, weights=weights)
    a_in, b_in = keras.Input((None, 3), name="a"), keras.Input((None, 2), name="b")
    m_in = keras.Input((None,), dtype="bool", name="mask_input")
    ha = L.Masking(name="ma")(a_in)
    d = L.Dense(2, name="d")(ha)
    mask = {"mask_input": m_in, "ma.mask": ha._keras_mask, "d.mask": d._keras_mask}[port]
    s = L.LSTM(4, return_sequences=True, name="lstm")(b_in, mask=mask)
    g = L.GRU(3, name="gru")(s)
    model = keras.Model([a_in, b_in, m_in], [s, g, d])
    _assign(model, weights)
    a = masked_floats(5, 6, 3)
    feeds = {"a": a, "b": floats(5, 6, 2, seed=4), "mask_input": np.any(a != 0, axis=-1)}
    want = [keras.ops.convert_to_numpy(t) for t in model([feeds["a"], feeds["b"], feeds["mask_input"]])]
    for got in (run_ort(c.model, feeds), run_onnx_reference(c.model, feeds), run_reference(c.graph, c.weights, feeds)):
        for name, w in zip(("lstm", "gru", "d"), want):
            assert np.max(np.abs(got[name] - w)) <= 1e-5, (port, name)
    assert op_counts(c.model)["If"] == 2          # both recurrent layers masked (the GRU by the LSTM's mask)


def test_video_model_with_a_bool_mask_input_imports_like_keras(tmp_path):
    """keras.io's CNN-RNN video classifier: frame features and a bool mask input given to the
    first GRU (`GRU(...)(frames, mask=mask)`), whose output mask reaches the second GRU."""
    frames = keras.Input((None, 6), name="frames")
    mask = keras.Input((None,), dtype="bool", name="mask")
    x = L.GRU(5, return_sequences=True)(frames, mask=mask)
    x = L.GRU(4)(x)
    x = L.Dropout(0.4)(x)
    x = L.Dense(8, activation="relu")(x)
    y = L.Dense(3, activation="softmax")(x)
    imp, ops = keras_parity(keras.Model([frames, mask], y), tmp_path,
                            {"frames": floats(5, 6, 6), "mask": MASK.copy()},
                            {"frames": floats(5, 4, 6, seed=2), "mask": MASK[:, 1:5].copy()})
    assert "  mask: {shape: [batch, mask_time], dtype: bool}" in imp.spec_text
    assert "return_sequences: true, mask: mask}" in imp.spec_text
    assert imp.spec_text.count("mask: mask") == 1          # the second GRU gets it from the first
    assert ops["GRU"] == 2 and ops["If"] == 2


@pytest.mark.parametrize("wrap", ["bidirectional", "initial_state", "batchnorm"])
def test_explicit_mask_on_bidirectional_with_initial_state_and_batchnorm(tmp_path, wrap):
    """An explicit mask is applied even with initial_state (Keras passes mask= to call), and
    BatchNormalization passes the mask it is given on."""
    x, m = keras.Input((None, 3), name="x"), keras.Input((None,), dtype="bool", name="m")
    ins = [x, m]
    if wrap == "bidirectional":
        y = L.Bidirectional(L.LSTM(3, return_sequences=True))(x, mask=m)
    elif wrap == "initial_state":
        s = keras.Input((3,), name="s")
        ins.append(s)
        y = L.GRU(3, return_sequences=True)(x, initial_state=[s], mask=m)
    else:
        y = L.SimpleRNN(3, return_sequences=True)(L.BatchNormalization()(x, mask=m))
    feeds = {"x": floats(5, 6, 3), "m": MASK.copy(), **({"s": floats(5, 3, seed=5)} if wrap == "initial_state" else {})}
    imp, ops = keras_parity(keras.Model(ins, y), tmp_path, feeds)
    assert ops["If"] >= 1 and "mask: m" in imp.spec_text
    rec = [l for l in imp.compiled.graph.layers.values() if l.kind in ("Bidirectional", "GRU", "SimpleRNN")]
    assert [str(l.mask_in) for l in rec] == ["m"]


def test_bool_inputs_run_and_are_checked():
    text = ("rnnc: 1\ninputs:\n  x: {shape: [batch, time, 3]}\n  m: {shape: [batch, time], dtype: bool}\n"
            "layers:\n  - {type: LSTM, name: l, input: x, units: 2, mask: m}\n")
    spec = load_spec_text(text, "m.yaml")
    graph = build_graph(spec)
    rng = np.random.default_rng(0)
    w = {f"l/{k}": rng.normal(0, 0.4, s).astype(np.float32) for k, s in graph.layers["l"].params.items()}
    c = rnnc.compile_spec(spec, weights=w)
    sess = rnnc.Session(c.model)
    feeds = {"x": floats(5, 6, 3), "m": MASK.copy()}
    got = sess.run(feeds)["l"]
    assert np.max(np.abs(got - run_reference(c.graph, c.weights, feeds)["l"])) <= 1e-5
    assert np.array_equal(got[4], np.zeros(2, np.float32))        # the fully masked row: initial state
    with pytest.raises(rnnc.errors.InputError, match="input 'm': expected dtype bool, got float32"):
        sess.run({"x": feeds["x"], "m": MASK.astype(np.float32)})


# --------------------------------------------------------------------------- import details

def test_sequential_built_by_call_imports_symbolic_batch_and_time(tmp_path, capsys):
    s = keras.Sequential([L.LSTM(3, return_sequences=True), L.Dense(2)])
    s(np.zeros((4, 12, 5), np.float32))
    name = s.get_config()["layers"][0]["config"]["name"]      # the InputLayer the build made
    imp, _ = keras_parity(s, tmp_path, {name: floats(2, 7, 5)}, {name: floats(4, 12, 5)})
    assert "{shape: [batch, time, 5]}" in imp.spec_text
    assert any("--fixed-shapes" in n for n in imp.notes)
    fixed = import_keras(tmp_path / "model.keras", fixed_shapes=True)
    assert "{shape: [4, 12, 5]}" in fixed.spec_text and not fixed.notes
    out = tmp_path / "fixed.yaml"
    r = subprocess.run([sys.executable, "-m", "rnnc", "import", "keras", str(tmp_path / "model.keras"), "-o", str(out),
                        "--fixed-shapes"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "{shape: [4, 12, 5]}" in out.read_text()
    r = subprocess.run([sys.executable, "-m", "rnnc", "import", "torch", str(tmp_path / "model.keras"), "-o", str(out),
                        "--spec", str(out), "--fixed-shapes"], capture_output=True, text=True)
    assert r.returncode == 2 and "--fixed-shapes applies to importing a .keras file" in r.stderr


def test_sequential_stateful_keeps_its_batch_and_tokens_get_symbolic_time(tmp_path):
    s = keras.Sequential([L.Embedding(9, 4, mask_zero=True), L.GRU(3, stateful=True)])
    s(np.ones((2, 5), np.int32))
    s.save(tmp_path / "m.keras")
    imp = import_keras(tmp_path / "m.keras")
    assert "{shape: [2, time], dtype: int32}" in imp.spec_text
    assert "{shape: [2, 5], dtype: int32}" in import_keras(tmp_path / "m.keras", fixed_shapes=True).spec_text


def test_functional_model_keeps_its_declared_shapes(tmp_path):
    """A Functional model checks its inputs' shapes (Keras refuses another length): kept."""
    x = keras.Input((5, 3), name="x")
    imp, _ = keras_parity(keras.Model(x, L.LSTM(2)(x)), tmp_path, {"x": floats(2, 5, 3)})
    assert "x: {shape: [batch, 5, 3]}" in imp.spec_text and not imp.notes


@keras.saving.register_keras_serializable(package="rnnc_tests")
class Doubled(L.Layer):
    """A layer class rnnc does not know."""

    def call(self, x):
        return x * 2.0


@pytest.mark.parametrize("refused", ["lambda", "unknown"])
def test_a_refused_layer_is_one_problem(tmp_path, capsys, refused):
    x = keras.Input((None, 3), name="x")
    if refused == "lambda":
        h = L.Lambda(lambda t: t * 2.0, output_shape=(None, 3), name="bad")(x)
    else:
        h = Doubled(name="bad")(x)
    y = L.Add()([L.LSTM(2, return_sequences=True)(h), L.GRU(2, return_sequences=True)(h)])
    path = tmp_path / "m.keras"
    keras.Model(x, y).save(path)
    with pytest.raises(ImportProblem) as e:
        import_keras(path)
    assert len(e.value.problems) == 1, [p.message for p in e.value.problems]
    assert "(bad, " in e.value.problems[0].path and "is not supported by rnnc" in e.value.problems[0].message
    r = subprocess.run([sys.executable, "-m", "rnnc", "import", "keras", str(path), "-o", str(tmp_path / "o.yaml")],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.count("is not supported by rnnc") == 1 and "unknown tensor source" not in r.stderr


def test_mask_from_a_float_input_is_refused_with_its_place(tmp_path):
    x, m = keras.Input((None, 3), name="x"), keras.Input((None,), name="m")
    y = L.LSTM(2)(x, mask=keras.ops.cast(m, "bool"))
    path = tmp_path / "m.keras"
    keras.Model([x, m], y).save(path)
    with pytest.raises(ImportProblem) as e:
        import_keras(path)
    assert len(e.value.problems) == 1
    assert "(lstm" in e.value.problems[0].path and "which rnnc does not reproduce" in e.value.problems[0].message


def test_legacy_layers_pass_the_mask_like_keras(tmp_path):
    """Dense, Dropout, Activation and BatchNormalization pass the mask on in Keras 3."""
    x = keras.Input((None, 3), name="x")
    h = L.BatchNormalization()(L.Activation("tanh")(L.Dropout(0.3)(L.Dense(4)(L.Masking(name="masking")(x)))))
    imp, ops = keras_parity(keras.Model(x, L.LSTM(2, name="lstm")(h)), tmp_path, {"x": masked_floats(5, 6, 3)})
    assert ops["If"] == 1 and str(imp.compiled.graph.layers["lstm"].mask_in) == "masking.mask"
