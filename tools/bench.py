"""Benchmarks, printed as ratios against a baseline measured in the same run (never timed
tests: machines here are shared and noisy).

    python tools/bench.py [stateful] [loop] [masked] [--repeat N] [--threads N]

stateful: the per-chunk cost of rnnc.Session carrying the states of LSTM(64) at chunk 100,
          batch 20, against a plain onnxruntime.InferenceSession.run fed the states by hand.
loop:     native LSTM op vs RNN(LSTMCell) through a time loop (ONNX Loop with and without the
          hoisted input projection, and the default ONNX Scan) and the same LSTM as a custom cell
          (Loop and Scan) at two shapes (batch, time, input, units).
masked:   Masking + LSTM: the native op with sequence_lens (right-padded batch), the exact time
          loop (holes), and lowering: loop, against the unmasked native op."""
from __future__ import annotations

import argparse
import functools
import gc
import statistics
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import yaml

import rnnc
from rnnc.cells.gates import permute_gates
from rnnc.spec import load_spec_text


def median_time(fn, repeat: int, warmup: int = 10) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def options(threads: int) -> ort.SessionOptions:
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    return so


def rounds(models: dict[str, bytes], feeds: dict, repeat: int, threads: int, n: int = 5) -> dict[str, float]:
    """Median time per variant over `n` rounds. Only one session lives at a time (an idle
    session's thread pool spins and would steal the cores from the one being timed), and the
    rounds interleave the variants so that drift on a shared machine hits them alike."""
    times: dict[str, list[float]] = {k: [] for k in models}
    for r in range(n + 1):
        for k, m in models.items():
            s = ort.InferenceSession(m, options(threads), providers=["CPUExecutionProvider"])
            t = median_time(functools.partial(s.run, None, feeds), repeat)
            if r:                       # round 0 only warms up (CPU clocks, allocator, caches)
                times[k].append(t)
            del s
            gc.collect()
    return {k: statistics.median(v) for k, v in times.items()}


def bench_stateful(repeat: int, threads: int) -> None:
    spec = load_spec_text("rnnc: 1\ninputs: {x: {shape: [20, time, 32]}}\nlayers:\n"
                          "  - {type: LSTM, name: lstm, units: 64, stateful: true, return_sequences: true}\n")
    c = rnnc.compile_spec(spec)
    x = np.random.default_rng(0).normal(size=(20, 100, 32)).astype(np.float32)
    sess = rnnc.Session(c, providers="cpu", threads=threads)
    plain = ort.InferenceSession(c.model.SerializeToString(), options(threads), providers=["CPUExecutionProvider"])
    sess._sess = ort.InferenceSession(c.model.SerializeToString(), options(threads),  # same options as `plain`
                                      providers=["CPUExecutionProvider"])
    states = {"lstm/state_h_in": np.zeros((20, 64), np.float32), "lstm/state_c_in": np.zeros((20, 64), np.float32)}

    def by_hand():
        _, h, cc = plain.run(None, {"x": x, **states})
        states["lstm/state_h_in"], states["lstm/state_c_in"] = h, cc

    # interleave the two, several rounds, so drift on a shared machine hits both alike; the
    # first round only warms up (thread pools, caches, CPU clocks) and is not counted
    t_plain, t_rnnc = [], []
    median_time(by_hand, repeat)
    median_time(lambda: sess.run({"x": x}), repeat)
    for _ in range(5):
        t_plain.append(median_time(by_hand, repeat))
        t_rnnc.append(median_time(lambda: sess.run({"x": x}), repeat))
    a, b = statistics.median(t_plain), statistics.median(t_rnnc)
    print(f"stateful LSTM(64), chunk 100, batch 20 (CPU, {threads} threads)")
    print(f"  onnxruntime run, states by hand : {a * 1e3:8.3f} ms/chunk")
    print(f"  rnnc.Session.run (carried)      : {b * 1e3:8.3f} ms/chunk   ratio {b / a:.3f}")


CELL_SPEC = Path(__file__).resolve().parents[1] / "specs" / "lstm_custom_cell.yaml"


def custom_lstm(inp: int, units: int) -> str:
    """The spec of specs/lstm_custom_cell.yaml's cell (an LSTM as equations) over `inp` features."""
    cells = yaml.safe_load(CELL_SPEC.read_text())["cells"]
    return yaml.safe_dump({"rnnc": 1, "inputs": {"x": {"shape": ["batch", "time", inp]}}, "cells": cells,
                           "layers": [{"type": "RNN", "name": "l", "return_sequences": True,
                                       "cell": {"type": "StepLSTM", "units": units}}]}, sort_keys=False)


def bench_loop(repeat: int, threads: int) -> None:
    """Native LSTM op vs the Loop: RNN(LSTMCell) without and with the hoisted input projection,
    and the same LSTM written as a custom cell in the step language (hoisted by the pass)."""
    shapes = [(64, 100, 256, 512), (64, 28, 28, 64)]
    for batch, steps, inp, units in shapes:
        head = f"rnnc: 1\ninputs: {{x: {{shape: [batch, time, {inp}]}}}}\n"
        lstm = head + f"layers:\n  - {{type: LSTM, name: l, units: {units}, return_sequences: true, lowering: LOW}}\n"
        cell = custom_lstm(inp, units)
        base = rnnc.compile_spec(load_spec_text(lstm.replace("LOW", "native")))
        # the custom cell's gates are ordered i f o c: the same weights, permuted
        w_custom = {k: permute_gates(v, "keras_lstm", "rnnc_lstm") for k, v in base.weights.items()}
        loop = load_spec_text(lstm.replace("LOW", "loop"))
        variants = {
            "native LSTM op": rnnc.compile_spec(load_spec_text(lstm.replace("LOW", "native"))),
            "Loop, no hoisting": rnnc.compile_spec(loop, weights=base.weights, hoist=False, control="loop"),
            "Loop, hoisted projection": rnnc.compile_spec(loop, weights=base.weights, control="loop"),
            "Scan, hoisted (RNN(LSTMCell))": rnnc.compile_spec(loop, weights=base.weights),
            "custom cell, Loop": rnnc.compile_spec(load_spec_text(cell), weights=w_custom, control="loop"),
            "custom cell (default: Scan)": rnnc.compile_spec(load_spec_text(cell), weights=w_custom),
        }
        x = np.random.default_rng(0).normal(size=(batch, steps, inp)).astype(np.float32)
        ref = ort.InferenceSession(variants["native LSTM op"].model.SerializeToString(),
                                   providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
        for k, c in variants.items():   # the variants compute the same thing
            got = ort.InferenceSession(c.model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
            assert np.max(np.abs(got - ref)) < 1e-4, k
        times = rounds({k: c.model.SerializeToString() for k, c in variants.items()}, {"x": x}, repeat, threads)
        t0 = times["native LSTM op"]
        print(f"LSTM batch {batch}, time {steps}, input {inp}, units {units} (CPU, {threads} threads)")
        for k, t in times.items():
            print(f"  {k:30s}: {t * 1e3:8.3f} ms   ratio {t / t0:.2f}")


def bench_masked(repeat: int, threads: int) -> None:
    """Masking → LSTM(64) at batch 64, time 28, input 28: the native op with sequence_lens on a
    right-padded batch (rnnc's runtime check picks it), the exact time loop on a batch with
    holes, and the time loop forced, against the unmasked native op. (tf2onnx lowers every
    masked LSTM to a Loop: 2.1 ms there against 0.54 ms native, on the issue's measurements.)"""
    batch, steps, inp, units = 64, 28, 28, 64
    head = f"rnnc: 1\ninputs: {{x: {{shape: [batch, time, {inp}]}}}}\nlayers:\n"
    lstm = f"  - {{type: LSTM, name: l, units: {units}, return_sequences: true, lowering: LOW}}\n"
    plain = rnnc.compile_spec(load_spec_text(head + lstm.replace("LOW", "auto")))
    masked = rnnc.compile_spec(load_spec_text(head + "  - {type: Masking}\n" + lstm.replace("LOW", "auto")),
                               weights=plain.weights)
    forced = rnnc.compile_spec(load_spec_text(head + "  - {type: Masking}\n" + lstm.replace("LOW", "loop")),
                               weights=plain.weights)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(batch, steps, inp)).astype(np.float32)
    right, holes = x.copy(), x.copy()
    lens = rng.integers(steps // 2, steps + 1, size=batch)
    for b, n in enumerate(lens):
        right[b, n:] = 0.0
        holes[b, rng.integers(0, steps, size=3)] = 0.0
    cases = {"unmasked, native LSTM op": (plain, x), "mask right-padded (If: native + sequence_lens)": (masked, right),
             "mask with holes (If: exact time loop)": (masked, holes), "mask, lowering: loop": (forced, right)}
    times = {}
    for k, (c, feed) in cases.items():   # one model at a time: each case has its own input
        times.update(rounds({k: c.model.SerializeToString()}, {"x": feed}, repeat, threads, n=3))
    t0 = times["unmasked, native LSTM op"]
    print(f"Masking + LSTM batch {batch}, time {steps}, input {inp}, units {units} (CPU, {threads} threads)")
    for k, t in times.items():
        print(f"  {k:48s}: {t * 1e3:8.3f} ms   ratio {t / t0:.2f}")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("which", nargs="*", default=["stateful", "loop", "masked"])
    p.add_argument("--repeat", type=int, default=20)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    for w in a.which:
        {"stateful": bench_stateful, "loop": bench_loop, "masked": bench_masked}[w](a.repeat, a.threads)


if __name__ == "__main__":
    main()
