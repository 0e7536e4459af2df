"""A bug in rnnc is not a user error: an InternalError (or any unexpected exception) exits 1
and says it is a bug, writes nothing, and is never accepted as a clean refusal by the fuzz
tests (which accept RnncError only)."""
from __future__ import annotations

from pathlib import Path

import onnx
import pytest
import yaml
from test_fuzz_spec import compile_or_refuse

import rnnc
from rnnc import cli
from rnnc.errors import InternalError, RnncError
from rnnc.passes.manager import PassError
from rnnc.passes.sink_slices import SinkSlices

SPEC = Path(__file__).resolve().parents[1] / "specs" / "lstm_custom_cell.yaml"


@pytest.fixture
def broken_pass(monkeypatch):
    """SinkSlices.run raises KeyError (an injected compiler bug); counts its calls."""
    calls = []

    def run(self, graph):
        calls.append(1)
        raise KeyError("injected")

    monkeypatch.setattr(SinkSlices, "run", run)
    return calls


def test_internal_error_is_outside_the_user_error_tree():
    assert not issubclass(InternalError, RnncError)
    assert issubclass(PassError, InternalError)
    assert InternalError.exit_code == 1 and RnncError.exit_code == 2


def test_pass_bug_exits_1_says_bug_and_writes_nothing(tmp_path, capsys, broken_pass):
    out = tmp_path / "m.onnx"
    rc = cli.main(["compile", str(SPEC), "-o", str(out)])
    err = capsys.readouterr().err
    assert broken_pass, "the injected pass never ran"
    assert rc == 1
    assert "bug in rnnc" in err and "sink-slices" in err and "KeyError" in err and "--debug" in err
    assert "Traceback" not in err
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_debug_shows_the_traceback_of_a_bug(tmp_path, capsys, broken_pass):
    rc = cli.main(["compile", str(SPEC), "-o", str(tmp_path / "m.onnx"), "--debug"])
    err = capsys.readouterr().err
    assert rc == 1 and "Traceback" in err and "bug in rnnc" in err


def test_fuzz_helper_rejects_an_internal_error(broken_pass):
    spec = yaml.safe_load(SPEC.read_text())
    with pytest.raises(InternalError, match="sink-slices"):
        compile_or_refuse(spec)
    assert broken_pass


def test_fuzz_helper_accepts_a_user_error():
    compile_or_refuse({"rnnc": 1, "inputs": {"x": {"shape": ["batch", "time", 3]}},
                       "layers": [{"type": "LSTM", "units": -1}]})


def test_checker_failure_is_an_internal_error(monkeypatch):
    def fail(model, full_check=False):
        raise onnx.checker.ValidationError("injected")

    monkeypatch.setattr(onnx.checker, "check_model", fail)
    with pytest.raises(InternalError, match="fails onnx.checker: injected"):
        rnnc.compile_spec(str(SPEC.with_name("lstm_classifier.yaml")))


def test_any_unexpected_exception_exits_1(capsys, monkeypatch):
    def boom(graph):
        raise ValueError("injected")

    monkeypatch.setattr("rnnc.ir.printer.summary", boom)   # what `rnnc summary` calls
    rc = cli.main(["summary", str(SPEC)])
    err = capsys.readouterr().err
    assert rc == 1 and "bug in rnnc" in err and "ValueError: injected" in err


def test_user_error_still_exits_2(tmp_path, capsys):
    rc = cli.main(["compile", str(tmp_path / "missing.yaml"), "-o", str(tmp_path / "m.onnx")])
    err = capsys.readouterr().err
    assert rc == 2 and "bug in rnnc" not in err
