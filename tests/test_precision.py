"""Reduced precision: --quantize int8 (the CPU) and --precision fp16 (CUDA), with the drift
from float32 measured at compile time (rnnc/runtime/precision.py, rnnc/lower/int8.py).

The bounds. Weights are symmetric int8 per column: each weight is off by at most
max|w_col| / 254 (half a step of 127 levels). Inputs are uint8 per tensor: off by at most
range / 510. With the weights these tests draw (normal, scale 0.4), a 16-32-wide product
of values in [-1, 1] (tanh/sigmoid states) is then off by about 1e-2 in the worst case,
before the gates squash it; over 10 steps the recurrence can add to it, but sigmoid/tanh
contract. The hidden states live in [-1, 1]: BOUND = 0.1 leaves room for 10 steps of it (the
measured figures are 5-30x smaller) while a broken lowering (wrong scale, wrong zero point,
transposed weights) is off by O(1). The class-score head (softmax over 5) must pick the same
class on at least AGREE of the rows: int8 may flip a near-tie, not a clear winner."""
from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx.reference import ReferenceEvaluator

import rnnc
from helpers import op_counts, random_weights
from rnnc.errors import ModelFileError, RnncError
from rnnc.metadata import parse
from rnnc.pipeline import prepare
from rnnc.runtime.precision import precision_of
from rnnc.spec import load_spec_text

BOUND = 0.1
AGREE = 0.9
ROOT = Path(__file__).resolve().parents[1]

HEAD = "  - {type: Dense, units: 5, activation: softmax}\n"
SPECS = {
    "LSTM": ("x", "  - {type: LSTM, units: 24, return_sequences: true}\n"),
    "GRU": ("x", "  - {type: GRU, units: 24, return_sequences: true}\n"),
    "GRU reset_after false": ("x", "  - {type: GRU, units: 24, reset_after: false, return_sequences: true}\n"),
    "SimpleRNN": ("x", "  - {type: SimpleRNN, units: 24, return_sequences: true}\n"),
    "BiLSTM": ("x", "  - {type: Bidirectional, layer: {type: LSTM, units: 16, return_sequences: true}}\n"),
    "masked GRU": ("tokens", "  - {type: Embedding, input_dim: 50, output_dim: 16, mask_zero: true}\n"
                             "  - {type: GRU, units: 24, return_sequences: true}\n"),
    "masked LSTM": ("tokens", "  - {type: Embedding, input_dim: 50, output_dim: 16, mask_zero: true}\n"
                              "  - {type: LSTM, units: 24, return_sequences: true}\n"),
    "LSTM loop": ("x", "  - {type: LSTM, units: 24, return_sequences: true, lowering: loop}\n"),
    "Dense 128x128": ("x", "  - {type: Dense, units: 128, activation: tanh}\n"),
}


def spec_text(kind: str) -> str:
    inp, body = SPECS[kind]
    decl = "{x: {shape: [batch, time, 12]}}" if inp == "x" else "{tokens: {shape: [batch, time], dtype: int32}}"
    if kind == "Dense 128x128":
        decl = "{x: {shape: [batch, time, 128]}}"
    return f"rnnc: 1\nname: m\ninputs: {decl}\nlayers:\n{body}{HEAD}"


def custom_cell_text() -> str:
    import yaml

    doc = yaml.safe_load((ROOT / "specs" / "lstm_custom_cell.yaml").read_text())
    doc["inputs"] = {"x": {"shape": ["batch", "time", 12]}}
    doc["layers"] = [{"type": "RNN", "name": "rnn", "cell": {"type": "StepLSTM", "units": 24},
                      "return_sequences": True, "lowering": "loop"}, {"type": "Dense", "units": 5,
                                                                      "activation": "softmax"}]
    return yaml.safe_dump(doc, sort_keys=False)


def calibration(graph, seed: int = 7) -> dict[str, np.ndarray]:
    """A fixed calibration set: 16 rows × 10 steps; token rows padded on the right (and one
    on the left) so that masks are exercised."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, t in graph.inputs.items():
        shape = [16 if d == "batch" else 10 if isinstance(d, str) else d for d in t.dims]
        if t.dtype.startswith("int"):
            a = rng.integers(1, 50, size=shape)
            a[1, 7:] = 0
            a[2, :2] = 0
            out[name] = a.astype(t.dtype)
        else:
            out[name] = rng.standard_normal(shape).astype(np.float32)
    return out


def run_ort(model: onnx.ModelProto, feeds: dict) -> list[np.ndarray]:
    s = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return s.run(None, feeds)


def both(text: str, target: str = "ort"):
    spec = load_spec_text(text)
    graph, _ = prepare(spec)
    w = random_weights(graph, seed=3)
    f32 = rnnc.compile_spec(spec, weights=w, target=target)
    feeds = calibration(f32.graph)
    q8 = rnnc.compile_spec(spec, weights=w, target=target, quantize="int8", calibrate=feeds)
    return f32, q8, feeds


def check_close(want: np.ndarray, got: np.ndarray, what: str) -> None:
    d = np.abs(want - got)
    assert d.max() < BOUND, f"{what}: int8 differs from float32 by {d.max():.3g} (bound {BOUND})"
    agree = np.mean(want.argmax(-1) == got.argmax(-1))
    assert agree >= AGREE, f"{what}: argmax agrees on {agree:.0%} of rows (need {AGREE:.0%})"


@pytest.mark.parametrize("kind", [*SPECS, "custom cell"])
def test_int8_within_bound_on_ort(kind):
    text = custom_cell_text() if kind == "custom cell" else spec_text(kind)
    f32, q8, feeds = both(text)
    ops = op_counts(q8.model)
    if kind in ("LSTM", "BiLSTM"):          # ONNX Runtime's quantization tool
        assert ops["DynamicQuantizeLSTM"] >= 1 and ops["LSTM"] == 0, ops
    else:                                  # rnnc's own int8 matmuls; no native op left
        assert ops["MatMulInteger"] >= 1 and ops["DynamicQuantizeLinear"] >= 1, ops
        assert ops["GRU"] == ops["RNN"] == ops["LSTM"] == 0, ops
    check_close(run_ort(f32.model, feeds)[0], run_ort(q8.model, feeds)[0], kind)
    info = precision_of(q8.model)          # the drift measured at compile time, on the same inputs
    assert info["mode"] == "int8" and info["layers"]
    assert list(info["drift"].values())[0]["max_abs"] == pytest.approx(
        float(np.abs(run_ort(f32.model, feeds)[0] - run_ort(q8.model, feeds)[0]).max()), rel=1e-6, abs=1e-9)


@pytest.mark.parametrize("kind", ["LSTM", "GRU", "SimpleRNN", "masked GRU", "custom cell"])
def test_int8_portable_runs_on_onnx_reference(kind):
    text = custom_cell_text() if kind == "custom cell" else spec_text(kind)
    f32, q8, feeds = both(text, target="portable")
    assert {o.domain for g in [q8.model.graph] for o in q8.model.opset_import} <= {"", "ai.onnx"}
    assert all(n.domain in ("", "ai.onnx") for n in q8.model.graph.node)
    ops = op_counts(q8.model)
    assert ops["MatMulInteger"] >= 1 and ops["DynamicQuantizeLSTM"] == 0
    small = {k: v[:4, :6] for k, v in feeds.items()}      # onnx.reference is slow: 4 rows, 6 steps
    ref = ReferenceEvaluator(q8.model).run(None, small)[0]
    got = run_ort(q8.model, small)[0]
    # the same int8 arithmetic on both (integer products are exact; the float scale, round-half-
    # to-even in DynamicQuantizeLinear, and the gates in float32): agreement to float32 rounding,
    # and within the int8 bound of the float32 model
    assert np.abs(ref - got).max() < 1e-3
    check_close(run_ort(f32.model, small)[0], ref, f"{kind} (onnx.reference)")


def test_ort_fuses_the_int8_pattern():
    """The standard-op pattern becomes ONNX Runtime's fused kernels (Scan bodies too): a
    DynamicQuantizeMatMul, or, where one quantized h feeds two products (the GRU's z r and hh),
    one DynamicQuantizeLinear and a MatMulIntegerToFloat each; no MatMulInteger is left."""
    _, q8, _ = both(spec_text("GRU"))
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    so.optimized_model_filepath = str(Path(_tmp()) / "opt.onnx")
    ort.InferenceSession(q8.model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    ops = op_counts(onnx.load(so.optimized_model_filepath))
    assert ops["DynamicQuantizeMatMul"] + ops["MatMulIntegerToFloat"] >= 3 and ops["MatMulInteger"] == 0, ops


def _tmp() -> str:
    import tempfile

    return tempfile.mkdtemp(prefix="rnnc-test-")


def test_small_dense_and_embedding_stay_float():
    _, q8, _ = both(spec_text("masked GRU"))
    names = {t.name for t in q8.model.graph.initializer}
    assert any(n.startswith("embedding/") and "int8" not in n for n in names)
    assert not any(n.startswith("dense/") and "int8" in n for n in names)   # 24x5 kernel: no gain measured


def test_calibration_file_and_bad_names(tmp_path):
    spec = load_spec_text(spec_text("GRU"))
    np.savez(tmp_path / "cal.npz", x=np.ones((2, 4, 12), np.float32))
    c = rnnc.compile_spec(spec, quantize="int8", calibrate=tmp_path / "cal.npz")
    assert "cal.npz (2 rows)" in precision_of(c.model)["calibration"]
    np.savez(tmp_path / "bad.npz", y=np.ones((2, 4, 12), np.float32))
    with pytest.raises(RnncError, match="missing x; unknown y"):
        rnnc.compile_spec(spec, quantize="int8", calibrate=tmp_path / "bad.npz")
    with pytest.raises(RnncError, match="--calibrate and --max-diff measure"):
        rnnc.compile_spec(spec, max_diff=0.1)


def test_max_diff_refuses_in_the_api():
    with pytest.raises(RnncError, match=r"--max-diff 1e-09: the int8 model differs .* nothing written"):
        rnnc.compile_spec(load_spec_text(spec_text("GRU")), quantize="int8", max_diff=1e-9)
    assert rnnc.compile_spec(load_spec_text(spec_text("GRU")), quantize="int8", max_diff=BOUND)


def cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rnnc", *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT, timeout=300)


def test_cli_quantize_max_diff_inspect_and_chunked_run(tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text("rnnc: 1\nname: s\ninputs: {x: {shape: [2, time, 6]}}\nlayers:\n"
                    "  - {type: GRU, units: 16, stateful: true, return_sequences: true}\n")
    out = tmp_path / "m.onnx"
    r = cli("compile", spec, "-o", out, "--quantize", "int8", "--max-diff", "1e-12")
    assert r.returncode == 2 and not out.exists(), r.stdout + r.stderr
    assert "--max-diff 1e-12" in r.stderr and "nothing written" in r.stderr
    r = cli("compile", spec, "-o", out, "--quantize", "int8")
    assert r.returncode == 0 and out.exists(), r.stderr
    assert "precision: int8" in r.stdout and "max |diff|" in r.stdout
    assert "GRU op has no int8 form" in r.stdout
    r = cli("inspect", out)
    assert r.returncode == 0, r.stderr
    assert "Precision: int8" in r.stdout and "quantized: int8 MatMulInteger" in r.stdout
    rep = json.loads(cli("inspect", out, "--format", "json").stdout)
    assert rep["precision"]["mode"] == "int8" and rep["layers"][0]["precision"].startswith("int8")
    x = np.random.default_rng(0).standard_normal((2, 12, 6)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    r = cli("run", out, "--input", f"x={tmp_path / 'x.npy'}", "--chunk", "4", "-o", tmp_path / "y.npz")
    assert r.returncode == 0, r.stderr
    # streamed int8 vs one float32 call: chunking moves the input projection's quantization
    # range (it is per chunk), so the two differ by int8 rounding, within the bound
    f32 = rnnc.compile_spec(spec)
    want = rnnc.Session(f32, providers="cpu").run({"x": x})
    got = np.load(tmp_path / "y.npz")
    assert np.abs(got[f32.graph.outputs[0].name] - want[f32.graph.outputs[0].name]).max() < BOUND


def test_stateful_session_on_int8():
    spec = load_spec_text("rnnc: 1\ninputs: {x: {shape: [3, time, 6]}}\nlayers:\n"
                          "  - {type: LSTM, name: l, units: 8, stateful: true}\n")
    q8 = rnnc.compile_spec(spec, quantize="int8")
    s = rnnc.Session(q8, providers="cpu")
    x = np.random.default_rng(1).standard_normal((3, 8, 6)).astype(np.float32)
    a = s.run({"x": x[:, :4]})
    b = s.run({"x": x[:, 4:]})
    assert s.states and all(np.isfinite(v).all() for v in (*a.values(), *b.values()))
    whole = rnnc.Session(rnnc.compile_spec(spec), providers="cpu").run({"x": x})
    assert np.abs(list(b.values())[0] - list(whole.values())[0]).max() < BOUND


def test_metadata_precision_field_is_checked():
    q8 = rnnc.compile_spec(load_spec_text(spec_text("GRU")), quantize="int8")
    text = next(p.value for p in q8.model.metadata_props if p.key == "rnnc.model")
    assert parse(text)["precision"]["mode"] == "int8"
    meta = json.loads(text)
    for bad in ({"mode": "int4"}, {"mode": "int8", "drift": {"y": {"max_abs": -1, "mean_abs": 0}}},
                {"mode": "int8", "layers": [1]}, {"mode": "int8", "surprise": 1}, "int8"):
        with pytest.raises(ModelFileError, match="precision"):
            parse(json.dumps({**meta, "precision": bad}))


def fp16_model():
    return rnnc.compile_spec(ROOT / "specs" / "gru_simplernn.yaml", precision="fp16")


def test_fp16_passes_the_checker_and_keeps_float32_io():
    c = fp16_model()
    onnx.checker.check_model(c.model, full_check=True)
    io = [v.type.tensor_type.elem_type for v in (*c.model.graph.input, *c.model.graph.output)]
    assert onnx.TensorProto.FLOAT16 not in io
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in c.model.graph.initializer)
    assert Counter(n.op_type for n in c.model.graph.node)["GRU"] == 1       # native op kept
    info = precision_of(c.model)
    assert info["mode"] == "fp16" and info["provider"] == "cuda"
    with pytest.raises(RnncError, match="exclusive"):
        rnnc.compile_spec(ROOT / "specs" / "gru_simplernn.yaml", precision="fp16", quantize="int8")


def test_fp16_cli_refuses_a_model_the_cpu_would_not_load(tmp_path):
    out = tmp_path / "m.onnx"
    # onnxruntime's CPU provider crashes loading this float16 LSTM (checked in a child process)
    r = cli("compile", ROOT / "specs" / "cifg_lstm.yaml", "-o", out, "--precision", "fp16")
    assert r.returncode == 2 and not out.exists(), r.stdout + r.stderr
    assert "--providers cuda" in r.stderr
    r = cli("compile", ROOT / "specs" / "cifg_lstm.yaml", "-o", out, "--precision", "fp16", "--providers", "cuda")
    assert r.returncode == 0 and out.exists(), r.stderr


def _cuda() -> str | None:
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return "this onnxruntime has no CUDA provider"
    try:
        s = rnnc.Session(rnnc.compile_spec(load_spec_text(spec_text("Dense 128x128"))), providers="cuda")
    except RnncError as e:
        return f"CUDA does not start here: {e}"
    return None if s.provider == "CUDAExecutionProvider" else "CUDA does not start here"


@pytest.mark.gpu
def test_fp16_runs_on_cuda_within_bound():
    why = _cuda()
    if why:
        pytest.skip(f"needs a GPU with ONNX Runtime's CUDA provider: {why}")
    c = fp16_model()
    f32 = rnnc.compile_spec(ROOT / "specs" / "gru_simplernn.yaml")
    feeds = calibration(f32.graph)
    feeds = {k: np.clip(v, 0, 999) for k, v in feeds.items()}
    want = rnnc.Session(f32, providers="cuda").run(feeds)
    got = rnnc.Session(c, providers="cuda").run(feeds)
    # float16 has 11 significant bits (2^-11 ≈ 5e-4 relative): 1e-2 on these [-1, 1] scores
    assert np.abs(got["dense"] - want["dense"]).max() < 1e-2
    assert precision_of(c.model)["drift"] is not None
