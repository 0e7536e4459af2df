"""Shared test helpers: random weights, random inputs, and the parity check that every
lowering test uses (ONNX Runtime and onnx.reference against rnnc/reference.py)."""
from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import onnxruntime as ort
from onnx.reference import ReferenceEvaluator

import rnnc
from rnnc.ir import Graph
from rnnc.pipeline import prepare
from rnnc.reference import run_reference
from rnnc.spec import load_spec_text
from rnnc.weights import expected_params

TOL = 1e-5
RNN_OPS = ("LSTM", "GRU", "RNN")
TIME_LOOPS = ("Loop", "Scan")   # a time loop is an ONNX Scan by default, a Loop with control="loop"


def time_loops(counts: Counter) -> int:
    return sum(counts[o] for o in TIME_LOOPS)


def random_weights(graph: Graph, seed: int = 0, scale: float = 0.4) -> dict[str, np.ndarray]:
    """Random weights for every parameter, biases and BN statistics included (never zeros)."""
    rng = np.random.default_rng(seed)
    out = {}
    for key, shape in expected_params(graph).items():
        v = rng.normal(0.0, scale, size=shape)
        if key.endswith("moving_variance"):
            v = np.abs(v) + 0.5
        out[key] = v.astype(np.float32)
    return out


def random_feeds(graph: Graph, dims: dict[str, int] | None = None, seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    dims = {"batch": 3, "time": 5, **(dims or {})}
    feeds = {}
    for name, t in graph.inputs.items():
        # other symbolic dims (a second input's own time, `source_time`): 4 unless given
        shape = [d if isinstance(d, int) else dims.get(d, 4) for d in t.dims]
        if t.dtype.startswith("int"):
            feeds[name] = rng.integers(1, 20, size=shape).astype(t.dtype)
        else:
            feeds[name] = rng.normal(size=shape).astype(np.float32)
    return feeds


def op_counts(model: onnx.ModelProto) -> Counter:
    """Op types in the model, subgraphs (Loop/If bodies) included."""
    counts: Counter = Counter()

    def walk(g: onnx.GraphProto) -> None:
        for n in g.node:
            counts[n.op_type] += 1
            for a in n.attribute:
                if a.type == onnx.AttributeProto.GRAPH:
                    walk(a.g)
    walk(model.graph)
    return counts


def top_counts(model: onnx.ModelProto) -> Counter:
    return Counter(n.op_type for n in model.graph.node)


def run_ort(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(None, feeds)))


def run_onnx_reference(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    ev = ReferenceEvaluator(model)
    names = [o.name for o in model.graph.output]
    return dict(zip(names, ev.run(None, feeds)))


def assert_close(got: dict, want: dict, tol: float = TOL, what: str = "", rtol: float = 0.0) -> None:
    """|got - want| <= tol + rtol * |want| everywhere (rtol: only for values that grow without
    bound, where float32's error grows with them; each use says why)."""
    assert list(got) == list(want), f"{what}: outputs {list(got)} != {list(want)}"
    for k in want:
        assert got[k].shape == want[k].shape, f"{what} {k}: shape {got[k].shape} != {want[k].shape}"
        if not want[k].size:
            continue
        excess = np.abs(got[k].astype(np.float64) - want[k]) - (tol + rtol * np.abs(want[k]))
        err = float(np.max(np.abs(got[k].astype(np.float64) - want[k])))
        assert float(np.max(excess)) <= 0, f"{what} {k}: max abs error {err:.3g} > {tol} (rtol {rtol})"


def compile_text(text: str, *, weights: dict | None = None, seed: int = 0, target: str = "ort",
                 provider: str = "cpu"):
    spec = load_spec_text(text, "test.yaml")
    graph, _ = prepare(spec)
    w = weights if weights is not None else random_weights(graph, seed)
    return rnnc.compile_spec(spec, weights=w, target=target, provider=provider)


def check_parity(text: str, *, native: int | None = None, loops: int | None = None, feeds=None,
                 dims: dict | None = None, weights: dict | None = None, target: str = "ort",
                 onnx_reference: bool = True, tol: float = TOL, rtol: float = 0.0, provider: str = "cpu"):
    """Compile `text`, run it on ONNX Runtime (and onnx.reference), compare with the NumPy
    reference, and assert the lowering path: `native` RNN-op count and `loops` time-loop count.
    provider: the one the model is compiled for (it is run on the CPU here)."""
    c = compile_text(text, weights=weights, target=target, provider=provider)
    onnx.checker.check_model(c.model, full_check=True)
    feeds = feeds if feeds is not None else random_feeds(c.graph, dims)
    want = run_reference(c.graph, c.weights, feeds)
    got = run_ort(c.model, feeds)
    assert_close(got, want, tol, "onnxruntime", rtol)
    counts = op_counts(c.model)
    if native is not None:
        assert sum(counts[o] for o in RNN_OPS) == native, f"native ops: {counts}"
    if loops is not None:
        assert time_loops(counts) == loops, f"time loops: {counts}"
    if onnx_reference:
        assert_close(run_onnx_reference(c.model, feeds), want, tol, "onnx.reference", rtol)
    return c, got, want


def assert_streams_like_whole(compiled, x: np.ndarray, output: str, cuts: tuple[int, ...], tol: float = TOL) -> None:
    """A stateful model run on x in chunks (cut at `cuts` along time) ends where one run on the
    whole of x ends (Keras's stateful semantics: the states carry over between calls)."""
    whole = rnnc.Session(compiled, providers="cpu").run({"x": x})[output]
    s = rnnc.Session(compiled, providers="cpu")
    bounds = (0, *cuts, x.shape[1])
    parts = [s.run({"x": x[:, a:b]})[output] for a, b in zip(bounds, bounds[1:])]
    assert np.max(np.abs(parts[-1] - whole)) <= tol
