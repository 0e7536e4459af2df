"""`--verify`: run the source framework and ONNX Runtime on the same random input and report
the largest difference.

Keras: the `.keras` file is loaded with `keras.saving.load_model(path, safe_mode=True)`, only
when the user asks for verification and Keras is installed (the importer itself never loads
it). PyTorch: a state_dict has no architecture, so the equivalent torch modules are built from
the spec (rnnc/importers/torch_verify.py) where the spec is a plain stack.

The random input exercises masks: where a Masking layer or an Embedding with mask_zero reads
a model input, some rows get right padding, left padding and a hole."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import RnncError
from ..ir.graph import Graph

TOLERANCE = 1e-4


class VerifyUnavailable(Exception):
    """Verification cannot run here (framework missing, model shape not covered): the reason."""


class VerifyFailed(RnncError):
    kind = "verify error"


@dataclass
class Report:
    framework: str
    dims: dict[str, int]
    diffs: dict[str, float] = field(default_factory=dict)
    calls: int = 1

    @property
    def max_diff(self) -> float:
        return max(self.diffs.values(), default=0.0)

    def text(self) -> str:
        dims = ", ".join(f"{k} {v}" for k, v in self.dims.items())
        lines = [f"verify: {self.framework} vs ONNX Runtime on the same random input ({dims}"
                 + (f", {self.calls} stateful calls" if self.calls > 1 else "") + f"): max abs difference "
                 f"{self.max_diff:.3g}"]
        if len(self.diffs) > 1:
            lines += [f"  {k}: {v:.3g}" for k, v in self.diffs.items()]
        return "\n".join(lines)

    def check(self, tol: float = TOLERANCE) -> None:
        if not self.max_diff <= tol:
            raise VerifyFailed(f"{self.text()}\nthe difference is above {tol:g}: please report this model "
                               "(nothing was written)")


def random_feeds(graph: Graph, *, batch: int = 3, time: int = 7, seed: int = 0) -> tuple[dict, dict[str, int]]:
    """Random inputs for `graph`, with masked steps where a mask is computed from an input."""
    rng = np.random.default_rng(seed)
    sizes: dict[str, int] = {}
    feeds: dict[str, np.ndarray] = {}
    for name, t in graph.inputs.items():
        shape = []
        for i, d in enumerate(t.dims):
            if isinstance(d, int):
                shape.append(d)
            else:
                shape.append(sizes.setdefault(d, batch if d == "batch" else time if i == 1 else 4))
        readers = [l for l in graph.layers.values() if any(r.layer == name and r.port == "input" for r in l.inputs)]
        if t.dtype.startswith("int"):
            high = min([l.config["input_dim"] for l in readers if l.kind == "Embedding"] or [10])
            a = rng.integers(1 if high > 1 else 0, max(high, 1), size=shape)
            if any(l.kind == "Embedding" and l.config["mask_zero"] for l in readers):
                _pad(a, 0)
            feeds[name] = a.astype(t.dtype)
        else:
            a = rng.standard_normal(shape).astype(np.float32)
            for l in readers:
                if l.kind == "Masking":
                    a[a == l.config["mask_value"]] += 0.5
                    _pad(a, l.config["mask_value"])
            feeds[name] = a
    return feeds, sizes


def _pad(a: np.ndarray, value: float) -> None:
    """Row 1: right padding; row 2: left padding and a hole (where the shape allows)."""
    if a.ndim < 2 or a.shape[1] < 4:
        return
    T = a.shape[1]
    if a.shape[0] > 1:
        a[1, T - 2:] = value
    if a.shape[0] > 2:
        a[2, :1] = value
        a[2, T // 2] = value


def compare_outputs(names: list[str], got: list[np.ndarray], want: list[np.ndarray], report: Report, suffix: str = "") -> None:
    """Record each output's max |ONNX Runtime - source| in report.diffs (shared by the Keras
    and PyTorch verifiers); VerifyFailed if the outputs' count or shapes differ."""
    if len(got) != len(want):
        raise VerifyFailed(f"verify: the source model gives {len(want)} outputs, the compiled model {len(got)}")
    for n, g, w in zip(names, got, want):
        w = np.asarray(w)
        if g.shape != w.shape:
            raise VerifyFailed(f"verify: output {n}{suffix}: shape {g.shape} from ONNX Runtime, {w.shape} from the "
                               "source model")
        d = float(np.max(np.abs(g.astype(np.float64) - w))) if w.size else 0.0
        report.diffs[n] = max(report.diffs.get(n, 0.0), d)


def verify_keras(path: str, compiled: Any, *, batch: int = 3, time: int = 7, seed: int = 0) -> Report:
    """Load the .keras file with Keras (safe_mode), run it and the compiled model."""
    os.environ.setdefault("KERAS_BACKEND", "torch")
    try:
        import keras
    except Exception as e:  # noqa: BLE001 - not installed, or no usable backend
        raise VerifyUnavailable(f"Keras is not usable here ({type(e).__name__}: {e})") from None
    from ..runtime import Session  # lazy: onnxruntime

    try:
        model = keras.saving.load_model(path, safe_mode=True, compile=False)
    except Exception as e:  # noqa: BLE001 - whatever Keras raises for this file
        raise VerifyUnavailable(f"Keras could not load {path} in safe mode ({type(e).__name__}: {e})") from None
    graph = compiled.graph
    feeds, sizes = random_feeds(graph, batch=batch, time=time, seed=seed)
    sess = Session(compiled, providers="cpu")
    names = list(sess.output_names)
    report = Report(f"Keras {keras.__version__} ({keras.backend.backend()} backend)", sizes)
    calls = 2 if sess.stateful else 1
    report.calls = calls
    for call in range(calls):
        part = feeds if calls == 1 else {k: (_half(v, call) if _timed(graph, k) else v) for k, v in feeds.items()}
        ordered = list(part.values()) if len(part) == 1 else [part[_input_name(t)] for t in model.inputs]
        y = model(ordered[0] if len(ordered) == 1 else ordered, training=False)
        want = [np.asarray(keras.ops.convert_to_numpy(t)) for t in keras.tree.flatten(y)]
        got = sess.run(part)
        compare_outputs(names, [got[n] for n in names], want, report)
    return report


def _input_name(t: Any) -> str:
    name = getattr(t, "name", "")
    return name.split(":")[0]


def _timed(graph: Graph, name: str) -> bool:
    dims = graph.inputs[name].dims
    return len(dims) > 1 and isinstance(dims[1], str)


def _half(a: np.ndarray, call: int) -> np.ndarray:
    mid = a.shape[1] // 2
    return a[:, :mid] if call == 0 else a[:, mid:]
