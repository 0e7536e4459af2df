"""Keras 3's default initializers, seeded, so a spec without weights is reproducible.
Each parameter draws from its own generator (seed, key), so adding a layer does not change
the others' values."""
from __future__ import annotations

import zlib

import numpy as np

from ..ir.graph import Graph, Layer
from ..layers import LAYER_DEFS


def _rng(seed: int, key: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(key.encode())])


def fans(shape: tuple[int, ...]) -> tuple[int, int]:
    """Keras's compute_fans: rank 1 uses its size for both; rank > 2 scales by the receptive field."""
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return shape[0], shape[0]
    receptive = int(np.prod(shape[:-2])) if len(shape) > 2 else 1
    return shape[-2] * receptive, shape[-1] * receptive


CHUNK = 1 << 20    # values drawn at a time in float64 before the cast (the draws are the same)


def _drawn32(draw, shape: tuple[int, ...]) -> np.ndarray:
    """draw(n) (n float64 values from the generator, in order) into a float32 array of `shape`,
    a chunk at a time: the same values as draw(size).astype(float32), without a float64 copy
    of a large parameter (an Embedding's table)."""
    out = np.empty(shape, dtype=np.float32)
    flat = out.reshape(-1)
    for i in range(0, flat.size, CHUNK):
        flat[i:i + CHUNK] = draw(min(CHUNK, flat.size - i))
    return out


def glorot_uniform(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    fan_in, fan_out = fans(shape)
    limit = np.sqrt(6.0 / (fan_in + fan_out))
    return _drawn32(lambda n: rng.uniform(-limit, limit, size=n), shape)


def glorot_normal(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Keras: truncated normal (within 2 stddev) with stddev sqrt(2 / (fan_in + fan_out)) / 0.8796..."""
    fan_in, fan_out = fans(shape)
    std = np.sqrt(2.0 / (fan_in + fan_out)) / 0.87962566103423978
    v = rng.normal(0.0, std, size=shape)
    bad = np.abs(v) > 2 * std
    while bad.any():
        v[bad] = rng.normal(0.0, std, size=int(bad.sum()))
        bad = np.abs(v) > 2 * std
    return v


def orthogonal(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    rows, cols = int(np.prod(shape[:-1])), shape[-1]
    a = rng.normal(size=(max(rows, cols), min(rows, cols)))
    q, r = np.linalg.qr(a)
    q = q * np.sign(np.diag(r))
    if rows < cols:
        q = q.T
    return q.reshape(shape)


def _recurrent_inits(layer: Layer, prefix: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for cell in layer.cells:
        for name in cell.params:
            key = cell.prefix + name
            if cell.custom:   # the cell definition names its initializers
                out[prefix + key] = cell.inits[name]
                continue
            init = {"kernel": "glorot_uniform", "recurrent_kernel": "orthogonal"}.get(name, "zeros")
            if name == "bias" and cell.kind in ("LSTM", "ConvLSTM") and cell.config.get("unit_forget_bias", True):
                init = f"unit_forget_bias:{cell.units}"
            out[prefix + key] = init
    return out


# Keras's defaults for the common parameter names (a LayerDef lists its own exceptions)
COMMON_INITS = {"embeddings": "uniform", "kernel": "glorot_uniform", "bias": "zeros", "gamma": "ones",
                "beta": "zeros", "moving_mean": "zeros", "moving_variance": "ones"}


def initializers(layer: Layer) -> dict[str, str]:
    """Param key (under `<layer>/`) → Keras default initializer name."""
    if layer.wrapped is not None:   # TimeDistributed: its parameters are its layer's
        return initializers(layer.wrapped)
    if layer.sublayers:
        out: dict[str, str] = {}
        for half in layer.sublayers:
            out.update(_recurrent_inits(half, f"{half.name}/"))
        return out
    if layer.cells:
        return _recurrent_inits(layer, "")
    ldef = LAYER_DEFS.get(layer.kind)
    own = ldef.initializers if ldef is not None else {}
    out = {}
    for k in layer.params:
        name = k.rsplit("/", 1)[-1]          # MultiHeadAttention's: query/kernel, ...
        out[k] = own.get(name) or COMMON_INITS.get(name) or ("glorot_uniform" if name.endswith("kernel") else "zeros")
    return out


def init_param(init: str, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    if init == "glorot_uniform":
        v = glorot_uniform(shape, rng)
    elif init == "orthogonal":
        v = orthogonal(shape, rng)
    elif init == "glorot_normal":
        v = glorot_normal(shape, rng)
    elif init == "uniform":  # keras.initializers.RandomUniform(-0.05, 0.05)
        v = _drawn32(lambda n: rng.uniform(-0.05, 0.05, size=n), shape)
    elif init == "normal":   # keras.initializers.RandomNormal(0, 0.05)
        v = _drawn32(lambda n: rng.normal(0.0, 0.05, size=n), shape)
    elif init == "ones":
        v = np.ones(shape, dtype=np.float32)
    elif init.startswith("unit_forget_bias:"):  # zeros, with ones on the forget gate (i f c o)
        u = int(init.split(":")[1])
        v = np.zeros(shape)
        v[u:2 * u] = 1.0
    else:
        v = np.zeros(shape, dtype=np.float32)
    return v.astype(np.float32, copy=False)


def default_weights(graph: Graph, seed: int) -> dict[str, np.ndarray]:
    weights: dict[str, np.ndarray] = {}
    for layer in graph.layers.values():
        inits = initializers(layer)
        for key, shape in layer.params.items():
            full = f"{layer.name}/{key}"
            weights[full] = init_param(inits[key], shape, _rng(seed, full))
    return weights
