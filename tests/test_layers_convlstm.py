"""ConvLSTM1D/2D/3D (a recurrent layer whose gates are convolutions) and Conv3D against Keras 3:
the built-in ConvLSTM cell (rnnc/cells/builtin.py) as a Scan whose body convolves the
channels-first states, its input convolution hoisted out for all steps, and
specs/convlstm_next_frame.yaml (keras.io's next-frame prediction)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from keras_parity import MASK, floats, keras, keras_out, keras_parity

import rnnc
from helpers import op_counts, run_onnx_reference, run_ort
from rnnc.errors import LoweringError, SpecError
from rnnc.importers import ImportProblem, import_keras
from rnnc.ir import build_graph
from rnnc.ir.printer import summary
from rnnc.reference import run_reference
from rnnc.spec import load_spec, load_spec_text

L = keras.layers
pytestmark = [pytest.mark.keras, pytest.mark.torch]
SPECS = Path(__file__).resolve().parents[1] / "specs"


def _body_ops(model) -> dict[str, int]:
    """Op counts inside the time loop's body (the Scan's subgraph)."""
    out: dict[str, int] = {}
    for n in model.graph.node:
        if n.op_type == "Scan":
            for a in n.attribute:
                if a.name == "body":
                    for m in a.g.node:
                        out[m.op_type] = out.get(m.op_type, 0) + 1
    return out


def _top_ops(model) -> dict[str, int]:
    out: dict[str, int] = {}
    for n in model.graph.node:
        out[n.op_type] = out.get(n.op_type, 0) + 1
    return out


def _check_loop(imp) -> None:
    """A Scan whose body convolves h once (the recurrent conv) and a hoisted input Conv outside,
    without a Transpose in the body (the states stay channels-first in the loop)."""
    m = imp.compiled.model
    body, top = _body_ops(m), _top_ops(m)
    assert top.get("Scan") == 1 and body.get("Conv") == 1 and top.get("Conv", 0) >= 1
    assert "Transpose" not in body
    layer = next(lay for lay in imp.compiled.graph.layers.values() if lay.cells)
    assert layer.plan.strategy == "loop" and layer.plan.time_loop == "scan"
    assert "no ONNX op computes a ConvLSTM" in layer.plan.why


# -- ConvLSTM2D -----------------------------------------------------------------------

@pytest.mark.parametrize("opts", [
    {}, {"padding": "same"}, {"strides": 2}, {"strides": (2, 1), "padding": "same"},
    {"dilation_rate": 2, "padding": "same"}, {"dilation_rate": (2, 1)}, {"kernel_size": (3, 2)},
    {"kernel_size": 2, "padding": "same"}, {"return_sequences": True}, {"go_backwards": True, "return_sequences": True},
    {"return_state": True}, {"activation": "relu", "recurrent_activation": "hard_sigmoid"},
    {"use_bias": False}, {"unit_forget_bias": False, "activation": "elu"},
])
def test_conv_lstm2d(tmp_path, opts):
    """Over a symbolic time length (two lengths fed)."""
    opts = {"filters": 4, "kernel_size": 3, **opts}
    x = keras.Input((None, 7, 6, 3), name="x")
    m = keras.Model(x, L.ConvLSTM2D(**opts, name="clstm")(x))
    imp, _ = keras_parity(m, tmp_path, {"x": floats(2, 4, 7, 6, 3, seed=1)}, {"x": floats(3, 6, 7, 6, 3, seed=2)})
    _check_loop(imp)
    g = imp.compiled.graph
    assert isinstance(g.inputs["x"].dims[1], str)
    assert g.param_count() == m.count_params()
    if opts.get("return_state"):
        assert set(g.layers["clstm"].outputs) == {"output", "state_h", "state_c"}


@pytest.mark.parametrize("rank, opts", [
    (1, {}), (1, {"padding": "same", "return_sequences": True}), (1, {"strides": 2, "go_backwards": True}),
    (1, {"dilation_rate": 2, "return_state": True}),
    (3, {}), (3, {"padding": "same", "return_sequences": True}), (3, {"strides": (1, 2, 1), "use_bias": False}),
    (3, {"kernel_size": (1, 2, 3), "go_backwards": True, "return_state": True}),
])
def test_conv_lstm_1d_3d(tmp_path, rank, opts):
    opts = {"filters": 3, "kernel_size": 2, **opts}
    spatial = {1: (7,), 3: (4, 5, 4)}[rank]
    x = keras.Input((None, *spatial, 2), name="x")
    layer = getattr(L, f"ConvLSTM{rank}D")(**opts)
    m = keras.Model(x, layer(x))
    imp, _ = keras_parity(m, tmp_path, {"x": floats(2, 5, *spatial, 2)})
    _check_loop(imp)
    assert imp.compiled.graph.param_count() == m.count_params()


def test_conv_lstm_stacked_with_conv3d_head(tmp_path):
    """Two ConvLSTM2D with a BatchNormalization between them, then Conv3D over (time, rows,
    cols): the middle of keras.io's next-frame model."""
    x = keras.Input((None, 8, 8, 1), name="frames")
    h = L.ConvLSTM2D(4, 3, padding="same", return_sequences=True, activation="relu")(x)
    h = L.BatchNormalization()(h)
    h = L.ConvLSTM2D(4, 1, padding="same", return_sequences=True, activation="relu")(h)
    y = L.Conv3D(1, 3, padding="same", activation="sigmoid")(h)
    m = keras.Model(x, y)
    imp, ops = keras_parity(m, tmp_path, {"frames": floats(2, 5, 8, 8, 1)}, {"frames": floats(1, 3, 8, 8, 1, seed=3)})
    assert ops["Scan"] == 2


@pytest.mark.parametrize("opts", [{}, {"padding": "same"}, {"strides": 2, "padding": "same"}, {"dilation_rate": 2},
                                  {"groups": 2, "kernel_size": (1, 2, 3), "use_bias": False, "activation": "relu"}])
def test_conv3d(tmp_path, opts):
    opts = {"filters": 4, "kernel_size": 3, **opts}
    x = keras.Input((6, 7, 5, 2), name="x")
    m = keras.Model(x, L.Conv3D(**opts)(x))
    _, ops = keras_parity(m, tmp_path, {"x": floats(2, 6, 7, 5, 2)})
    assert ops["Conv"] == 1 and ops["Transpose"] == 2


# -- states, masks, streaming ---------------------------------------------------------------

def test_conv_lstm_initial_state(tmp_path):
    x = keras.Input((None, 6, 5, 2), name="x")
    h0 = keras.Input((6, 5, 3), name="h0")
    c0 = keras.Input((6, 5, 3), name="c0")
    y = L.ConvLSTM2D(3, 3, padding="same", return_sequences=True, return_state=True, name="clstm")(
        x, initial_state=[h0, c0])
    m = keras.Model([x, h0, c0], y)
    feeds = {"x": floats(2, 4, 6, 5, 2), "h0": floats(2, 6, 5, 3, seed=5), "c0": floats(2, 6, 5, 3, seed=6)}
    imp, _ = keras_parity(m, tmp_path, feeds)
    assert "initial_state: [h0, c0]" in imp.spec_text
    _check_loop(imp)


@pytest.mark.parametrize("opts", [{"return_sequences": True}, {}, {"go_backwards": True, "return_sequences": True},
                                  {"zero_output_for_mask": True, "return_sequences": True}])
def test_conv_lstm_mask(tmp_path, opts):
    """Keras's ConvLSTM is an RNN: a mask keeps the states at masked steps and repeats the
    previous output (zeros with zero_output_for_mask), as for LSTM."""
    x = keras.Input((None, 5, 2), name="x")
    mask = keras.Input((None,), dtype="bool", name="m")
    y = L.ConvLSTM1D(3, 2, padding="same", **opts)(x, mask=mask)
    m = keras.Model([x, mask], y)
    imp, _ = keras_parity(m, tmp_path, {"x": floats(5, 6, 5, 2), "m": MASK})
    assert imp.compiled.graph.layers[m.layers[-1].name].mask_in is not None
    assert _top_ops(imp.compiled.model).get("Scan") == 1


def test_conv_lstm_stateful_streams_like_keras(tmp_path):
    x = keras.Input((None, 5, 4, 2), batch_size=2, name="x")
    y = L.ConvLSTM2D(3, 2, padding="same", stateful=True, return_sequences=True, name="clstm")(x)
    m = keras.Model(x, y)
    from keras_parity import randomize
    randomize(m)
    m.save(tmp_path / "model.keras")
    imp = import_keras(tmp_path / "model.keras")
    assert "stateful: true" in imp.spec_text
    sess = rnnc.Session(imp.compiled, providers="cpu")
    assert list(sess.states) and all(v.shape == (2, 5, 4, 3) for v in sess.states.values())
    m.layers[-1].reset_state()
    for seed in (1, 2, 3):            # each call continues from the previous one's states
        f = {"x": floats(2, 3, 5, 4, 2, seed=seed)}
        got, want = sess.run(f), keras_out(m, f)
        err = float(np.max(np.abs(next(iter(got.values())) - want[0])))
        assert err <= 1e-5, f"call {seed}: {err}"


# -- the spec, lowerings, errors ------------------------------------------------------------

def _next_frame_keras(spec_graph):
    """specs/convlstm_next_frame.yaml's model built in Keras (keras.io's next-frame prediction)."""
    x = keras.Input((None, 16, 16, 1), name="frames")
    h = L.ConvLSTM2D(8, (5, 5), padding="same", return_sequences=True, activation="relu")(x)
    h = L.BatchNormalization()(h)
    h = L.ConvLSTM2D(8, (3, 3), padding="same", return_sequences=True, activation="relu")(h)
    h = L.BatchNormalization()(h)
    h = L.ConvLSTM2D(8, (1, 1), padding="same", return_sequences=True, activation="relu")(h)
    y = L.Conv3D(1, (3, 3, 3), activation="sigmoid", padding="same")(h)
    return keras.Model(x, y)


def test_next_frame_spec_summary_matches_keras(capsys):
    spec = load_spec(SPECS / "convlstm_next_frame.yaml")
    g = build_graph(spec)
    m = _next_frame_keras(g)
    assert g.param_count() == m.count_params()
    keras_counts = [lay.count_params() for lay in m.layers[1:]]
    assert [lay.param_count() for lay in g.layers.values()] == keras_counts
    text = summary(g)
    for n in keras_counts:
        assert f"{n:,}" in text
    from rnnc.cli import main
    assert main(["summary", str(SPECS / "convlstm_next_frame.yaml")]) in (0, None)
    assert f"Total params: {m.count_params():,}" in capsys.readouterr().out


def test_next_frame_spec_runs_like_keras(tmp_path):
    """The spec with the Keras model's weights (same layer names) gives Keras's frames."""
    spec = load_spec(SPECS / "convlstm_next_frame.yaml")
    g = build_graph(spec)
    m = _next_frame_keras(g)
    from keras_parity import randomize
    randomize(m, seed=3)
    weights = {}
    for klayer, layer in zip(m.layers[1:], g.layers.values()):
        names = list(layer.params)
        arrays = [np.asarray(keras.ops.convert_to_numpy(v)) for v in klayer.weights]
        if layer.kind == "BatchNormalization":
            arrays = arrays[:4]
        weights.update({f"{layer.name}/{k}": a for k, a in zip(names, arrays)})
    c = rnnc.compile_spec(SPECS / "convlstm_next_frame.yaml", weights=weights)
    f = {"frames": floats(2, 4, 16, 16, 1)}
    want = keras_out(m, f)[0]
    for got in (run_ort(c.model, f), run_onnx_reference(c.model, f), run_reference(c.graph, c.weights, f)):
        assert float(np.max(np.abs(next(iter(got.values())) - want))) <= 1e-5
    assert op_counts(c.model)["Scan"] == 3


SPEC = """
rnnc: 1
name: t
inputs:
  x: {{shape: [batch, time, 6, 5, 2]}}
layers:
  - {{type: ConvLSTM2D, name: c, filters: 3, kernel_size: 3, {extra}}}
"""


def test_unroll_and_no_hoist_match_the_reference():
    """`unroll` (fixed time) and the body without hoisting (the input conv once per step)."""
    text = SPEC.format(extra="padding: same, return_sequences: true").replace("time, 6", "4, 6")
    spec = load_spec_text(text)
    f = {"x": floats(2, 4, 6, 5, 2)}
    base = rnnc.compile_spec(spec)
    ref = run_reference(base.graph, base.weights, f)
    un = rnnc.compile_spec(load_spec_text(text.replace("return_sequences: true", "return_sequences: true, "
                                                       "unroll: true")))
    assert un.graph.layers["c"].plan.strategy == "unroll" and op_counts(un.model)["Scan"] == 0
    flat = rnnc.compile_spec(spec, hoist=False)
    body = _body_ops(flat.model)
    assert body["Conv"] == 2 and _top_ops(flat.model).get("Conv", 0) == 0
    for c in (un, flat):
        for k, v in run_ort(c.model, f).items():
            assert np.max(np.abs(v - ref[k])) <= 1e-5


def test_default_weights_unit_forget_bias():
    c = rnnc.compile_spec(load_spec_text(SPEC.format(extra="return_state: true")))
    b = c.weights["c/bias"]
    assert b.shape == (12,) and np.all(b[3:6] == 1.0) and np.all(b[:3] == 0) and np.all(b[6:] == 0)
    assert c.weights["c/kernel"].shape == (3, 3, 2, 12) and c.weights["c/recurrent_kernel"].shape == (3, 3, 3, 12)


@pytest.mark.parametrize("extra, words", [
    ("strides: 2, dilation_rate: 2", "strides > 1 cannot be combined with dilation_rate > 1"),
    ("kernel_size: 7", "needs at least 7 rows"),
    ("activation: softmax", "element-wise activations"),
    ("data_format: channels_first", "channels_last"),
])
def test_spec_errors(extra, words):
    text = SPEC.format(extra=extra)
    if "kernel_size: 7" in extra:
        text = text.replace("kernel_size: 3, ", "")
    with pytest.raises(SpecError, match=words):
        build_graph(load_spec_text(text))


def test_symbolic_spatial_refused_and_native_refused():
    with pytest.raises(SpecError, match="fixed spatial sizes"):
        build_graph(load_spec_text(SPEC.format(extra="padding: same").replace("6, 5, 2", "rows, 5, 2")))
    with pytest.raises(LoweringError, match="no ONNX op computes a ConvLSTM"):
        rnnc.compile_spec(load_spec_text(SPEC.format(extra="lowering: native")))


def test_import_refuses_channels_first(tmp_path):
    x = keras.Input((None, 2, 6, 5), name="x")
    m = keras.Model(x, L.ConvLSTM2D(3, 3, data_format="channels_first")(x))
    m.save(tmp_path / "m.keras")
    with pytest.raises(ImportProblem, match="channels_first.*not supported"):
        import_keras(tmp_path / "m.keras")


def test_wrappers_refuse_conv_lstm():
    td = """
rnnc: 1
name: t
inputs:
  x: {shape: [batch, 3, time, 6, 6, 2]}
layers:
  - {type: TimeDistributed, layer: {type: ConvLSTM2D, filters: 3, kernel_size: 3}}
"""
    with pytest.raises(SpecError, match="around a recurrent layer"):
        build_graph(load_spec_text(td))
    bi = SPEC.format(extra="").replace("{type: ConvLSTM2D, name: c, filters: 3, kernel_size: 3, }",
                                       "{type: Bidirectional, layer: {type: ConvLSTM2D, filters: 3, kernel_size: 3}}")
    with pytest.raises(SpecError, match="inside Bidirectional"):
        load_spec_text(bi)
