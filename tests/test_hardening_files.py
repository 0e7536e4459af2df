"""Damaged and foreign files, silent mistakes and small expectations from a new user's trial:
each command that reads a model checks it first and says what is wrong (exit 2); a file given
to the wrong command is named by its content; explicit requests that cannot be met are
errors; stdout stays clean and closes quietly."""
from __future__ import annotations

import json
import random
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from test_inspect import parse_dot

from helpers import compile_text
from rnnc.cli import main as cli_main
from rnnc.errors import ModelFileError
from rnnc.fileio import sniff
from rnnc.runtime import Session, versions
from rnnc.runtime import session as session_mod

ROOT = Path(__file__).resolve().parents[1]
SPECS = ROOT / "specs"
SPEC = ("rnnc: 1\nname: m\ninputs: {t: {shape: [batch, time], dtype: int32}}\nlayers:\n"
        "  - {type: Embedding, name: emb, input_dim: 9, output_dim: 3}\n"
        "  - {type: GRU, name: rec, units: 4, recurrent_dropout: 0.2}\n  - {type: Dense, name: out, units: 2}\n")


def rnnc(*args, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rnnc", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd or ROOT, timeout=300)


def cli(capsys, *args) -> tuple[int, str, str]:
    code = cli_main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def model(tmp_path) -> Path:
    path = tmp_path / "m.onnx"
    path.write_bytes(compile_text(SPEC).model.SerializeToString())
    return path


def _flip_200(data: bytes) -> bytes:
    """The trial's damage: 200 bytes flipped, here inside rnnc's metadata text (so that the
    protobuf still parses and only a check finds the damage)."""
    d = bytearray(data)
    start = data.index(b'{"name"')                  # the "rnnc.model" JSON
    end = data.index(b"}", len(data) - 200)
    assert end - start > 400
    for i in random.Random(0).sample(range(start, end), 200):
        d[i] ^= 0xFF
    return bytes(d)


# ---- damaged models: every reader checks first ----------------------------------------------

def test_flipped_bytes_are_an_error_for_every_reader(model, tmp_path, capsys):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(_flip_200(model.read_bytes()))
    onnx.ModelProto().ParseFromString(bad.read_bytes())          # still parses as protobuf
    for args in (["inspect", bad], ["inspect", bad, "--format", "json"], ["inspect", bad, "--format", "dot"],
                 ["inspect", bad, "--svg", tmp_path / "g.svg"], ["run", bad, "--random"]):
        code, out, err = cli(capsys, *args)
        assert code == 2 and out == "" and err.startswith(f"file error: {bad}: "), (args, err)
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "g.svg").exists() and not (tmp_path / "g.dot").exists()


def test_text_that_is_not_utf8_is_named(model, tmp_path, capsys):
    m = onnx.load(model)
    m.producer_name = "rnnc"
    data = m.SerializeToString().replace(b"\x12\x04rnnc", b"\x12\x04\xffnnc", 1)
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(data)
    for fmt in ("text", "json", "dot"):
        code, _, err = cli(capsys, "inspect", bad, "--format", fmt)
        assert code == 2 and "model.producer_name is not UTF-8 text" in err, err
    with pytest.raises(ModelFileError, match="producer_name is not UTF-8"):
        Session(bad)


def test_a_model_onnx_checker_refuses_is_not_reported_as_fine(model, tmp_path, capsys):
    """The false all-clear: the text report used to print a full report, exit 0."""
    m = onnx.load(model)
    m.graph.node[1].input[0] = "no_such_tensor"
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(m.SerializeToString())
    code, out, err = cli(capsys, "inspect", bad)
    assert code == 2 and out == "" and "onnx.checker refuses it" in err and "no_such_tensor" in err
    code, out, err = cli(capsys, "run", bad, "--random")
    assert code == 2 and out == "" and "onnx.checker refuses it" in err
    with pytest.raises(ModelFileError, match="onnx.checker refuses it"):
        Session(m)                                          # a ModelProto is checked too
    with pytest.raises(ModelFileError, match="protobuf cannot be parsed"):
        Session(model.read_bytes()[:500])


# ---- a file given to the wrong command: named by its content -------------------------------

def test_wrong_kind_of_file_says_which_command_takes_it(model, tmp_path, capsys):
    for command in ("summary", "check"):
        code, out, err = cli(capsys, command, model)
        assert code == 2 and out == ""
        assert err.strip() == (f"file error: {model}: this is an ONNX model, not a spec (YAML): use "
                               f"`rnnc inspect {model}` or `rnnc run {model}`")
    code, _, err = cli(capsys, "compile", model, "-o", tmp_path / "x.onnx")
    assert code == 2 and "this is an ONNX model, not a spec" in err and not (tmp_path / "x.onnx").exists()
    np.save(tmp_path / "a.npy", np.zeros(3))
    code, _, err = cli(capsys, "inspect", tmp_path / "a.npy")
    assert code == 2 and "this is a NumPy array (.npy), not an ONNX model or a spec" in err
    assert "utf-8" not in err
    spec = SPECS / "lstm_classifier.yaml"
    code, _, err = cli(capsys, "run", spec, "--random")
    assert code == 2 and "this is a text file, not an ONNX model" in err
    assert f"compile it first with `rnnc compile {spec} -o MODEL.onnx`" in err and "INVALID_PROTOBUF" not in err


def test_detection_is_by_content_not_by_name(model, tmp_path, capsys):
    disguised = tmp_path / "model.yaml"               # an ONNX model named like a spec
    disguised.write_bytes(model.read_bytes())
    assert sniff(disguised) == "onnx"
    code, _, err = cli(capsys, "summary", disguised)
    assert code == 2 and "this is an ONNX model" in err
    code, out, _ = cli(capsys, "inspect", disguised)      # inspect takes it as the model it is
    assert code == 0 and 'Model "m": compiled by rnnc' in out
    spec = tmp_path / "spec.txt"                          # a spec with another suffix
    spec.write_text(SPEC)
    code, out, _ = cli(capsys, "inspect", spec)
    assert code == 0 and "spec, compiled in memory" in out
    html = tmp_path / "download.onnx"                     # a download that is a web page
    html.write_text("<html><body>404</body></html>")
    code, _, err = cli(capsys, "inspect", html)
    assert code == 2 and "this is a text file, not an ONNX model" in err
    np.savez(tmp_path / "w.npz", a=np.zeros(2))
    assert [sniff(p) for p in (tmp_path / "w.npz", tmp_path, tmp_path / "none")] == ["npz", "directory", "missing"]


def test_inputs_that_are_not_arrays_never_suggest_pickles(model, tmp_path, capsys):
    (tmp_path / "hello.txt").write_text("hello")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    np.savez(tmp_path / "obj.npz", t=np.array([{"a": 1}], dtype=object))
    cases = {f"t={tmp_path / 'hello.txt'}": "hello.txt is not a .npy array or an .npz archive of them: it is a text file",
             f"t={tmp_path / 'obj.npy'}": "obj.npy holds Python objects (a pickled object array), which rnnc never loads",
             str(tmp_path / "obj.npz"): "obj.npz[t] holds Python objects (a pickled object array), which rnnc never",
             f"t={tmp_path}": "is a directory, not a .npy/.npz file"}
    for item, message in cases.items():
        code, out, err = cli(capsys, "run", model, "-i", item)
        assert code == 2 and message in err and "allow_pickle" not in err, err


def test_weights_that_are_a_directory_or_another_kind_of_file(tmp_path, capsys):
    spec = SPECS / "lstm_classifier.yaml"
    code, _, err = cli(capsys, "compile", spec, "-o", tmp_path / "m.onnx", "--weights", tmp_path)
    assert code == 2 and f"{tmp_path}: is a directory: expected a weights file" in err and "not found" not in err
    (tmp_path / "w.npz").write_text("not an archive")
    code, _, err = cli(capsys, "check", spec, "--weights", tmp_path / "w.npz")
    assert code == 2 and "expected a NumPy archive (.npz), got a text file" in err
    np.savez(tmp_path / "o.npz", **{"lstm/kernel": np.array([{}], dtype=object)})
    code, _, err = cli(capsys, "check", spec, "--weights", tmp_path / "o.npz")
    assert code == 2 and "which rnnc never loads" in err and "allow_pickle" not in err


def test_onnx_runtime_banner_stays_off_stdout(model, monkeypatch, capsys):
    """ONNX Runtime's Python wrapper prints "EP Error" banners to stdout when a provider fails."""
    def noisy(*args, **kwargs):
        print("*************** EP Error ***************")
        print("EP Error boom when using ['CUDAExecutionProvider']")
        raise RuntimeError("boom")
    monkeypatch.setattr(session_mod.ort, "InferenceSession", noisy)
    code, out, err = cli(capsys, "run", model, "--random")
    assert code == 2 and out == "" and "ONNX Runtime cannot load" in err and "EP Error" not in out + err


# ---- silent mistakes ---------------------------------------------------------------------------

def test_opset_and_ir_range_come_from_onnx_runtime(tmp_path, capsys):
    max_opset, max_ir = versions.ort_max_versions()
    assert max_opset <= onnx.defs.onnx_opset_version() and max_ir <= onnx.IR_VERSION
    assert versions._loads(max_opset, 10) and versions._loads(21, max_ir)
    if max_opset < onnx.defs.onnx_opset_version():
        assert not versions._loads(max_opset + 1, 10)
    spec = SPECS / "lstm_classifier.yaml"
    code, _, err = cli(capsys, "compile", spec, "-o", tmp_path / "x.onnx", "--opset", max_opset + 1)
    assert code == 2 and f"--opset: expected 18..{max_opset} (the newest opset ONNX Runtime {ort.__version__}" in err
    code, _, err = cli(capsys, "compile", spec, "-o", tmp_path / "x.onnx", "--ir-version", max_ir + 1)
    assert code == 2 and f"--ir-version: expected 8..{max_ir}" in err and not (tmp_path / "x.onnx").exists()
    # the top of the range compiles and runs
    assert cli(capsys, "compile", spec, "-o", tmp_path / "m.onnx", "--opset", max_opset,
               "--ir-version", max_ir)[0] == 0
    assert cli(capsys, "run", tmp_path / "m.onnx", "--random", "--repeat", "1")[0] == 0
    # --target portable: the onnx package's range
    code, _, err = cli(capsys, "compile", spec, "-o", tmp_path / "p.onnx", "--target", "portable",
                       "--opset", onnx.defs.onnx_opset_version() + 1)
    assert code == 2 and f"expected 18..{onnx.defs.onnx_opset_version()} (the newest opset onnx " in err


def test_the_pipeline_imports_onnx_runtime_only_when_asked():
    code = ("import sys, rnnc; rnnc.compile_spec('specs/lstm_classifier.yaml'); "
            "assert 'onnxruntime' not in sys.modules, 'default versions need no probe'; "
            "rnnc.compile_spec('specs/lstm_classifier.yaml', opset=22); assert 'onnxruntime' in sys.modules")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr


def _cuda_starts(model: Path) -> bool:
    return "CUDAExecutionProvider" in Session(model).providers


def test_explicit_cuda_that_cannot_start_is_an_error(model, monkeypatch, capsys):
    if _cuda_starts(model):
        pytest.skip("CUDA starts on this machine")
    monkeypatch.setattr(session_mod.ort, "get_available_providers",       # a GPU build without a GPU
                        lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    code, out, err = cli(capsys, "run", model, "--random", "--providers", "cuda")
    assert code == 2 and out == "" and "CUDA could not start" in err
    with pytest.raises(Exception, match="CUDA could not start"):
        Session(model, providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
    code, out, _ = cli(capsys, "run", model, "--random", "--providers", "auto", "--repeat", "1")
    line = out.splitlines()[0]
    assert code == 0 and line.startswith("provider: CPUExecutionProvider; CUDA could not start") and len(line) < 100


def test_cpu_only_onnx_runtime(model, monkeypatch, capsys):
    """A CPU-only onnxruntime lists no CUDA provider: auto says why it runs on the CPU (as
    with a GPU build that cannot start CUDA), and strict_gpu holds nothing."""
    monkeypatch.setattr(session_mod.ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    sess = Session(model, strict_gpu=True)
    assert sess.providers == ["CPUExecutionProvider"] and sess.strict_gpu is False
    assert sess.fallback == session_mod.NO_CUDA_BUILD
    assert Session(model, providers="cpu").fallback is None
    code, _, err = cli(capsys, "run", model, "--random", "--providers", "cuda")
    assert code == 2 and "has no CUDAExecutionProvider" in err


def test_random_and_input_together_is_an_error(model, tmp_path, capsys):
    np.save(tmp_path / "t.npy", np.ones((2, 3), np.int32))
    code, out, err = cli(capsys, "run", model, "--random", "-i", f"t={tmp_path / 't.npy'}")
    assert code == 2 and out == "" and "--random and --input: expected one of them" in err


def test_debug_before_or_after_the_command(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x0agarbage")
    for args in (["--debug", "inspect", bad], ["inspect", bad, "--debug"], ["--debug", "run", bad, "--random"]):
        r = rnnc(*args)
        assert r.returncode == 2 and "Traceback" in r.stderr and "file error:" in r.stderr, args
    r = rnnc("inspect", bad)
    assert r.returncode == 2 and "Traceback" not in r.stderr


def test_closed_stdout_exits_quietly(model):
    p = subprocess.Popen([sys.executable, "-m", "rnnc", "inspect", str(model), "--format", "json"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    p.stdout.close()                      # `| head -0`: the reader is gone before rnnc writes
    err = p.stderr.read().decode()
    assert p.wait(timeout=300) == 141 and err == ""


def test_picture_names_must_match_their_format(model, tmp_path, capsys):
    code, out, err = cli(capsys, "inspect", model, "--svg", tmp_path / "g.png")
    assert code == 2 and out == "" and "--svg" in err and "expected a file name ending in .svg (for a .png picture " \
        "use --png)" in err
    code, _, err = cli(capsys, "inspect", model, "--png", tmp_path / "g")
    assert code == 2 and "expected a file name ending in .png" in err
    assert list(tmp_path.iterdir()) == [model]


# ---- small things users expect ----------------------------------------------------------------

def test_run_prints_values_without_an_output_file(model, tmp_path, capsys):
    tokens = np.array([[1, 2, 3], [4, 5, 6]], np.int32)
    np.save(tmp_path / "t.npy", tokens)
    want = Session(model).run({"t": tokens})["out"]
    code, out, _ = cli(capsys, "run", model, "-i", f"t={tmp_path / 't.npy'}")
    assert code == 0 and "  out: float32 (2, 2)" in out
    shown = [float(x) for x in re.findall(r"-?\d+\.\d+(?:e-?\d+)?", out.split("out: float32 (2, 2)")[1])]
    np.testing.assert_allclose(shown, want.ravel(), rtol=1e-4, atol=1e-6)
    code, out, _ = cli(capsys, "run", model, "-i", f"t={tmp_path / 't.npy'}", "-o", tmp_path / "y.npz")
    assert code == 0 and "[" not in out                                  # written, not printed
    code, out, _ = cli(capsys, "run", model, "-i", f"t={tmp_path / 't.npy'}", "-o", tmp_path / "y.npz", "--print")
    assert code == 0 and "[[" in out
    # a big output is summarized
    big = compile_text("rnnc: 1\ninputs: {x: {shape: [batch, 4]}}\nlayers:\n  - {type: Dense, name: d, units: 500}\n")
    (tmp_path / "big.onnx").write_bytes(big.model.SerializeToString())
    np.save(tmp_path / "x.npy", np.ones((300, 4), np.float32))
    code, out, _ = cli(capsys, "run", tmp_path / "big.onnx", "-i", f"x={tmp_path / 'x.npy'}")
    assert code == 0 and "..." in out and len(out.splitlines()) < 20 and max(map(len, out.splitlines())) <= 100


def test_check_prints_the_notes_compile_prints(tmp_path, capsys):
    spec = tmp_path / "s.yaml"
    spec.write_text(SPEC)
    code, out, _ = cli(capsys, "check", spec)
    assert code == 0 and "  rec: recurrent_dropout=0.2 ignored at inference" in out
    code, compiled, _ = cli(capsys, "compile", spec, "-o", tmp_path / "m.onnx")
    assert out.splitlines()[1:] == compiled.splitlines()[1:]


def test_inspect_text_fits_100_columns(tmp_path, capsys):
    for spec in sorted(SPECS.glob("*.yaml")):
        code, out, err = cli(capsys, "inspect", spec)
        assert code == 0, err
        too_long = [line for line in out.splitlines() if len(line) > 100]
        assert not too_long, (spec.name, too_long)
    long = "layer_with_a_really_long_name_" * 3
    text = SPEC.replace("name: rec", f"name: {long}")
    (tmp_path / "long.onnx").write_bytes(compile_text(text).model.SerializeToString())
    code, out, _ = cli(capsys, "inspect", tmp_path / "long.onnx")
    assert code == 0 and all(len(line) <= 100 for line in out.splitlines())
    assert long in "".join(out.split())          # wrapped, not cut
    assert "why: native: ONNX GRU op" in out and "note: recurrent_dropout=0.2 ignored at inference" in out


def test_pictures_have_a_legend(model, capsys):
    code, out, _ = cli(capsys, "inspect", model, "--format", "dot")
    assert code == 0
    g = parse_dot(out)
    legend = {k: n for k, n in g["nodes"].items() if n["cluster"] == ("cluster_legend",)}
    assert {n["fillcolor"] for n in legend.values()} >= {"#c8e6c9", "#ffcdd2", "#bbdefb", "#ffe0b2"}
    assert any("CPU" in n["label"] for n in legend.values()) and any("Loop/If/Scan" in n["label"]
                                                                      for n in legend.values())
    json.dumps(g)
