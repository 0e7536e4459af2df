"""LayerNormalization and BatchNormalization, against Keras 3."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
from keras_parity import floats, keras, keras_parity, masked_floats

import rnnc
from helpers import TOL, op_counts, random_weights, run_onnx_reference, run_ort
from rnnc.errors import SpecError
from rnnc.ir.build import build_graph
from rnnc.reference import run_reference
from rnnc.spec import load_spec_text

L = keras.layers
pytestmark = [pytest.mark.keras, pytest.mark.torch]


def _ln(tmp_path, shape, feed, name="ln", **opts):
    x = keras.Input(shape, name="x")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")          # rms_scaling is deprecated
        ln = L.LayerNormalization(name=name, **opts)
    m = keras.Model(x, L.Dense(3)(ln(L.Dense(shape[-1])(x))))
    return keras_parity(m, tmp_path, {"x": feed}, {"x": feed * 0.5 + 4.0})   # an offset feed too


@pytest.mark.parametrize("opts", [{}, {"epsilon": 1e-5}, {"center": False}, {"scale": False},
                                  {"center": False, "scale": False}])
def test_layer_normalization_last_axis(tmp_path, opts):
    imp, ops = _ln(tmp_path, (None, 6), floats(3, 5, 6, scale=2.0), **opts)
    assert ops["LayerNormalization"] == 1 and ops["ReduceMean"] == 0
    layer = imp.compiled.graph.layers["ln"]
    want = [k for k, on in (("gamma", opts.get("scale", True)), ("beta", opts.get("center", True))) if on]
    assert list(layer.params) == want and all(s == (6,) for s in layer.params.values())
    node = next(n for n in imp.compiled.model.graph.node if n.op_type == "LayerNormalization")
    assert len(node.input) == (3 if opts.get("center", True) else 2)
    assert "axis" not in imp.spec_text                       # Keras's [-1] is the default -1


@pytest.mark.parametrize("shape,axis,fused", [((5, 6), [1, 2], True), ((5, 6), [-2, -1], True),
                                               ((5, 6), [-1, 1], False),       # sorted as written: gamma (6, 5)
                                               ((3, 5, 4), [2, 3], True), ((3, 5, 4), [1, 2, 3], True),
                                               ((3, 5, 4), [1, 3], False), ((3, 5, 4), -1, True)])
@pytest.mark.parametrize("center,scale", [(True, True), (False, True), (True, False)])
def test_layer_normalization_axes(tmp_path, shape, axis, fused, center, scale):
    feed = floats(2, *shape, scale=2.0)
    imp, ops = _ln(tmp_path, shape, feed, axis=axis, center=center, scale=scale)
    assert ops["LayerNormalization"] == (1 if fused else 0)
    assert ops["ReduceMean"] == (0 if fused else 2)
    written = sorted([axis] if isinstance(axis, int) else axis)
    assert all(s == tuple(shape[a - 1 if a > 0 else a] for a in written)
               for s in imp.compiled.graph.layers["ln"].params.values())


@pytest.mark.parametrize("opts", [{}, {"scale": False, "center": False}, {"axis": [1, 2]}])
def test_layer_normalization_rms_scaling(tmp_path, opts):
    # deprecated in Keras 3: x / sqrt(var + eps) * gamma, no centring; gamma even with scale=False, no beta
    imp, ops = _ln(tmp_path, (5, 6), floats(2, 5, 6, scale=2.0), rms_scaling=True, **opts)
    assert ops["LayerNormalization"] == 0 and ops["ReduceMean"] == 2 and ops["Sqrt"] == 1
    layer = imp.compiled.graph.layers["ln"]
    assert list(layer.params) == ["gamma"] and "rms_scaling" in layer.notes[0]


def test_layer_normalization_passes_the_mask(tmp_path):
    x = keras.Input((None, 3), name="x")
    y = L.LSTM(4)(L.LayerNormalization(axis=-1)(L.Dense(5)(L.Masking()(x))))
    _, ops = keras_parity(keras.Model(x, y), tmp_path, {"x": masked_floats(5, 6, 3)})
    assert ops["LSTM"] == 1 and ops["If"] == 1 and ops["LayerNormalization"] == 1


SPEC = """rnnc: 1
inputs: {x: {shape: [batch, 5, 4]}}
layers:
  - {type: LayerNormalization, name: ln, axis: AXIS}
"""


def test_layer_normalization_inner_axes():
    # axes that are contiguous but not the last ones: Keras's torch backend hands them to
    # F.layer_norm, which normalizes the LAST axes instead (an error unless the sizes agree);
    # rnnc computes what Keras documents (and its other backends compute): moments over the axes
    spec = load_spec_text(SPEC.replace("AXIS", "1"))
    c = rnnc.compile_spec(spec, weights=random_weights(build_graph(spec)))
    x = floats(3, 5, 4, scale=2.0) + 1.0
    xd = x.astype(np.float64)
    g, b = (c.weights[f"ln/{k}"].astype(np.float64).reshape(1, 5, 1) for k in ("gamma", "beta"))
    mean = xd.mean(axis=1, keepdims=True)
    want = (xd - mean) / np.sqrt(xd.var(axis=1, keepdims=True) + 1e-3) * g + b
    for got in (run_ort(c.model, {"x": x}), run_onnx_reference(c.model, {"x": x}), run_reference(c.graph, c.weights, {"x": x})):
        assert float(np.max(np.abs(next(iter(got.values())) - want))) <= TOL
    assert op_counts(c.model)["LayerNormalization"] == 0


@pytest.mark.parametrize("axis,message", [("0", "not the batch axis"), ("3", "expected distinct axes"),
                                          ("[1, -2]", "expected distinct axes"), ("x", "expected an integer")])
def test_layer_normalization_bad_axis(axis, message):
    with pytest.raises(SpecError, match=rf"<spec>:4: layers\[0\]\.axis: .*{message}"):
        rnnc.compile_spec(load_spec_text(SPEC.replace("AXIS", axis)))


def test_layer_normalization_needs_fixed_sizes():
    spec = SPEC.replace("[batch, 5, 4]", "[batch, time, 4]").replace("AXIS", "[1, 2]")
    with pytest.raises(SpecError, match="LayerNormalization needs a fixed size on axis 1"):
        rnnc.compile_spec(load_spec_text(spec))


# -- BatchNormalization (any axis, 3-D and 4-D) ----------------------------------------------

@pytest.mark.parametrize("shape,axis", [((5, 4), -1), ((5, 4), 1), ((3, 5, 4), -1), ((3, 5, 4), 1),
                                        ((3, 5, 4), 2), ((3, 5, 4), 3), ((3, 5, 4), -3)])
@pytest.mark.parametrize("center,scale", [(True, True), (False, True), (True, False), (False, False)])
def test_batch_normalization_axes(tmp_path, shape, axis, center, scale):
    x = keras.Input(shape, name="x")
    bn = L.BatchNormalization(axis=axis, center=center, scale=scale, epsilon=0.01, name="bn")
    m = keras.Model(x, L.Dense(2)(bn(x)))
    imp, ops = keras_parity(m, tmp_path, {"x": floats(2, *shape, scale=2.0)})
    assert ops["Mul"] == 1 and ops["Add"] == 2                # folded: x * scale + shift (and Dense's bias)
    size = shape[axis - 1 if axis > 0 else axis]
    assert all(v.shape == (size,) for k, v in imp.compiled.weights.items() if k.startswith("bn/"))


def test_batch_normalization_passes_the_mask(tmp_path):
    x = keras.Input((None, 3), name="x")
    y = L.GRU(4)(L.BatchNormalization()(L.Masking()(x)))
    _, ops = keras_parity(keras.Model(x, y), tmp_path, {"x": masked_floats(5, 6, 3)})
    assert ops["GRU"] == 1 and ops["If"] == 1
