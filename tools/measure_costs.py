"""Measure the lowering cost table (rnnc/passes/cost_table.py) on this machine.

    python tools/measure_costs.py [--threads N] [--quick] [-o rnnc/passes/cost_table.py]

For each built-in kind (LSTM, GRU, SimpleRNN), units in UNITS and batch in BATCHES, one
recurrent layer (input size = units, time TIME, return_sequences) is compiled three ways,
`lowering: native`, `loop` (the ONNX Scan) and `unroll`, and the three whole models are timed
on ONNX Runtime's CPU provider, interleaved over rounds (rnnc/runtime/tune.py time_models),
so that the ratios inside one group do not depend on the machine's drift; each is the fastest
round's median (the least disturbed on a shared machine). Masked: the same at
MASKED_SHAPE with a Masking layer in front and a right-padded batch (the native plan's If then
runs the op with sequence_lens), native and loop only. The table records the machine, ONNX
Runtime's version and the thread count; rnnc/passes/cost_model.py interpolates it."""
from __future__ import annotations

import argparse
import os
import platform
import pprint
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

import rnnc
from rnnc.runtime.tune import time_models
from rnnc.spec import load_spec_text

KINDS = ("LSTM", "GRU", "SimpleRNN")
UNITS = (32, 64, 128, 256, 512)
BATCHES = (8, 64)
TIME = 50
MASKED_SHAPE = (128, 64)            # units, batch
OUT = Path(__file__).resolve().parents[1] / "rnnc" / "passes" / "cost_table.py"


def spec(kind: str, units: int, lowering: str, masked: bool = False) -> str:
    mask = "  - {type: Masking}\n" if masked else ""
    return (f"rnnc: 1\ninputs: {{x: {{shape: [batch, {TIME}, {units}]}}}}\nlayers:\n{mask}"
            f"  - {{type: {kind}, name: l, units: {units}, return_sequences: true, lowering: {lowering}}}\n")


def group(kind: str, units: int, batch: int, threads: int, masked: bool, quick: bool) -> dict[str, float]:
    strategies = ("native", "loop") if masked else ("native", "loop", "unroll")
    base = rnnc.compile_spec(load_spec_text(spec(kind, units, "native", masked)))
    models = {s: (base if s == "native" else
                  rnnc.compile_spec(load_spec_text(spec(kind, units, s, masked)), weights=base.weights))
              for s in strategies}
    x = np.random.default_rng(0).normal(size=(batch, TIME, units)).astype(np.float32)
    if masked:      # right-padded: rows end with 0..TIME/2 padded steps
        for b, n in enumerate(np.random.default_rng(1).integers(TIME // 2, TIME + 1, size=batch)):
            x[b, n:] = 0.0
    feeds = {"x": x}
    blobs = {s: m.model.SerializeToString() for s, m in models.items()}
    t0 = time.perf_counter()
    time_models({"native": blobs["native"]}, feeds, repeat=1, rounds=1, threads=threads, warmup=1)
    one = (time.perf_counter() - t0) / 4
    repeat = 3 if quick else int(min(15, max(3, 0.3 / max(one, 1e-4))))
    # the fastest of several rounds: the machine is shared, and the least disturbed round is
    # the closest to the layer's own cost
    times = time_models(blobs, feeds, repeat=repeat, rounds=2 if quick else 5, threads=threads, stat="min")
    return {s: round(t * 1e3, 4) for s, t in times.items()}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--quick", action="store_true", help="fewer repeats (a smoke run)")
    p.add_argument("-o", "--output", type=Path, default=OUT)
    a = p.parse_args()
    rows = []
    for kind in KINDS:
        for units in UNITS:
            for batch in BATCHES:
                t = group(kind, units, batch, a.threads, False, a.quick)
                rows.append(["cpu", kind, units, batch, False, t])
                print(kind, units, batch, t, f"loop/native {t['loop'] / t['native']:.2f} "
                      f"unroll/native {t['unroll'] / t['native']:.2f}", flush=True)
        units, batch = MASKED_SHAPE
        t = group(kind, units, batch, a.threads, True, a.quick)
        rows.append(["cpu", kind, units, batch, True, t])
        print(kind, units, batch, "masked", t, f"loop/native {t['loop'] / t['native']:.2f}", flush=True)
    table = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.processor() or platform.system()}",
        "onnxruntime": ort.__version__,
        "rnnc": rnnc.__version__,
        "threads": a.threads,
        "time": TIME,
        "input": "units",
        "measured": time.strftime("%Y-%m-%d"),
        "columns": ["provider", "kind", "units", "batch", "masked", "ms per run: strategy -> ms"],
        "rows": rows,
    }
    text = ('"""The lowering cost table, measured by tools/measure_costs.py (generated: rerun it to\n'
            'refresh; rnnc/passes/cost_model.py reads it). Times are milliseconds per run of one\n'
            'recurrent layer, time steps TABLE["time"], input size = units, on ONNX Runtime\'s CPU\n'
            'provider with TABLE["threads"] threads."""\n\n'
            f"TABLE = {pprint.pformat(table, width=110, sort_dicts=False)}\n")
    a.output.write_text(text)
    print(f"wrote {a.output}")


if __name__ == "__main__":
    main()
