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
