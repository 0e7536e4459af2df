"""Measured lowering choice: `rnnc compile --tune` and tools/measure_costs.py time candidate
models here (only rnnc/runtime/ imports onnxruntime).

`time_models` times whole models, interleaved over rounds, one session alive at a time (an
idle session's thread pool spins and steals the cores from the one being timed); the first
round only warms up. `tune` compiles the spec once per candidate lowering of each layer that
has more than one exact candidate, greedily (layer by layer, the others kept at their best so
far), times the whole model on random inputs at the spec's shapes (symbolic dims from `dims`,
else batch 32, time 50, others 4), and returns the compiled model with the fastest choices,
each plan recording the candidates' measured times (cost_source "tuned")."""
from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import onnxruntime as ort

from ..errors import RnncError

DEFAULT_DIMS = {"batch": 32, "time": 50}
OTHER_DIM = 4


def _session(model: bytes, threads: int | None, provider: str) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.log_severity_level = 3
    if threads:
        so.intra_op_num_threads = threads
    providers = (["CUDAExecutionProvider", "CPUExecutionProvider"] if provider == "cuda"
                 else ["CPUExecutionProvider"])
    return ort.InferenceSession(model, so, providers=providers)


def _median_run(sess: ort.InferenceSession, feeds: dict, repeat: int, warmup: int) -> float:
    for _ in range(warmup):
        sess.run(None, feeds)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        sess.run(None, feeds)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def time_models(models: Mapping[str, bytes], feeds: dict, *, repeat: int = 10, rounds: int = 3,
                threads: int | None = None, provider: str = "cpu", warmup: int = 3,
                stat: str = "median") -> dict[str, float]:
    """Seconds per run of each model: the median run of each of `rounds` interleaved rounds
    (plus one warm-up round that is not counted), then the median of the rounds, or with
    stat="min" the fastest round (the least disturbed, on a shared machine)."""
    times: dict[str, list[float]] = {k: [] for k in models}
    for r in range(rounds + 1):
        for k, m in models.items():
            s = _session(m, threads, provider)
            t = _median_run(s, feeds, repeat if r else max(1, repeat // 3), warmup)
            if r:
                times[k].append(t)
            del s
            gc.collect()
    agg = min if stat == "min" else statistics.median
    return {k: agg(v) for k, v in times.items()}


def random_feeds(graph: Any, dims: Mapping[str, int] | None = None, seed: int = 0) -> dict[str, np.ndarray]:
    """Random inputs at the graph's input shapes; symbolic dims from `dims`, else batch 32,
    time 50 (DEFAULT_DIMS), others 4. Integer inputs (token ids) are drawn in 0..9 so that
    any Embedding accepts them."""
    rng = np.random.default_rng(seed)
    size = {**DEFAULT_DIMS, **(dims or {})}
    feeds = {}
    for name, t in graph.inputs.items():
        shape = [d if isinstance(d, int) else size.get(d, OTHER_DIM) for d in t.dims]
        if t.dtype.startswith("int"):
            feeds[name] = rng.integers(0, 10, size=shape).astype(np.dtype(t.dtype))
        elif t.dtype == "bool":
            feeds[name] = np.ones(shape, bool)
        else:
            feeds[name] = rng.standard_normal(shape).astype(np.float32)
    return feeds


def tune(compile_fn: Callable[..., Any], *, dims: Mapping[str, int] | None = None, provider: str = "cpu",
         repeat: int = 5, rounds: int = 2, threads: int | None = None,
         log: Callable[[str], None] | None = None) -> Any:
    """Compile with the fastest measured lowering per layer. `compile_fn(overrides=...)`
    compiles the spec with `overrides` ({layer: (strategy, candidates, cost_source, note)}, see
    rnnc/passes/choose_lowering.py); without overrides it gives the cost model's plans, whose
    `candidates` list every exact alternative."""
    base = compile_fn(overrides=None)
    feeds = random_feeds(base.graph, dims)
    choice: dict[str, str] = {}
    options: dict[str, list[str]] = {}
    for layer in base.graph.layers.values():
        plan = layer.plan
        if plan is not None and len(plan.candidates) > 1:
            options[layer.name] = [name for name, _ in plan.candidates]
            choice[layer.name] = plan.strategy
    if not options:
        return base
    size = {**DEFAULT_DIMS, **(dims or {})}
    shapes = ", ".join(f"{k} {v}" for k, v in size.items())
    measured: dict[str, dict[str, float]] = {}
    for name, cands in options.items():       # greedy: one layer at a time, the others at their best so far
        models = {}
        for cand in cands:
            over = {k: (choice[k] if k != name else cand, (), "", "") for k in options}
            try:
                models[cand] = compile_fn(overrides=over).serialize()
            except RnncError:                  # a candidate that does not compile is not one
                continue
        times = time_models(models, feeds, repeat=repeat, rounds=rounds, threads=threads, provider=provider)
        measured[name] = times
        choice[name] = min(times, key=times.__getitem__)
        if log:
            log(f"tune {name}: " + ", ".join(f"{k} {v * 1e3:.2f} ms" for k, v in times.items())
                + f" -> {choice[name]}")
    note = f"measured whole-model time at {shapes}"
    final = {k: (choice[k], tuple((c, round(t * 1e3, 3)) for c, t in measured[k].items()), "tuned", note)
             for k in options}
    return compile_fn(overrides=final)
