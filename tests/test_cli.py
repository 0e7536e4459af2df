"""The CLI contract, through a subprocess: outputs, exit codes, and nothing written on error."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SPECS = ROOT / "specs"


def rnnc(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rnnc", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=120)


def test_compile_run_with_inputs_and_outputs(tmp_path):
    out = tmp_path / "m.onnx"
    r = rnnc("compile", SPECS / "encoder_decoder.yaml", "-o", out)
    assert r.returncode == 0, r.stderr
    assert "wrote" in r.stdout and "encoder: native: ONNX LSTM op" in r.stdout
    tokens = np.random.default_rng(0).integers(0, 900, size=(2, 6)).astype(np.int32)
    np.save(tmp_path / "e.npy", tokens)
    np.save(tmp_path / "d.npy", tokens)
    r = rnnc("run", out, "--input", f"encoder_tokens={tmp_path / 'e.npy'}", "--input",
             f"decoder_tokens={tmp_path / 'd.npy'}", "-o", tmp_path / "y.npz")
    assert r.returncode == 0, r.stderr
    assert "dense: float32 (2, 10)" in r.stdout
    with np.load(tmp_path / "y.npz") as z:
        assert z.files == ["dense"] and z["dense"].shape == (2, 10)


def test_run_random_prints_shapes_and_time(tmp_path):
    out = tmp_path / "m.onnx"
    assert rnnc("compile", SPECS / "gru_simplernn.yaml", "-o", out).returncode == 0
    r = rnnc("run", out, "--random", "--dim", "batch=3", "--dim", "time=7", "--repeat", "2")
    assert r.returncode == 0, r.stderr
    assert "dense: float32 (3, 10)" in r.stdout and "time: median" in r.stdout and "provider:" in r.stdout


def test_summary_and_check():
    r = rnnc("summary", SPECS / "lstm_classifier.yaml")
    assert r.returncode == 0
    assert "lstm (LSTM)" in r.stdout and "Total params: 164,106" in r.stdout
    r = rnnc("check", SPECS / "encoder_decoder.yaml")
    assert r.returncode == 0 and "is valid" in r.stdout


def test_opset_and_ir_version_flags(tmp_path):
    import onnx
    out = tmp_path / "m.onnx"
    assert rnnc("compile", SPECS / "lstm_classifier.yaml", "-o", out, "--opset", "20", "--ir-version", "9").returncode == 0
    m = onnx.load(out)
    assert m.ir_version == 9 and m.opset_import[0].version == 20
    r = rnnc("compile", SPECS / "lstm_classifier.yaml", "-o", tmp_path / "x.onnx", "--opset", "7")
    assert r.returncode == 2 and "--opset: expected 18.." in r.stderr and not (tmp_path / "x.onnx").exists()


BAD_SPEC = "rnnc: 1\ninputs: {x: {shape: [batch, time, 3]}}\nlayers:\n  - {type: LSTM, units: -1}\n"


@pytest.mark.parametrize("command", ["compile", "check", "summary"])
def test_bad_spec_exit_2_no_traceback_nothing_written(tmp_path, command):
    spec = tmp_path / "bad.yaml"
    spec.write_text(BAD_SPEC)
    out = tmp_path / "out.onnx"
    args = [command, spec] + (["-o", out] if command == "compile" else [])
    r = rnnc(*args)
    assert r.returncode == 2
    assert r.stderr.strip() == f"spec error: {spec}:4: layers[0].units: expected a positive integer, got -1"
    assert "Traceback" not in r.stderr and r.stdout == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml"]


def test_debug_shows_traceback(tmp_path):
    spec = tmp_path / "bad.yaml"
    spec.write_text(BAD_SPEC)
    r = rnnc("check", spec, "--debug")
    assert r.returncode == 2 and "Traceback" in r.stderr


def test_bad_weights_exit_2_nothing_written(tmp_path):
    np.savez(tmp_path / "w.npz", **{"lstm/kernel": np.zeros((3, 3), np.float32)})
    out = tmp_path / "out.onnx"
    r = rnnc("compile", SPECS / "lstm_classifier.yaml", "-o", out, "--weights", tmp_path / "w.npz")
    assert r.returncode == 2 and "weights error" in r.stderr and "missing 5 weight(s)" in r.stderr
    assert "lstm/kernel: expected shape [64, 512], got [3, 3]" in r.stderr
    assert not out.exists() and not list(tmp_path.glob(".out.onnx*"))


def test_bad_runtime_input_exit_2(tmp_path):
    out = tmp_path / "m.onnx"
    assert rnnc("compile", SPECS / "lstm_classifier.yaml", "-o", out).returncode == 0
    np.save(tmp_path / "t.npy", np.zeros((2, 5), np.float64))
    r = rnnc("run", out, "--input", f"tokens={tmp_path / 't.npy'}", "-o", tmp_path / "y.npz")
    assert r.returncode == 2
    assert "input 'tokens': expected dtype int32, got float64" in r.stderr
    assert not (tmp_path / "y.npz").exists()
    r = rnnc("run", out, "--input", f"tokens={tmp_path / 'missing.npy'}")
    assert r.returncode == 2 and "not found" in r.stderr
    r = rnnc("run", tmp_path / "none.onnx", "--random")
    assert r.returncode == 2 and "model file not found" in r.stderr


def test_unknown_layer_and_missing_file(tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text("rnnc: 1\ninputs: {x: {shape: [batch, time, 3]}}\nlayers:\n  - {type: ConvGRU2D, filters: 3}\n")
    r = rnnc("compile", spec, "-o", tmp_path / "o.onnx")
    assert r.returncode == 2 and "unknown layer type 'ConvGRU2D'" in r.stderr and ":4:" in r.stderr
    r = rnnc("check", tmp_path / "nope.yaml")
    assert r.returncode == 2 and "file not found" in r.stderr


def test_write_failures_exit_2_and_leave_nothing(tmp_path):
    (tmp_path / "isdir.onnx").mkdir()
    r = rnnc("compile", SPECS / "lstm_classifier.yaml", "-o", tmp_path / "isdir.onnx")
    assert r.returncode == 2 and f"cannot write {tmp_path / 'isdir.onnx'}: it is a directory" in r.stderr
    assert "Traceback" not in r.stderr and sorted(p.name for p in tmp_path.iterdir()) == ["isdir.onnx"]
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o500)
    import os
    if os.geteuid() != 0:          # root writes anywhere
        r = rnnc("compile", SPECS / "lstm_classifier.yaml", "-o", ro / "m.onnx")
        assert r.returncode == 2 and "cannot write" in r.stderr and list(ro.iterdir()) == []


def test_written_files_follow_the_umask(tmp_path):
    import os
    import stat
    out = tmp_path / "m.onnx"
    assert rnnc("compile", SPECS / "lstm_classifier.yaml", "-o", out).returncode == 0
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(out.stat().st_mode) == 0o666 & ~mask


def test_outputs_named_like_numpy_savez_keywords_are_kept(tmp_path):
    """np.savez takes array names as keyword arguments: `file` and `allow_pickle` would clash."""
    spec = tmp_path / "s.yaml"
    spec.write_text("rnnc: 1\ninputs: {x: {shape: [batch, 3]}}\nlayers:\n  - {type: Dense, name: d, units: 2}\n"
                    "outputs: {file: d, allow_pickle: d}\n")
    assert rnnc("compile", spec, "-o", tmp_path / "m.onnx").returncode == 0
    np.save(tmp_path / "x.npy", np.ones((2, 3), np.float32))
    r = rnnc("run", tmp_path / "m.onnx", "--input", f"x={tmp_path / 'x.npy'}", "-o", tmp_path / "y.npz")
    assert r.returncode == 0, r.stderr
    with np.load(tmp_path / "y.npz") as z:
        assert sorted(z.files) == ["allow_pickle", "file"] and z["file"].shape == (2, 2)
