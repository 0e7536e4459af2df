"""Benchmarks, printed as ratios against a baseline measured in the same run (never timed
tests: machines here are shared and noisy).

    python tools/bench.py [stateful] [loop] [masked] [crnn] [mha] [convlstm] [--repeat N] [--threads N]

stateful: the per-chunk cost of rnnc.Session carrying the states of LSTM(64) at chunk 100,
          batch 20, against a plain onnxruntime.InferenceSession.run fed the states by hand.
loop:     native LSTM op vs RNN(LSTMCell) through a time loop (ONNX Loop with and without the
          hoisted input projection, and the default ONNX Scan) and the same LSTM as a custom cell
          (Loop and Scan) at two shapes (batch, time, input, units).
masked:   Masking + LSTM: the native op with sequence_lens (right-padded batch), the exact time
          loop (holes), and lowering: loop, against the unmasked native op.
cost:     lowering by cost: the guide's GRU+SimpleRNN as the cost model, --tune, all native and
          all Scans chose; native LSTM vs custom cells recognized, forced to the Scan, near miss.
lean:     the custom LSTM cell forced onto the Scan (its lean body) against the native op at
          both shapes; with `masked`, the right-padded path's six-node check.
convlstm: ConvLSTM2D at batch 8, time 10, 32x32x8: the Scan with the input convolution hoisted
          out against the same body without hoisting (hoist=False)."""
from __future__ import annotations

import argparse
import functools
import gc
import statistics
import time
from pathlib import Path

import numpy as np
import onnx
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


def custom_lstm(inp: int, units: int, lowering: str = "loop") -> str:
    """The spec of specs/lstm_custom_cell.yaml's cell (an LSTM as equations) over `inp` features,
    forced to the time loop by default (the cell is recognized as the native LSTM op otherwise)."""
    return cell_layer(CELL_SPEC, inp, units, lowering)


def cell_layer(path: Path, inp: int, units: int, lowering: str = "auto") -> str:
    """One RNN layer (return_sequences) of the custom cell in spec `path` over `inp` features."""
    cells = yaml.safe_load(path.read_text())["cells"]
    (name,) = cells
    return yaml.safe_dump({"rnnc": 1, "inputs": {"x": {"shape": ["batch", "time", inp]}}, "cells": cells,
                           "layers": [{"type": "RNN", "name": "l", "return_sequences": True, "lowering": lowering,
                                       "cell": {"type": name, "units": units}}]}, sort_keys=False)


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


def bench_lean(repeat: int, threads: int) -> None:
    """The lean Scan body (README "Custom cells", Performance): specs/lstm_custom_cell.yaml's
    cell forced onto the Scan against the native LSTM op at both shapes, the same LSTM with its
    gate kernels kept apart (merged into one product by merge-products), and the masked
    right-padded path (its six-node check) against the unmasked op."""
    # the LSTM with a kernel per gate (i f o g), kept apart: merge-products makes it one
    # product again (rnnc/passes/merge_products.py)
    split_cell = {"SplitLSTM": {
        "attrs": ["units"],
        "params": {**{f"w{g}": {"shape": ["input", "units"]} for g in "ifog"},
                   **{f"u{g}": {"shape": ["units", "units"]} for g in "ifog"},
                   **{f"b{g}": {"shape": ["units"]} for g in "ifog"}},
        "state": {"h": ["units"], "c": ["units"]},
        "step": "i = sigmoid(x @ wi + h @ ui + bi)\nf = sigmoid(x @ wf + h @ uf + bf)\n"
                "o = sigmoid(x @ wo + h @ uo + bo)\ng = tanh(x @ wg + h @ ug + bg)\nc = f * c + i * g\n"
                "h = o * tanh(c)\n",
        "output": "h"}}
    for batch, steps, inp, units in [(64, 28, 28, 64), (64, 100, 256, 512)]:
        head = f"rnnc: 1\ninputs: {{x: {{shape: [batch, time, {inp}]}}}}\n"
        lstm = head + f"layers:\n  - {{type: LSTM, name: l, units: {units}, return_sequences: true, lowering: native}}\n"
        base = rnnc.compile_spec(load_spec_text(lstm))
        w_custom = {k: permute_gates(v, "keras_lstm", "rnnc_lstm") for k, v in base.weights.items()}
        cell = rnnc.compile_spec(load_spec_text(custom_lstm(inp, units)), weights=w_custom)
        # the body compiled for CUDA (one gate product, its slices one Split), run here: what the
        # CPU's product per activation run (FusedGemm: rnnc/passes/sink_slices.py) is against
        one = rnnc.compile_spec(load_spec_text(custom_lstm(inp, units)), weights=w_custom, provider="cuda")
        # the same weights, cut into the gates' blocks (i f o g: the custom cell's order)
        w_split = {f"l/{kind}{g}": w_custom[f"l/{name}"][..., j * units:(j + 1) * units]
                   for kind, name in (("w", "kernel"), ("u", "recurrent_kernel"), ("b", "bias"))
                   for j, g in enumerate("ifog")}
        split_spec = yaml.safe_dump({"rnnc": 1, "inputs": {"x": {"shape": ["batch", "time", inp]}}, "cells": split_cell,
                                     "layers": [{"type": "RNN", "name": "l", "return_sequences": True,
                                                 "lowering": "loop", "cell": {"type": "SplitLSTM", "units": units}}]},
                                    sort_keys=False)
        split = rnnc.compile_spec(load_spec_text(split_spec), weights=w_split)
        x = np.random.default_rng(0).normal(size=(batch, steps, inp)).astype(np.float32)
        ref = ort.InferenceSession(base.model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
        got = ort.InferenceSession(split.model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
        assert np.max(np.abs(got - ref)) < 1e-4     # the same LSTM
        times = rounds({"native LSTM op": base.model.SerializeToString(),
                        "custom cell (Scan)": cell.model.SerializeToString(),
                        "custom cell (Scan), one gate product": one.model.SerializeToString(),
                        "gate kernels apart (Scan)": split.model.SerializeToString()}, {"x": x}, repeat, threads)
        t0 = times["native LSTM op"]
        print(f"lean body: LSTM batch {batch}, time {steps}, input {inp}, units {units} (CPU, {threads} threads)")
        for k, t in times.items():
            print(f"  {k:30s}: {t * 1e3:8.3f} ms   ratio {t / t0:.2f}")


CRNN_SPEC = Path(__file__).resolve().parents[1] / "specs" / "crnn_ocr.yaml"


def compile_without_peephole(spec, weights) -> onnx.ModelProto:
    """compile_spec's stages without the Transpose peephole: every conv/pool layer keeps the
    Transpose pair its rule emits."""
    from rnnc.emit import GraphBuilder, assemble, check
    from rnnc.lower import LowerCtx, lower_graph
    from rnnc.pipeline import DEFAULT_IR_VERSION, DEFAULT_OPSET, prepare

    graph, w = prepare(spec, weights=weights)
    b = GraphBuilder()
    for name in (*graph.inputs, *(o.name for o in graph.outputs), *(n for io in graph.state_io() for n in io[1:3])):
        b.reserve(name)
    lowered = lower_graph(LowerCtx(b, graph, w, "ort"))
    model = assemble(graph, b, lowered, opset=DEFAULT_OPSET, ir_version=DEFAULT_IR_VERSION, target="ort")
    check(model)
    return model


def bench_crnn(repeat: int, threads: int) -> None:
    """The CRNN OCR spec at batch 16: one layout change at each edge of the conv run (the
    default) against a Transpose pair around each of its four conv/pool layers."""
    c = rnnc.compile_spec(CRNN_SPEC)
    pairs = compile_without_peephole(CRNN_SPEC, c.weights)
    x = np.random.default_rng(0).normal(size=(16, 200, 50, 1)).astype(np.float32)
    variants = {"transpose at the run's edges": c.model.SerializeToString(),
                "transpose pair per layer": pairs.SerializeToString()}
    outs = [ort.InferenceSession(m, providers=["CPUExecutionProvider"]).run(None, {"image": x})[0]
            for m in variants.values()]
    assert np.max(np.abs(outs[0] - outs[1])) < 1e-5          # the same computation
    n_t = [sum(n.op_type == "Transpose" for n in m.graph.node) for m in (c.model, pairs)]
    times = rounds(variants, {"image": x}, repeat, threads)
    t0 = times["transpose pair per layer"]
    print(f"CRNN OCR (specs/crnn_ocr.yaml), batch 16, image 200x50 (CPU, {threads} threads)")
    for (k, t), n in zip(times.items(), n_t):
        print(f"  {k:30s}: {t * 1e3:8.3f} ms   {n:2d} Transposes   ratio {t / t0:.3f}")


def bench_mha(repeat: int, threads: int) -> None:
    """MultiHeadAttention (4 heads of 32) over a BiGRU(64) at batch 32, time 64, input 32:
    rnnc's model against the same model rebuilt in PyTorch with the same weights (nn.GRU
    bidirectional + nn.MultiheadAttention) and exported by torch.onnx, both in onnxruntime."""
    import io

    import torch

    from rnnc.ir import build_graph

    batch, steps, inp, units, heads = 32, 64, 32, 64, 4
    dim, kd = 2 * units, 2 * units // heads
    spec = load_spec_text(
        f"rnnc: 1\ninputs: {{x: {{shape: [batch, time, {inp}]}}}}\nlayers:\n"
        f"  - {{type: Bidirectional, name: enc, layer: {{type: GRU, units: {units}, return_sequences: true}}}}\n"
        f"  - {{type: MultiHeadAttention, name: mha, input: [enc, enc], num_heads: {heads}, key_dim: {kd}}}\n")
    rng = np.random.default_rng(0)
    w = {f"{layer.name}/{k}": rng.normal(0.0, 0.2, size=shape).astype(np.float32)
         for layer in build_graph(spec).layers.values() for k, shape in layer.params.items()}
    c = rnnc.compile_spec(spec, weights=w)

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.gru = torch.nn.GRU(inp, units, batch_first=True, bidirectional=True)
            self.mha = torch.nn.MultiheadAttention(dim, heads, batch_first=True)

        def forward(self, x):
            h, _ = self.gru(x)
            return self.mha(h, h, h, need_weights=False)[0]

    m = Model().eval()
    def t(a):
        return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))

    with torch.no_grad():
        for half, sfx in (("forward", ""), ("backward", "_reverse")):
            kern, rec, bias = (c.weights[f"enc/{half}/{k}"] for k in ("kernel", "recurrent_kernel", "bias"))
            getattr(m.gru, f"weight_ih_l0{sfx}").copy_(t(permute_gates(kern, "keras_gru", "torch_gru").T))
            getattr(m.gru, f"weight_hh_l0{sfx}").copy_(t(permute_gates(rec, "keras_gru", "torch_gru").T))
            getattr(m.gru, f"bias_ih_l0{sfx}").copy_(t(permute_gates(bias[0], "keras_gru", "torch_gru")))
            getattr(m.gru, f"bias_hh_l0{sfx}").copy_(t(permute_gates(bias[1], "keras_gru", "torch_gru")))
        proj = [c.weights[f"mha/{p}/kernel"].reshape(dim, dim).T for p in ("query", "key", "value")]
        m.mha.in_proj_weight.copy_(t(np.concatenate(proj)))
        m.mha.in_proj_bias.copy_(t(np.concatenate([c.weights[f"mha/{p}/bias"].reshape(-1)
                                                   for p in ("query", "key", "value")])))
        m.mha.out_proj.weight.copy_(t(c.weights["mha/attention_output/kernel"].reshape(dim, dim).T))
        m.mha.out_proj.bias.copy_(t(c.weights["mha/attention_output/bias"]))
    x = rng.normal(size=(batch, steps, inp)).astype(np.float32)
    buf = io.BytesIO()
    torch.onnx.export(m, (t(x),), buf, input_names=["x"], output_names=["y"], opset_version=17, dynamo=False,
                      dynamic_axes={"x": {0: "batch", 1: "time"}, "y": {0: "batch", 1: "time"}})
    variants = {"rnnc": c.model.SerializeToString(), "torch.onnx (nn.GRU + nn.MultiheadAttention)": buf.getvalue()}
    outs = [ort.InferenceSession(v, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
            for v in variants.values()]
    assert np.max(np.abs(outs[0] - outs[1])) < 1e-4, np.max(np.abs(outs[0] - outs[1]))      # the same model
    times = rounds(variants, {"x": x}, repeat, threads)
    t0 = times["torch.onnx (nn.GRU + nn.MultiheadAttention)"]
    print(f"MultiHeadAttention({heads}x{kd}) over BiGRU({units}), batch {batch}, time {steps}, input {inp} "
          f"(CPU, {threads} threads)")
    for k, v in times.items():
        print(f"  {k:45s}: {v * 1e3:8.3f} ms   ratio {v / t0:.3f}")


def bench_precision(repeat: int, threads: int) -> None:
    """--quantize int8 against float32 on the CPU provider: time ratio and the drift measured at
    compile time (rnnc's metadata: random calibration inputs with masks)."""
    from rnnc.runtime.precision import precision_of

    cell = yaml.safe_load(CELL_SPEC.read_text())
    cell["layers"][0]["lowering"] = "loop"          # the custom cell forced to the time loop (Scan)
    models = [
        ("LSTM(512)x2, batch 64, time 50, input 256",
         "rnnc: 1\ninputs: {x: {shape: [batch, time, 256]}}\nlayers:\n"
         "  - {type: LSTM, units: 512, return_sequences: true}\n  - {type: LSTM, units: 512}\n"),
        ("Embedding + GRU(256) + SimpleRNN(128) + Dense, batch 64, time 50",
         (CELL_SPEC.parent / "gru_simplernn.yaml").read_text()),
        ("BiLSTM(128) tagger (Embedding, Dense softmax), batch 64, time 50",
         "rnnc: 1\ninputs: {tokens: {shape: [batch, time], dtype: int32}}\nlayers:\n"
         "  - {type: Embedding, input_dim: 1000, output_dim: 64}\n"
         "  - {type: Bidirectional, layer: {type: LSTM, units: 128, return_sequences: true}}\n"
         "  - {type: Dense, units: 10, activation: softmax}\n"),
        ("custom LSTM cell (lowering: loop, Scan), 256 units, batch 64, time 50",
         yaml.safe_dump(cell, sort_keys=False)),
    ]
    rng = np.random.default_rng(0)
    print(f"int8 vs float32 (CPU provider, {threads} threads; drift: compile-time calibration, rnnc metadata)")
    for title, text in models:
        spec = load_spec_text(text)
        f32 = rnnc.compile_spec(spec)
        q8 = rnnc.compile_spec(spec, quantize="int8")
        feeds = {}
        for name, t in f32.graph.inputs.items():
            shape = [64 if d == "batch" else 50 if isinstance(d, str) else d for d in t.dims]
            feeds[name] = (rng.integers(1, 1000, size=shape).astype(np.int32) if t.dtype.startswith("int")
                           else rng.standard_normal(shape).astype(np.float32))
        times = rounds({"float32": f32.model.SerializeToString(), "int8": q8.model.SerializeToString()}, feeds,
                       repeat, threads)
        info = precision_of(q8.model)
        print(f"{title}")
        print(f"  float32 {times['float32'] * 1e3:8.2f} ms   int8 {times['int8'] * 1e3:8.2f} ms   "
              f"ratio {times['int8'] / times['float32']:.2f}")
        for layer, how in info["layers"].items():
            print(f"  {layer}: {how}")
        for out, d in info["drift"].items():
            agree = "" if d["argmax_agree"] is None else f", argmax agrees {100 * d['argmax_agree']:.1f}%"
            print(f"  drift {out}: max {d['max_abs']:.3g}, mean {d['mean_abs']:.3g}{agree}")


CONVLSTM_SPEC = """
rnnc: 1
name: convlstm_bench
inputs:
  x: {shape: [batch, time, 32, 32, 8]}
layers:
  - {type: ConvLSTM2D, name: clstm, filters: 16, kernel_size: 3, padding: same, return_sequences: true}
"""


def bench_convlstm(repeat: int, threads: int) -> None:
    """ConvLSTM2D(16, 3x3, same) at batch 8, time 10, 32x32x8: the Scan with the input
    convolution hoisted out (one Conv for all steps, the default) against the same body
    with the input convolution inside it (compile_spec(..., hoist=False))."""
    spec = load_spec_text(CONVLSTM_SPEC)
    hoisted = rnnc.compile_spec(spec)
    inner = rnnc.compile_spec(spec, weights=hoisted.weights, hoist=False)
    x = np.random.default_rng(0).normal(size=(8, 10, 32, 32, 8)).astype(np.float32)
    variants = {"input conv hoisted": hoisted.model.SerializeToString(),
                "input conv in the body": inner.model.SerializeToString()}
    outs = [ort.InferenceSession(m, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
            for m in variants.values()]
    assert np.max(np.abs(outs[0] - outs[1])) < 1e-4          # the same computation
    times = rounds(variants, {"x": x}, repeat, threads)
    t0 = times["input conv in the body"]
    print(f"ConvLSTM2D(16, 3x3, same), batch 8, time 10, 32x32x8 (Scan; CPU, {threads} threads)")
    for k, t in times.items():
        print(f"  {k:24s}: {t * 1e3:8.3f} ms   ratio {t / t0:.3f}")


def bench_cost(repeat: int, threads: int) -> None:
    """Lowering by cost (README "Lowerings"). The guide's Emb+GRU(256)+SimpleRNN(128) at batch 64,
    time 50: the default (the cost model), compile --tune, all native ops and all Scans, against
    all native. Then the native LSTM op against the same LSTM as a custom cell (recognized: the
    native op), forced to the Scan (lowering: loop), the near-miss cell (specs/near_miss_cell.yaml:
    the Scan), and a peephole LSTM recognized against forced to the Scan, at two shapes."""
    from rnnc.runtime.tune import random_feeds

    guide = (CELL_SPEC.parent / "gru_simplernn.yaml").read_text()
    scans = guide.replace("return_sequences: true}", "return_sequences: true, lowering: loop}").replace(
        "units: 128}", "units: 128, lowering: loop}")
    base = rnnc.compile_spec(load_spec_text(guide), cost="native")
    dims = {"batch": 64, "time": 50}
    variants = {"all native ops": base,
                "default (cost model)": rnnc.compile_spec(load_spec_text(guide), weights=base.weights),
                "--tune": rnnc.compile_spec(load_spec_text(guide), weights=base.weights, tune=True, tune_dims=dims),
                "all Scans": rnnc.compile_spec(load_spec_text(scans), weights=base.weights)}
    feeds = random_feeds(base.graph, dims)
    ref = ort.InferenceSession(base.model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    for k, c in variants.items():   # the same computation
        got = ort.InferenceSession(c.model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
        assert np.max(np.abs(got - ref)) < 1e-4, k
    times = rounds({k: c.model.SerializeToString() for k, c in variants.items()}, feeds, repeat, threads)
    t0 = times["all native ops"]
    print(f"Embedding + GRU(256) + SimpleRNN(128) + Dense, batch 64, time 50 (CPU, {threads} threads)")
    for k, t in times.items():
        plans = ", ".join(f"{l.name} {l.lowering}" for l in variants[k].graph.layers.values() if l.is_recurrent)
        print(f"  {k:22s}: {t * 1e3:8.3f} ms   ratio {t / t0:.2f}   ({plans})")
    near, peep = CELL_SPEC.parent / "near_miss_cell.yaml", CELL_SPEC.parent / "peephole_lstm.yaml"
    for batch, steps, inp, units in [(64, 28, 28, 64), (64, 100, 256, 512)]:
        lstm = (f"rnnc: 1\ninputs: {{x: {{shape: [batch, time, {inp}]}}}}\nlayers:\n"
                f"  - {{type: LSTM, name: l, units: {units}, return_sequences: true, lowering: native}}\n")
        native = rnnc.compile_spec(load_spec_text(lstm))
        w_cell = {k: permute_gates(v, "keras_lstm", "rnnc_lstm") for k, v in native.weights.items()}
        peep_native = rnnc.compile_spec(load_spec_text(cell_layer(peep, inp, units, "auto")), cost="native")
        variants = {
            "native LSTM op": native,
            "custom cell, recognized": rnnc.compile_spec(load_spec_text(custom_lstm(inp, units, "auto")),
                                                         weights=w_cell, cost="native"),
            "custom cell, lowering: loop": rnnc.compile_spec(load_spec_text(custom_lstm(inp, units)), weights=w_cell),
            "near-miss cell (Scan)": rnnc.compile_spec(load_spec_text(cell_layer(near, inp, units))),
            "peephole LSTM, recognized": peep_native,
            "peephole LSTM, lowering: loop": rnnc.compile_spec(load_spec_text(cell_layer(peep, inp, units, "loop")),
                                                               weights=peep_native.weights),
        }
        assert variants["custom cell, recognized"].graph.layers["l"].lowering == "native"
        assert peep_native.graph.layers["l"].lowering == "native"
        x = np.random.default_rng(0).normal(size=(batch, steps, inp)).astype(np.float32)
        outs = {k: ort.InferenceSession(c.model.SerializeToString(), providers=["CPUExecutionProvider"]).run(
            None, {"x": x})[0] for k, c in variants.items()}
        for a, b in (("native LSTM op", "custom cell, recognized"), ("native LSTM op", "custom cell, lowering: loop"),
                     ("peephole LSTM, recognized", "peephole LSTM, lowering: loop")):
            assert np.max(np.abs(outs[a] - outs[b])) < 1e-4, (a, b)
        times = rounds({k: c.model.SerializeToString() for k, c in variants.items()}, {"x": x}, repeat, threads)
        t0 = times["native LSTM op"]
        print(f"LSTM forms, batch {batch}, time {steps}, input {inp}, units {units} (CPU, {threads} threads)")
        for k, t in times.items():
            print(f"  {k:30s}: {t * 1e3:8.3f} ms   ratio {t / t0:.2f}")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("which", nargs="*", default=["stateful", "loop", "masked", "crnn", "mha"])
    p.add_argument("--repeat", type=int, default=20)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    for w in a.which:
        {"stateful": bench_stateful, "loop": bench_loop, "masked": bench_masked,
         "crnn": bench_crnn, "mha": bench_mha,
         "precision": bench_precision, "cost": bench_cost,
         "convlstm": bench_convlstm, "lean": bench_lean}[w](a.repeat, a.threads)


if __name__ == "__main__":
    main()
