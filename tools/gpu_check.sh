#!/usr/bin/env bash
# One short device check (for a session that is lent a GPU machine): does ONNX Runtime's
# CUDA provider run rnnc's native LSTM/GRU nodes and its Scan time loops, with the CPU's numbers,
# and how fast?
# The GPU machine reaches no package index: it uses the Python packages already there.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
python3 - <<'PY'
import sys
try:
    import onnxruntime as ort
except ImportError as e:
    sys.exit(f"no onnxruntime on this machine: {e}")
print("onnxruntime", ort.__version__, ort.get_available_providers())
if "CUDAExecutionProvider" not in ort.get_available_providers():
    sys.exit("CUDAExecutionProvider is not available here: nothing to check")
ort.set_default_logger_severity(3)
import statistics, time
import numpy as np
import rnnc
from rnnc.spec import load_spec_text

CASES = {
    "LSTM": "{type: LSTM, units: 256, return_sequences: true}",
    "GRU": "{type: GRU, units: 256, return_sequences: true}",
    "BiLSTM": "{type: Bidirectional, layer: {type: LSTM, units: 128, return_sequences: true}}",
    "masked LSTM": "{type: LSTM, units: 256, return_sequences: true}",
    "custom cell": "{type: RNN, return_sequences: true, cell: {type: StepLSTM, units: 256}}",   # a Scan
}
import yaml
from pathlib import Path
CELLS = yaml.safe_dump({"cells": yaml.safe_load(Path("specs/lstm_custom_cell.yaml").read_text())["cells"]})
x = np.random.default_rng(0).normal(size=(64, 100, 128)).astype(np.float32)
masked = x.copy()
masked[::2, 60:] = 0.0                                     # right-padded rows
for name, layer in CASES.items():
    pre = "  - {type: Masking}\n" if name.startswith("masked") else ""
    cells = CELLS if "StepLSTM" in layer else ""
    spec = load_spec_text(f"rnnc: 1\ninputs: {{x: {{shape: [batch, time, 128]}}}}\n{cells}layers:\n{pre}  - {layer}\n")
    model = rnnc.compile_spec(spec).model
    feeds = {"x": masked if pre else x}
    sessions = {}
    for prov in (["CPUExecutionProvider"], ["CUDAExecutionProvider", "CPUExecutionProvider"]):
        so = ort.SessionOptions()
        so.log_severity_level = 3
        sessions[prov[0]] = ort.InferenceSession(model.SerializeToString(), so, providers=prov)
    if sessions["CUDAExecutionProvider"].get_providers()[0] != "CUDAExecutionProvider":
        sys.exit("CUDAExecutionProvider is listed but could not start (CUDA/cuDNN libraries or GPU missing)")
    outs = {k: s.run(None, feeds)[0] for k, s in sessions.items()}
    diff = float(np.abs(outs["CPUExecutionProvider"] - outs["CUDAExecutionProvider"]).max())
    times = {}
    for k, s in sessions.items():
        for _ in range(5):
            s.run(None, feeds)
        ts = []
        for _ in range(20):
            t0 = time.perf_counter(); s.run(None, feeds); ts.append(time.perf_counter() - t0)
        times[k] = statistics.median(ts)
    cpu, gpu = times["CPUExecutionProvider"], times["CUDAExecutionProvider"]
    print(f"{name:12s} providers {sessions['CUDAExecutionProvider'].get_providers()[0]}  max |cpu - cuda| {diff:.2e}  "
          f"cpu {cpu * 1e3:.2f} ms  cuda {gpu * 1e3:.2f} ms  speedup {cpu / gpu:.1f}x")
PY

# fp16 pass (compile --precision fp16): the float16 model against the float32 one, both on the
# CUDA provider: max/mean |diff|, argmax agreement of the class scores, time and speedup, and
# whether each recurrent node really runs on CUDA in float16 (a node ONNX Runtime moved to the
# CPU shows up in the profile as a CPU node; the check prints how many).
python3 - <<'PY'
import sys
import onnxruntime as ort
if "CUDAExecutionProvider" not in ort.get_available_providers():
    sys.exit("fp16 pass: CUDAExecutionProvider is not available here: nothing to check")
ort.set_default_logger_severity(3)
import json, statistics, tempfile, time
from pathlib import Path
import numpy as np
import yaml
import rnnc
from rnnc.spec import load_spec_text

CELLS = yaml.safe_dump({"cells": yaml.safe_load(Path("specs/lstm_custom_cell.yaml").read_text())["cells"]})
CASES = {
    "LSTM": "{type: LSTM, units: 256, return_sequences: true}",
    "GRU": "{type: GRU, units: 256, return_sequences: true}",
    "SimpleRNN": "{type: SimpleRNN, units: 256, return_sequences: true}",
    "BiLSTM": "{type: Bidirectional, layer: {type: LSTM, units: 128, return_sequences: true}}",
    "custom cell": "{type: RNN, return_sequences: true, cell: {type: StepLSTM, units: 256}}",   # a Scan
}
x = np.random.default_rng(0).normal(size=(64, 100, 128)).astype(np.float32)


def session(model, profile=False):
    so = ort.SessionOptions()
    so.log_severity_level = 3
    if profile:
        so.enable_profiling = True
        so.profile_file_prefix = str(Path(tempfile.mkdtemp()) / "p")
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CUDAExecutionProvider", "CPUExecutionProvider"])


def median(s, feeds):
    for _ in range(5):
        s.run(None, feeds)
    ts = []
    for _ in range(20):
        t0 = time.perf_counter(); s.run(None, feeds); ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


for name, layer in CASES.items():
    cells = CELLS if "StepLSTM" in layer else ""
    text = (f"rnnc: 1\ninputs: {{x: {{shape: [batch, time, 128]}}}}\n{cells}layers:\n  - {layer}\n"
            "  - {type: Dense, units: 10, activation: softmax}\n")
    try:
        f32 = rnnc.compile_spec(load_spec_text(text)).model
        f16 = rnnc.compile_spec(load_spec_text(text), precision="fp16").model
    except Exception as e:   # report and go on: one case must not hide the others
        print(f"fp16 {name:12s} compile failed: {e}")
        continue
    s32 = session(f32)
    # before any float16 session: where CUDA cannot start, ONNX Runtime would fall back to the
    # CPU, which crashes (SIGSEGV, onnxruntime 1.31) loading some float16 LSTM models
    if s32.get_providers()[0] != "CUDAExecutionProvider":
        sys.exit("fp16 pass: CUDAExecutionProvider is listed but could not start")
    s16 = session(f16)
    a, b = s32.run(None, {"x": x})[0], s16.run(None, {"x": x})[0]
    d = np.abs(a.astype(np.float64) - b)
    agree = float(np.mean(a.argmax(-1) == b.argmax(-1)))
    t32, t16 = median(s32, {"x": x}), median(s16, {"x": x})
    prof = session(f16, profile=True)
    prof.run(None, {"x": x})
    events = json.loads(Path(prof.end_profiling()).read_text())
    cpu_nodes = sorted({e["args"].get("op_name") for e in events if e.get("cat") == "Node"
                        and e["args"].get("provider") == "CPUExecutionProvider"} - {None})
    print(f"fp16 {name:12s} max |fp16 - fp32| {d.max():.2e} mean {d.mean():.2e} argmax agrees {100 * agree:.1f}%  "
          f"fp32 {t32 * 1e3:.2f} ms  fp16 {t16 * 1e3:.2f} ms  speedup {t32 / t16:.2f}x  "
          f"CPU ops in the fp16 run: {', '.join(cpu_nodes) or 'none'}")
PY
