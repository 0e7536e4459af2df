"""Benchmarks, printed as ratios against a baseline measured in the same run (never timed
tests: machines here are shared and noisy).

    python tools/bench.py [stateful] [loop] [--repeat N] [--threads N]

stateful: the per-chunk cost of rnnc.Session carrying the states of LSTM(64) at chunk 100,
          batch 20, against a plain onnxruntime.InferenceSession.run fed the states by hand.
loop:     native LSTM op vs RNN(LSTMCell) through the Loop (with and without the hoisted input
          projection) at two shapes (batch, time, input, units)."""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import onnxruntime as ort

import rnnc
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


def bench_stateful(repeat: int, threads: int) -> None:
    spec = load_spec_text("rnnc: 1\ninputs: {x: {shape: [20, time, 32]}}\nlayers:\n"
                          "  - {type: LSTM, name: lstm, units: 64, stateful: true, return_sequences: true}\n")
    c = rnnc.compile_spec(spec)
    x = np.random.default_rng(0).normal(size=(20, 100, 32)).astype(np.float32)
    sess = rnnc.Session(c, providers="cpu", threads=threads)
    plain = ort.InferenceSession(c.model.SerializeToString(), options(threads), providers=["CPUExecutionProvider"])
    states = {"lstm/state_h_in": np.zeros((20, 64), np.float32), "lstm/state_c_in": np.zeros((20, 64), np.float32)}

    def by_hand():
        y, h, cc = plain.run(None, {"x": x, **states})
        states["lstm/state_h_in"], states["lstm/state_c_in"] = h, cc

    # interleave the two, several rounds, so drift on a shared machine hits both alike
    t_plain, t_rnnc = [], []
    for _ in range(5):
        t_plain.append(median_time(by_hand, repeat))
        t_rnnc.append(median_time(lambda: sess.run({"x": x}), repeat))
    a, b = statistics.median(t_plain), statistics.median(t_rnnc)
    print(f"stateful LSTM(64), chunk 100, batch 20 (CPU, {threads} threads)")
    print(f"  onnxruntime run, states by hand : {a * 1e3:8.3f} ms/chunk")
    print(f"  rnnc.Session.run (carried)      : {b * 1e3:8.3f} ms/chunk   ratio {b / a:.3f}")


def bench_loop(repeat: int, threads: int) -> None:
    shapes = [(64, 100, 256, 512), (64, 28, 28, 64)]
    for batch, steps, inp, units in shapes:
        text = (f"rnnc: 1\ninputs: {{x: {{shape: [batch, time, {inp}]}}}}\nlayers:\n"
                f"  - {{type: LSTM, name: l, units: {units}, return_sequences: true, lowering: LOWERING}}\n")
        x = np.random.default_rng(0).normal(size=(batch, steps, inp)).astype(np.float32)
        base = rnnc.compile_spec(load_spec_text(text.replace("LOWERING", "native")))
        rows = {}
        for label, low in (("native LSTM op", "native"), ("Loop (hoisted projection)", "loop")):
            c = rnnc.compile_spec(load_spec_text(text.replace("LOWERING", low)), weights=base.weights)
            s = ort.InferenceSession(c.model.SerializeToString(), options(threads), providers=["CPUExecutionProvider"])
            rows[label] = s
        times = {k: [] for k in rows}
        for _ in range(3):
            for k, s in rows.items():
                times[k].append(median_time(lambda: s.run(None, {"x": x}), repeat))
        t0 = statistics.median(times["native LSTM op"])
        print(f"LSTM batch {batch}, time {steps}, input {inp}, units {units} (CPU, {threads} threads)")
        for k, ts in times.items():
            t = statistics.median(ts)
            print(f"  {k:28s}: {t * 1e3:8.3f} ms   ratio {t / t0:.2f}")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("which", nargs="*", default=["stateful", "loop"])
    p.add_argument("--repeat", type=int, default=20)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    for w in a.which:
        {"stateful": bench_stateful, "loop": bench_loop}[w](a.repeat, a.threads)


if __name__ == "__main__":
    main()
