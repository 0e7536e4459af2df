"""Activation layers and the layers that are identity at inference, against Keras 3."""
from __future__ import annotations

import numpy as np
import pytest
from keras_parity import floats, keras, keras_parity, masked_floats

from helpers import run_ort
from rnnc.importers import import_keras
from rnnc.spec import load_spec_text

L = keras.layers


def layer_ops(model, layer: str) -> list[str]:
    """The ops a layer emitted (its nodes are named `<layer>/...`)."""
    return [n.op_type for n in model.graph.node if n.name.startswith(layer + "/")]
pytestmark = [pytest.mark.keras, pytest.mark.torch]


@pytest.mark.parametrize("opts", [{}, {"max_value": 0.5}, {"negative_slope": 0.2}, {"threshold": 0.3},
                                  {"max_value": 1.5, "negative_slope": 0.1, "threshold": 0.4}])
def test_relu(tmp_path, opts):
    x = keras.Input((None, 4), name="x")
    m = keras.Model(x, L.Dense(3)(L.ReLU(**opts)(L.Dense(4)(x))))
    _, ops = keras_parity(m, tmp_path, {"x": floats(2, 5, 4, scale=2.0)})
    assert ops["Relu"] == (1 if not opts.get("negative_slope") and not opts.get("threshold") else 0)
    assert ops["Min"] == (1 if "max_value" in opts else 0)


def test_relu_passes_the_mask_and_noise_is_identity(tmp_path):
    x = keras.Input((None, 3), name="x")
    h = L.GaussianNoise(0.5)(L.Masking()(x))
    y = L.LSTM(4)(L.ReLU(max_value=1.0)(h))
    imp, ops = keras_parity(keras.Model(x, y), tmp_path, {"x": masked_floats(5, 6, 3)})
    assert ops["LSTM"] == 1 and ops["If"] == 1          # the mask reached the LSTM
    layer = imp.compiled.graph.layers["gaussian_noise"]
    assert layer.notes == ("GaussianNoise is the identity at inference",)


# -- LeakyReLU, ELU, PReLU --------------------------------------------------------------

@pytest.mark.parametrize("opts", [{}, {"negative_slope": 0.05}, {"negative_slope": 0.0}])
def test_leaky_relu(tmp_path, opts):
    x = keras.Input((None, 4), name="x")
    layer = L.LeakyReLU(**opts)
    assert layer.negative_slope == opts.get("negative_slope", 0.3)     # Keras 3's layer default
    m = keras.Model(x, L.Dense(3)(layer(L.Dense(4)(x))))
    imp, ops = keras_parity(m, tmp_path, {"x": floats(2, 5, 4, scale=2.0)})
    assert ops["LeakyRelu"] == 1
    node = next(n for n in imp.compiled.model.graph.node if n.op_type == "LeakyRelu")
    assert node.attribute[0].f == pytest.approx(opts.get("negative_slope", 0.3))


@pytest.mark.parametrize("alpha", [1.0, 0.4, 2.5])
def test_elu(tmp_path, alpha):
    x = keras.Input((None, 4), name="x")
    m = keras.Model(x, L.Dense(3)(L.ELU(alpha=alpha)(L.Dense(4)(x))))
    _, ops = keras_parity(m, tmp_path, {"x": floats(2, 5, 4, scale=2.0)})
    assert ops["Elu"] == 1


@pytest.mark.parametrize("shape,shared", [((6, 4), [1]), ((6, 4), None), ((None, 4), [1]),
                                          ((3, 5, 4), [1, 2]), ((3, 5, 4), [2]), ((3, 5, 4), None)])
def test_prelu(tmp_path, shape, shared):
    x = keras.Input(shape, name="x")
    m = keras.Model(x, L.PReLU(shared_axes=shared, name="p_re_lu")(L.Dense(4)(x)))
    feed = floats(2, *(d or 6 for d in shape), scale=2.0)
    imp, ops = keras_parity(m, tmp_path, {"x": feed})     # random alpha (Keras initializes zeros)
    assert ops["PRelu"] == 1
    want = tuple(1 if i + 1 in (shared or []) else d for i, d in enumerate(shape))
    assert imp.compiled.graph.layers["p_re_lu"].params == {"alpha": want}


def test_prelu_needs_fixed_or_shared_axes():
    import rnnc
    from rnnc.errors import SpecError

    spec = ("rnnc: 1\ninputs: {x: {shape: [batch, time, 4]}}\nlayers:\n  - {type: PReLU, name: p}\n")
    with pytest.raises(SpecError, match="PReLU needs a fixed size on axis 1"):
        rnnc.compile_spec(load_spec_text(spec))
    with pytest.raises(SpecError, match="shared_axes: expected axes in 1..2"):
        rnnc.compile_spec(load_spec_text(spec.replace("name: p", "name: p, shared_axes: [0]")))


def test_activations_pass_the_mask(tmp_path):
    x = keras.Input((None, 3), name="x")
    h = L.PReLU(shared_axes=[1])(L.ELU(0.5)(L.LeakyReLU()(L.Masking()(x))))
    imp, ops = keras_parity(keras.Model(x, L.GRU(4)(h)), tmp_path, {"x": masked_floats(5, 6, 3)})
    assert ops["GRU"] == 1 and ops["If"] == 1 and ops["LeakyRelu"] == ops["Elu"] == ops["PRelu"] == 1


# -- Softmax ----------------------------------------------------------------------------

@pytest.mark.parametrize("axis", [-1, 1, 2, [1, 2], [-1, 1]])
def test_softmax(tmp_path, axis):
    x = keras.Input((None, 4), name="x")
    m = keras.Model(x, L.Softmax(axis=axis)(L.Dense(4)(x)))
    _, ops = keras_parity(m, tmp_path, {"x": floats(3, 5, 4, scale=3.0)})
    single = isinstance(axis, int)
    assert ops["Softmax"] == (1 if single else 0)
    assert ops["ReduceMax"] == ops["ReduceSum"] == ops["Exp"] == (0 if single else 1)
    assert ops["Where"] == 0


def test_softmax_4d(tmp_path):
    x = keras.Input((3, 5, 4), name="x")
    m = keras.Model(x, [L.Softmax(axis=1)(x), L.Softmax(axis=[1, 3])(x), L.Softmax(axis=-2)(x)])
    _, ops = keras_parity(m, tmp_path, {"x": floats(2, 3, 5, 4, scale=3.0)})
    assert ops["Softmax"] == 2 and ops["ReduceSum"] == 1


@pytest.mark.parametrize("axis", [-1, 1, [1, 2]])
def test_softmax_with_a_mask(tmp_path, axis):
    # Keras 3 broadcasts the (batch, time) mask against the input from the last axis: on a
    # (batch, time, features) input mask[i, j] selects x[:, i, j], so batch = time = features
    # here. The rows of MASK: full, right-padded, left-padded, holed, all masked (zeros out).
    x = keras.Input((None, 6), name="x")
    y = L.Softmax(axis=axis, name="softmax")(L.Dense(6)(L.Masking()(x)))
    imp, ops = keras_parity(keras.Model(x, y), tmp_path, {"x": masked_floats(6, 6, 6)})
    assert layer_ops(imp.compiled.model, "softmax") == ["Where", "Softmax" if isinstance(axis, int) else "ReduceMax",
                                                        *([] if isinstance(axis, int) else ["Sub", "Exp", "ReduceSum", "Div"]),
                                                        "Where"]
    assert "mask applied as Keras 3 applies it" in imp.compiled.graph.layers["softmax"].notes[0]
    out = run_ort(imp.compiled.model, {"x": masked_floats(6, 6, 6)})
    assert np.all(next(iter(out.values()))[:, 4, :] == 0.0)      # the fully masked mask row


def test_softmax_mask_passes_on(tmp_path):
    x = keras.Input((None, 6), name="x")
    y = L.LSTM(3)(L.Softmax(name="softmax")(L.Masking()(x)))
    imp, ops = keras_parity(keras.Model(x, y), tmp_path, {"x": masked_floats(6, 6, 6)})
    assert ops["LSTM"] == 1 and ops["If"] == 1
    assert layer_ops(imp.compiled.model, "softmax") == ["Where", "Softmax", "Where"]


def test_softmax_refuses_a_mask_that_does_not_broadcast():
    import rnnc
    from rnnc.errors import SpecError

    spec = ("rnnc: 1\ninputs: {x: {shape: [batch, 5, 4]}}\nlayers:\n  - {type: Masking, name: m}\n"
            "  - {type: Softmax, name: s}\n")
    with pytest.raises(SpecError, match=r"layers\[1\].*broadcasts the mask \(batch, 5\).*mask axis 1 \(5\) and input axis 2 \(4\) differ"):
        rnnc.compile_spec(load_spec_text(spec))
    with pytest.raises(SpecError, match="expected distinct axes"):
        rnnc.compile_spec(load_spec_text(spec.replace("{type: Masking, name: m}", "{type: Dense, units: 4}")
                                         .replace("name: s", "name: s, axis: [1, -2]")))


# -- identity at inference --------------------------------------------------------------

def test_dropouts_and_regularizers_are_identity_and_pass_the_mask(tmp_path):
    x = keras.Input((None, 3), name="x")
    h = L.Masking()(x)
    h = L.GaussianDropout(0.3, seed=2, name="gaussian_dropout")(h)
    h = L.AlphaDropout(0.2, noise_shape=(None, 1, 3), seed=3, name="alpha_dropout")(h)
    h = L.SpatialDropout1D(0.4, name="spatial_dropout1d")(h)
    h = L.ActivityRegularization(l1=0.01, l2=0.02, name="activity_regularization")(h)
    imp, ops = keras_parity(keras.Model(x, L.LSTM(4)(h)), tmp_path, {"x": masked_floats(5, 6, 3)})
    assert ops["LSTM"] == 1 and ops["If"] == 1
    layers = imp.compiled.graph.layers
    for name, kind in [("gaussian_dropout", "GaussianDropout"), ("alpha_dropout", "AlphaDropout"),
                       ("spatial_dropout1d", "SpatialDropout1D"), ("activity_regularization", "ActivityRegularization")]:
        assert layers[name].notes == (f"{kind} is the identity at inference",)
        assert layer_ops(imp.compiled.model, name) == []
    assert "noise_shape" in imp.spec_text and "l1: 0.01" in imp.spec_text


@pytest.mark.parametrize("fmt", ["channels_last", "channels_first"])
def test_spatial_dropout_2d(tmp_path, fmt):
    x = keras.Input((4, 5, 3), name="x")
    y = L.Dense(2)(L.SpatialDropout2D(0.5, data_format=fmt)(x))
    imp, ops = keras_parity(keras.Model(x, y), tmp_path, {"x": floats(2, 4, 5, 3)})
    assert dict(ops) == {"MatMul": 1, "Add": 1}      # the Add writes the output under its name
    assert ("channels_first" in imp.spec_text) == (fmt == "channels_first")


def test_spatial_dropout_rank():
    import rnnc
    from rnnc.errors import SpecError

    spec = "rnnc: 1\ninputs: {x: {shape: [batch, time, 4]}}\nlayers:\n  - {type: SpatialDropout2D, rate: 0.1}\n"
    with pytest.raises(SpecError, match="SpatialDropout2D expects an input of rank 4"):
        rnnc.compile_spec(load_spec_text(spec))


# -- the Activation layer: each of Keras 3's activations works or is refused clearly -------

def _keras_activations() -> list[str]:
    from keras.src.activations import ALL_OBJECTS_DICT
    return sorted(ALL_OBJECTS_DICT)


@pytest.mark.parametrize("name", _keras_activations())
def test_keras_activation_works_or_is_refused(tmp_path, name):
    from rnnc.cells.activations import NAMES
    from rnnc.importers.common import ImportProblem

    x = keras.Input((None, 4), name="x")
    m = keras.Model(x, L.Activation(name)(L.Dense(4)(x)))
    name = keras.activations.serialize(keras.activations.get(name))    # swish is saved as silu
    if name in NAMES:
        keras_parity(m, tmp_path, {"x": floats(2, 5, 4, scale=2.0)})
    else:
        m.save(tmp_path / "m.keras")
        with pytest.raises(ImportProblem, match=f"activation='{name}' is not supported: expected an activation"):
            import_keras(tmp_path / "m.keras")
