"""The check every Keras layer test uses: a Keras 3 model (torch backend) with random non-zero
weights, saved as .keras, imported by rnnc (`rnnc import keras`'s code path), and run on ONNX
Runtime, onnx.reference and rnnc's NumPy reference, each against Keras's own output."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

keras = pytest.importorskip("keras")
pytest.importorskip("torch")
pytest.importorskip("h5py")

from helpers import TOL, op_counts, run_onnx_reference, run_ort  # noqa: E402
from rnnc.importers import import_keras  # noqa: E402
from rnnc.reference import run_reference  # noqa: E402

MASK = np.array([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0], [0, 0, 1, 1, 1, 1], [1, 0, 1, 0, 1, 1],
                 [0, 0, 0, 0, 0, 0]], dtype=bool)   # rows: full, right-padded, left-padded, holes, all masked


def randomize(model, seed: int = 0) -> None:
    """Random non-zero weights (variances positive)."""
    rng = np.random.default_rng(seed)
    for v in model.weights:
        a = rng.normal(0.0, 0.4, size=tuple(v.shape))
        if "variance" in v.path:
            a = np.abs(a) + 0.5
        v.assign(a.astype(np.float32))


def keras_out(model, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    args = [feeds[t.name] for t in model.inputs] if len(model.inputs) > 1 else [next(iter(feeds.values()))]
    y = model(args[0] if len(args) == 1 else args, training=False)
    return [np.asarray(keras.ops.convert_to_numpy(t)) for t in keras.tree.flatten(y)]


def _compare(got: dict, want: list[np.ndarray], tol: float, what: str) -> None:
    assert len(got) == len(want), f"{what}: outputs {list(got)} vs {len(want)} from Keras"
    for (name, g), w in zip(got.items(), want):
        assert g.shape == w.shape, f"{what} {name}: shape {g.shape} != Keras {w.shape}"
        err = float(np.max(np.abs(g.astype(np.float64) - w))) if w.size else 0.0
        assert err <= tol, f"{what} {name}: max abs error {err:.3g} > {tol}"


def keras_parity(model, tmp_path, *feeds: dict[str, np.ndarray], seed: int = 0, tol: float = TOL,
                 randomize_weights: bool = True) -> tuple[object, Counter]:
    """Import `model` and compare every runtime with Keras on each feed. Returns (the import
    result, op counts of the compiled model, subgraphs included)."""
    if randomize_weights:
        randomize(model, seed)
    path = tmp_path / "model.keras"
    model.save(path)
    imp = import_keras(path)
    c = imp.compiled
    for f in feeds:
        want = keras_out(model, f)
        _compare(run_ort(c.model, f), want, tol, f"onnxruntime\n{imp.spec_text}")
        _compare(run_onnx_reference(c.model, f), want, tol, f"onnx.reference\n{imp.spec_text}")
        ref = run_reference(c.graph, c.weights, f)
        _compare({k: ref[k] for k in list(ref)[:len(want)]}, want, tol, f"rnnc reference\n{imp.spec_text}")
    return imp, op_counts(c.model)


def floats(*shape: int, seed: int = 1, scale: float = 1.0) -> np.ndarray:
    return (np.random.default_rng(seed).normal(size=shape) * scale).astype(np.float32)


def masked_floats(b: int, t: int, f: int, seed: int = 1, mask_value: float = 0.0) -> np.ndarray:
    """(b, t, f) floats whose rows follow MASK (cycled): steps equal to mask_value are masked."""
    x = floats(b, t, f, seed=seed)
    x[x == mask_value] += 0.5
    m = np.resize(MASK[:, :t], (b, t)) if t <= MASK.shape[1] else np.ones((b, t), bool)
    x[~m] = mask_value
    return x
