"""Activation layers and the layers that are identity at inference, against Keras 3."""
from __future__ import annotations

import pytest

from keras_parity import floats, keras, keras_parity, masked_floats

L = keras.layers
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
