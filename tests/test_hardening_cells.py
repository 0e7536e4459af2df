"""Silent mistakes in custom cells become errors or located warnings (the issue "Hardening
from a new user's trial"): a state never assigned is refused, a parameter never read and a
name assigned and never used are warnings in the layer's notes; unknown step functions get
"did you mean"; `layers: []` says it is empty."""
from __future__ import annotations

import subprocess
import sys

import pytest

from rnnc.errors import SpecError
from rnnc.ir import build_graph
from rnnc.spec import load_spec_text

CELL = """rnnc: 1
cells:
  C:
    attrs: [units]
    params:
      kernel: {shape: [input, units]}
      r: {shape: [units, units]}
    state: {h: [units]}
    step: |
      STEP
    output: h
inputs:
  x: {shape: [batch, time, 3]}
layers:
  - {type: RNN, name: rnn, cell: {type: C, units: 4}}
"""
STEP_LINE = 10      # the step's first line in the file


def cell(*lines: str) -> str:
    return CELL.replace("STEP", "\n      ".join(lines))


def problem(text: str) -> str:
    with pytest.raises(SpecError) as e:
        build_graph(load_spec_text(text, "m.yaml"))
    assert len(e.value.problems) == 1, e.value.report()
    return str(e.value.problems[0])


def notes(text: str) -> tuple[str, ...]:
    return build_graph(load_spec_text(text, "m.yaml")).layers["rnn"].notes


def test_a_state_never_assigned_is_an_error_at_the_likely_slip():
    msg = problem(cell("y = tanh(x @ kernel + h @ r)"))        # meant `h = ...`
    assert msg.startswith(f"m.yaml:{STEP_LINE}: cells.C.step: column 7: state `h` is never assigned"), msg
    assert "`y` here is assigned and never used: did you mean `h = ...`?" in msg, msg
    # two unused names: the one of the state's shape is named, at its line
    msg = problem(cell("s = sum(x, axis=-1)", "y = tanh(x @ kernel + h @ r)"))
    assert msg.startswith(f"m.yaml:{STEP_LINE + 1}:") and "`y` here" in msg, msg


def test_a_state_never_assigned_without_a_candidate_says_how_to_keep_it():
    text = CELL.replace("state: {h: [units]}", "state: {h: [units], c: [units]}")
    msg = problem(text.replace("STEP", "h = tanh(x @ kernel + h @ r)"))
    assert "state `c` is never assigned" in msg and "write `c = c` to keep it unchanged" in msg, msg
    notes(text.replace("STEP", "h = tanh(x @ kernel + h @ r)\n      c = c"))     # `c = c` is fine


def test_cli_refuses_the_users_cell_and_writes_nothing(tmp_path):
    spec = tmp_path / "m.yaml"
    spec.write_text(cell("y = tanh(x @ kernel + h @ r)"))
    r = subprocess.run([sys.executable, "-m", "rnnc", "compile", str(spec), "-o", str(tmp_path / "m.onnx")],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "state `h` is never assigned" in r.stderr, r.stderr
    assert not (tmp_path / "m.onnx").exists()


def test_a_parameter_never_read_is_a_located_warning():
    ns = notes(cell("h = tanh(x @ kernel + h)"))
    assert ns == ("warning: m.yaml:7: cells.C.params.r: parameter `r` is declared but the step never uses it to "
                  "compute the outputs or states: it has no effect (use it, or remove it from params)",), ns
    # read only by a dead value: still unused, and the dead value is named too
    ns = notes(cell("t = h @ r", "h = tanh(x @ kernel + h)"))
    assert any("parameter `r`" in n for n in ns) and any("`t` is assigned and never used" in n for n in ns), ns


def test_an_unused_name_is_a_warning_at_its_line():
    ns = notes(cell("z = x @ kernel", "t = z * 2", "h = tanh(z + h @ r)"))
    assert ns == (f"warning: m.yaml:{STEP_LINE + 1}: cells.C.step: column 7: `t` is assigned and never used "
                  "(name it `_t` if that is meant)",), ns
    # an unused split part too, unless named as a discard; an overwritten value too
    ns = notes(cell("a, b = split(x @ kernel, [2, 2])", "h = tanh(concat([a, a], axis=-1) + h @ r)"))
    assert len(ns) == 1 and "`b` is assigned and never used" in ns[0], ns
    assert notes(cell("a, _b = split(x @ kernel, [2, 2])", "h = tanh(concat([a, a], axis=-1) + h @ r)")) == ()
    ns = notes(cell("z = x @ kernel", "z = tanh(x @ kernel)", "h = tanh(z + h @ r)"))
    assert len(ns) == 1 and f"m.yaml:{STEP_LINE}:" in ns[0] and "`z` is assigned and never used" in ns[0], ns
    assert notes(cell("h = tanh(x @ kernel + h @ r)")) == ()


def test_warnings_are_shown_by_compile_and_carried_to_inspect(tmp_path):
    spec = tmp_path / "m.yaml"
    spec.write_text(cell("t = h * 2", "h = tanh(x @ kernel + h @ r)"))
    out = tmp_path / "m.onnx"
    r = subprocess.run([sys.executable, "-m", "rnnc", "compile", str(spec), "-o", str(out)],
                       capture_output=True, text=True)
    assert r.returncode == 0 and "rnn: warning: " in r.stdout and "`t` is assigned and never used" in r.stdout, r
    r = subprocess.run([sys.executable, "-m", "rnnc", "inspect", str(out)], capture_output=True, text=True)
    assert r.returncode == 0 and "note: warning: " in r.stdout and "`t` is assigned" in r.stdout, r


def test_bidirectional_shows_a_cell_warning_once():
    text = cell("t = h * 2", "h = tanh(x @ kernel + h @ r)").replace(
        "  - {type: RNN, name: rnn, cell: {type: C, units: 4}}",
        "  - {type: Bidirectional, name: rnn, layer: {type: RNN, cell: {type: C, units: 4}}}")
    ns = notes(text)
    assert len(ns) == 1 and "`t` is assigned and never used" in ns[0], ns


@pytest.mark.parametrize("step, hint", [("h = tahn(x @ kernel + h @ r)", "Did you mean `tanh`?"),
                                        ("h = sigmod(x @ kernel + h @ r)", "Did you mean `sigmoid`?"),
                                        ("h = tanh(x @ kernal + h @ r)", "Did you mean `kernel`?")])
def test_unknown_functions_and_names_get_did_you_mean(step, hint):
    msg = problem(cell(step))
    assert hint in msg and msg.startswith(f"m.yaml:{STEP_LINE}:"), msg


def test_empty_layers_says_empty_list():
    with pytest.raises(SpecError) as e:
        load_spec_text("rnnc: 1\ninputs:\n  x: {shape: [batch, time, 3]}\nlayers: []\n", "m.yaml")
    assert "m.yaml:4: layers: expected a non-empty list of layers, got an empty list" in e.value.report()
