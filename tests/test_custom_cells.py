"""Custom cells: the step language (parsed, never executed), shapes, lowering to a Loop with
the input projection hoisted, and every sequence option around it."""
from __future__ import annotations

import re

import numpy as np
import onnx
import pytest
from hypothesis_or_skip import HealthCheck, given, settings, st  # skips the property tests without hypothesis

from helpers import assert_streams_like_whole, check_parity, compile_text, op_counts, random_feeds
from rnnc.errors import SpecError
from rnnc.ir import build_graph
from rnnc.spec import load_spec_text

MINIMAL = """cells:
  MinimalRNNCell:
    attrs: [units]
    params:
      kernel: {shape: [input, units]}
      recurrent_kernel: {shape: [units, units], init: orthogonal}
      bias: {shape: [units], init: zeros}
    state: {h: [units]}
    step: |
      h = tanh(x @ kernel + h @ recurrent_kernel + bias)
    output: h
"""

PEEPHOLE = """cells:
  Peep:
    attrs: [units]
    params:
      kernel: {shape: [input, 4 * units]}
      recurrent_kernel: {shape: [units, 4 * units]}
      bias: {shape: [4 * units]}
      peephole: {shape: [3, units]}
    state: {h: [units], c: [units]}
    step: |
      z = x @ kernel + h @ recurrent_kernel + bias
      zi, zf, zc, zo = split(z, 4)
      i = sigmoid(zi + peephole[0] * c)
      f = sigmoid(zf + peephole[1] * c)
      c = f * c + i * tanh(zc)
      o = sigmoid(zo + peephole[2] * c)
      h = o * tanh(c)
    output: h
"""


def spec(cells: str, layers: str, inputs: str = "x: {shape: [batch, time, 3]}", extra: str = "") -> str:
    """A spec whose custom cells run as their time loop, the lowering these tests are about:
    an RNN layer without `lowering:` gets `lowering: loop` (several of these cells are built-in
    forms that lowering: auto would recognize as native ops: tests/test_recognize.py)."""
    layers = "".join(re.sub(r"\{type: RNN, ", "{type: RNN, lowering: loop, ", line) if "lowering:" not in line
                     else line for line in layers.splitlines(keepends=True))
    return f"rnnc: 1\n{cells}inputs:\n  {inputs}\nlayers:\n{layers}{extra}"


def body_of(model: onnx.ModelProto) -> onnx.GraphProto:
    def find(g):
        for n in g.node:
            for a in n.attribute:
                if a.type == onnx.AttributeProto.GRAPH:
                    if n.op_type in ("Loop", "Scan"):
                        return a.g
                    found = find(a.g)
                    if found is not None:
                        return found
        return None
    return find(model.graph)


@pytest.mark.parametrize("options", [
    "return_sequences: true", "return_state: true", "go_backwards: true, return_sequences: true",
    "return_sequences: true, return_state: true, lowering: unroll",
])
@pytest.mark.parametrize("cells", [MINIMAL, PEEPHOLE], ids=["minimal", "peephole"])
def test_custom_cell_parity(cells, options):
    name = "MinimalRNNCell" if "Minimal" in cells else "Peep"
    text = spec(cells, f"  - {{type: RNN, name: r, cell: {{type: {name}, units: 4}}, {options}}}\n",
                "x: {shape: [batch, 5, 3]}", "outputs: [r, r.states]\n" if "return_state" in options else "")
    check_parity(text, native=0, loops=0 if "unroll" in options else 1)


def test_hoisting_moves_the_input_projection_out_of_the_loop():
    text = spec(MINIMAL, "  - {type: RNN, name: r, cell: {type: MinimalRNNCell, units: 4}, return_sequences: true}\n")
    c, _, _ = check_parity(text, native=0, loops=1)
    body = [n.op_type for n in body_of(c.model).node]
    # x @ kernel + bias for all steps before the time loop (a Scan hands the body row t); per
    # step: h @ U + row (one Gemm), tanh, and an Identity because h leaves the body twice (next
    # state, and the sequence)
    assert sorted(body) == ["Gemm", "Identity", "Tanh"], body
    main = [n.op_type for n in c.model.graph.node]
    # ... as one MatMul over [T, B, in + 1]: the bias folds into the product ([x, 1] @ [W; b])
    assert main.count("MatMul") == 1 and "Add" not in main, main
    assert c.graph.layers["r"].cells[0].hoisted
    import rnnc
    from rnnc.spec import load_spec_text as lst
    flat = rnnc.compile_spec(lst(text, "t.yaml"), weights=c.weights, hoist=False)
    flat_body = [n.op_type for n in body_of(flat.model).node]
    # unhoisted, the body computes x @ kernel + bias too (a second Gemm)
    assert sorted(flat_body) == ["Gemm", "Gemm", "Identity", "Tanh"], flat_body


def test_reassociation_keeps_the_parsed_step_for_the_reference():
    c = compile_text(spec(PEEPHOLE, "  - {type: RNN, name: r, cell: {type: Peep, units: 3}}\n"))
    cell = c.graph.layers["r"].cells[0]
    assert cell.lowered is not None and cell.lowered is not cell.program
    assert "gemm" in {n.op for n in cell.lowered.nodes} and "gemm" not in {n.op for n in cell.program.nodes}


@pytest.mark.parametrize("pattern", ["none", "holes"])
def test_loop_control_flow_agrees(pattern):
    """The time loop in its reference form, an ONNX Loop, instead of the default Scan: same
    numbers on both runtimes."""
    from test_lowering import masked_input

    import rnnc
    from helpers import assert_close, run_onnx_reference, run_ort
    from rnnc.reference import run_reference
    text = spec(PEEPHOLE, "  - {type: Masking}\n  - {type: RNN, name: r, return_sequences: true, return_state: true, "
                "go_backwards: true, cell: {type: Peep, units: 3}}\n  - {type: GRU, name: g, units: 2, "
                "lowering: loop, return_sequences: true}\n", "x: {shape: [batch, 6, 3]}", "outputs: [r, r.states, g]\n")
    base = compile_text(text)
    assert op_counts(base.model)["Scan"] == 2 and op_counts(base.model)["Loop"] == 0
    c = rnnc.compile_spec(load_spec_text(text, "t.yaml"), weights=base.weights, control="loop")
    assert op_counts(c.model)["Loop"] == 2 and op_counts(c.model)["Scan"] == 0
    feeds = masked_input(pattern)
    want = run_reference(c.graph, c.weights, feeds)
    assert_close(run_ort(c.model, feeds), want)
    assert_close(run_onnx_reference(c.model, feeds), want)


def test_builtin_loop_body_is_lean():
    text = "rnnc: 1\ninputs: {x: {shape: [batch, time, 3]}}\nlayers:\n  - {type: LSTM, units: 4, lowering: loop}\n"
    c, _, _ = check_parity(text, native=0, loops=1)
    ops = [n.op_type for n in body_of(c.model).node]
    # h @ U + xp_t (one Gemm), one sigmoid over i, f, o, nothing but the equations, and the Identity
    # for h leaving the body twice (next state, and the sequence)
    assert ops.count("Sigmoid") == 1 and ops.count("Gemm") == 1 and "MatMul" not in ops, ops
    assert sorted(ops) == sorted(["Gemm", "Split", "Sigmoid", "Split", "Tanh", "Mul", "Mul", "Add",
                                  "Tanh", "Mul"]), ops


@pytest.mark.parametrize("pattern", ["right", "holes", "empty_row"])
def test_custom_cell_masks_and_bidirectional(pattern):
    from test_lowering import masked_input
    text = spec(PEEPHOLE, "  - {type: Masking}\n  - {type: RNN, name: r, return_sequences: true, return_state: true, "
                "cell: {type: Peep, units: 3}}\n  - {type: Bidirectional, name: bi, input: masking, "
                "layer: {type: RNN, return_sequences: true, cell: {type: Peep, units: 2}}}\n",
                "x: {shape: [batch, 6, 3]}", "outputs: [r, r.states, bi]\n")
    check_parity(text, feeds=masked_input(pattern), native=0, loops=3)


def test_custom_cell_initial_state_stateful_and_stacked_with_builtins():
    text = spec(MINIMAL, "  - {type: RNN, name: r, input: x, initial_state: [h0], return_sequences: true, "
                "cell: [{type: LSTMCell, units: 4}, {type: MinimalRNNCell, units: 4}, {type: GRUCell, units: 2}]}\n",
                "x: {shape: [batch, time, 3]}\n  h0: {shape: [batch, 4]}\n  c0: {shape: [batch, 4]}")
    with pytest.raises(SpecError, match="expected 4 initial state tensor"):
        compile_text(text)
    text = text.replace("initial_state: [h0]", "initial_state: [h0, c0, c0, h0]").replace("h0: {shape: [batch, 4]}",
                                                                                         "h0: {shape: [batch, 4]}")
    text = text.replace("initial_state: [h0, c0, c0, h0]", "initial_state: [h0, c0, c0, g0]").replace(
        "c0: {shape: [batch, 4]}", "c0: {shape: [batch, 4]}\n  g0: {shape: [batch, 2]}")
    check_parity(text, native=0, loops=1)
    stateful = spec(MINIMAL, "  - {type: RNN, name: r, stateful: true, cell: {type: MinimalRNNCell, units: 4}}\n",
                    "x: {shape: [2, time, 3]}")
    x = np.random.default_rng(0).normal(size=(2, 9, 3)).astype(np.float32)
    assert_streams_like_whole(compile_text(stateful), x, "r", (4,))


def test_nested_cell_from_the_guide():
    from pathlib import Path

    from helpers import random_weights
    text = (Path(__file__).parents[1] / "specs" / "nested_cell.yaml").read_text()
    # weights at the scale of the cell's `uniform` init (±0.05): the einsum sums 2,048 products
    # per output, so weights at the usual test scale would give outputs near 100, where float32
    # rounding alone exceeds 1e-5 absolute
    w = random_weights(build_graph(load_spec_text(text, "n.yaml")), scale=0.05)
    c, got, want = check_parity(text, native=0, loops=1, dims={"batch": 2, "time": 4}, weights=w)
    assert list(got) == ["rnn.output_0", "rnn.output_1", "rnn.state_s1", "rnn.state_s2"]
    assert got["rnn.output_1"].shape == (2, 20, 30) and got["rnn.state_s2"].shape == (2, 20, 30)
    # states accumulate the outputs: s1 = sum over time of o1
    g = c.graph
    feeds = random_feeds(g, {"batch": 2, "time": 4})
    assert np.allclose(feeds["input_1"].sum(axis=1) @ c.weights["rnn/kernel_1"], got["rnn.state_s1"], atol=1e-4)


LANG_CASES = [
    # (step, expected message fragment)
    ("h = tanh(x @ kernal + h)", "unknown name `kernal`"),
    ("h = tanh(x @ recurrent_kernel)", "matmul: inner dims differ: (batch, 3) @ (4, 4)"),
    ("h = h + x", "shapes (batch, 4) and (batch, 3) do not broadcast"),
    ("h = os.system('ls')", "calling `os.system`"),
    ("h = __import__('os')", "unknown function `__import__`"),
    ("h = (lambda: h)()", "calling `lambda: h`"),
    ("h = [v for v in h]", "not allowed in a step: ListComp"),
    ("h = h.T", "not allowed in a step: Attribute"),
    ("import os", "not allowed in a step: Import"),
    ("h += 1", "not allowed in a step: AugAssign"),
    ("h = h[0]", "cannot index the batch axis"),
    ("h = h[:, :2]", "state `h`: the step gives it shape (batch, 2), expected (batch, 4)"),
    ("h = h[:, 9:]", "is empty"),
    ("h = concat([h, h])", "state `h`: the step gives it shape (batch, 8), expected (batch, 4)"),
    ("a, b = split(h, 3)", "does not split into 3 equal parts"),
    ("h = sum(h, axis=0)", "axis 0 is the batch axis"),
    ("h = einsum('bi,ij->j', h, recurrent_kernel)", "the batch index must come first"),
    ("h = reshape(h, [2, 2])", "starts with -1 for the batch axis"),
    ("h = where(h, h, h)", "the condition must be a comparison"),
    ("h = h if x else h", "not allowed in a step: IfExp"),
    ("h = tanh(h, h)", "tanh() takes 1 argument(s), got 2"),
    ("h = 'text'", "expected a number, got 'text'"),
    ("h = h @", "not valid step syntax"),
    ("h = clip(h, 1, 0)", "clip: lower bound 1.0 is above upper bound 0.0"),
]


@pytest.mark.parametrize("step, message", LANG_CASES)
def test_step_language_errors_point_at_line_and_column(step, message):
    cells = MINIMAL.replace("h = tanh(x @ kernel + h @ recurrent_kernel + bias)", "z = h\n      " + step)
    text = spec(cells, "  - {type: RNN, cell: {type: MinimalRNNCell, units: 4}}\n")
    with pytest.raises(SpecError) as e:
        build_graph(load_spec_text(text, "m.yaml"))
    text_err = str(e.value.problems[0])
    assert message in text_err, text_err
    assert text_err.startswith("m.yaml:"), text_err
    line = int(text_err.split(":")[1])
    if "syntax" not in message:
        assert line == 12, text_err          # the step's second line, in the file
    assert "cells.MinimalRNNCell.step" in text_err and "column" in text_err


def test_valid_language_features_compute_like_the_reference():
    cells = MINIMAL.replace("h = tanh(x @ kernel + h @ recurrent_kernel + bias)", "\n      ".join([
        "z = x @ kernel + bias",
        "a, b = split(concat([z, -z], axis=-1), [4, 4])",
        "e = einsum('bi,ij->bj', h, recurrent_kernel)",
        "g = where(e > 0, e, 0.5 * e) ** 2 / (1 + abs(e))",
        "m = mean(stack([a, b], axis=1), axis=1) + sum(reshape(h, [-1, 2, 2]), axis=2, keepdims=True)[:, :, 0][:, ::-1][:, [0]] * 0",
        "h = clip(minimum(maximum(tanh(a + g), -0.9), 0.9) + sqrt(exp(log(1 + abs(m)))) * 0.1, -1, 1)",
        "h = transpose(reshape(h, [-1, 2, 2]), [0, 2, 1])[:, ..., 0:2]",
        "h = reshape(h, [-1, 4]) + gelu(b) * silu(b) * softplus(b) * hard_sigmoid(b) * 0.01",
    ]))
    text = spec(cells, "  - {type: RNN, name: r, return_sequences: true, cell: {type: MinimalRNNCell, units: 4}}\n")
    with pytest.raises(SpecError):    # index lists are not in the language
        compile_text(text)
    text = text.replace("[:, [0]]", "[:, 0:1]")
    for lowering in ("auto", "unroll"):    # not a built-in form: auto keeps the time loop
        check_parity(text.replace("lowering: loop", f"lowering: {lowering}").replace(
            "[batch, time, 3]", "[batch, 4, 3]"), native=0, loops=1 if lowering == "auto" else 0)


@pytest.mark.parametrize("bad, message", [
    ("cells: {C: {state: {h: [units]}, step: 'h = h', output: h, attrs: [units], oops: 1}}\n", "unknown key 'oops'"),
    ("cells: {C: {state: {h: [units]}, step: 'h = h', attrs: [units]}}\n", "missing required key 'output'"),
    ("cells: {C: {state: {h: [units]}, step: 'h = h', output: h, attrs: [units], params: {k: {shape: [1], init: he}}}}\n",
     "expected one of glorot_uniform"),
    ("cells: {LSTMCell: {state: {h: [units]}, step: 'h = h', output: h}}\n", "a custom cell needs its own name"),
    ("cells: {C: {state: {h: [units * 2 + nope]}, step: 'h = h', output: h, attrs: [units]}}\n", "unknown size `nope`"),
    ("cells: {C: {state: {h: [units]}, step: 'h = h', output: y, attrs: [units]}}\n", "output `y` is not computed"),
])
def test_cell_definition_errors(bad, message):
    text = spec(bad, "  - {type: RNN, cell: {type: C, units: 4}}\n")
    with pytest.raises(SpecError) as e:
        build_graph(load_spec_text(text, "m.yaml"))
    assert message in e.value.report()


def test_cell_attribute_and_input_errors():
    text = spec(MINIMAL, "  - {type: RNN, cell: {type: MinimalRNNCell, units: 4, extra: 2}}\n")
    with pytest.raises(SpecError, match="unknown attribute 'extra'"):
        build_graph(load_spec_text(text, "m.yaml"))
    text = spec(MINIMAL, "  - {type: RNN, cell: {type: MinimalRNNCell}}\n")
    with pytest.raises(SpecError, match="missing attribute 'units'"):
        build_graph(load_spec_text(text, "m.yaml"))
    nested = (open(__file__.replace("tests/test_custom_cells.py", "specs/nested_cell.yaml")).read()
              .replace("[batch, time, 64, 32]", "[batch, time, 64, 31]"))
    g = build_graph(load_spec_text(nested, "m.yaml"))      # sizes bind from the connected tensors
    assert g.layers["rnn"].params["kernel_2_3"] == (64, 31, 20, 30)


def test_malicious_specs_exit_2_nothing_written_nothing_run(tmp_path):
    import subprocess
    import sys
    marker = tmp_path / "ran"
    for step in (f"h = __import__('os').system('touch {marker}')", f"h = open('{marker}', 'w')",
                 "h = h.__class__.__bases__[0]", "h = eval('1')"):
        text = spec(MINIMAL.replace("h = tanh(x @ kernel + h @ recurrent_kernel + bias)", step),
                    "  - {type: RNN, cell: {type: MinimalRNNCell, units: 4}}\n")
        (tmp_path / "m.yaml").write_text(text)
        r = subprocess.run([sys.executable, "-m", "rnnc", "compile", tmp_path / "m.yaml", "-o", tmp_path / "o.onnx"],
                           capture_output=True, text=True)
        assert r.returncode == 2 and "spec error" in r.stderr and "Traceback" not in r.stderr, r.stderr
        assert not marker.exists() and not (tmp_path / "o.onnx").exists()


ATOMS = ["x", "h", "kernel", "recurrent_kernel", "bias", "units", "input", "1", "2.5", "-1", "0"]
FUNCS = ["tanh", "sigmoid", "exp", "concat", "split", "einsum", "reshape", "sum", "where", "transpose", "clip",
         "__import__", "getattr", "eval", "lambda"]


@st.composite
def step_texts(draw):
    def expr(depth):
        if depth > 2 or draw(st.booleans()):
            return draw(st.sampled_from(ATOMS))
        kind = draw(st.integers(0, 4))
        if kind == 0:
            return f"({expr(depth + 1)} {draw(st.sampled_from(['+', '-', '*', '/', '@', '**', '<', '%', '//', 'and']))} {expr(depth + 1)})"
        if kind == 1:
            return f"{draw(st.sampled_from(FUNCS))}({', '.join(expr(depth + 1) for _ in range(draw(st.integers(0, 3))))})"
        if kind == 2:
            return f"{expr(depth + 1)}[{draw(st.sampled_from([':', '0', ':, 1:3', ':, ::-1', '..., 0', 'units:']))}]"
        if kind == 3:
            return f"-{expr(depth + 1)}"
        return draw(st.text(alphabet="xh()[]+-*@:., 0123_'\"\\", max_size=12))
    lines = [f"{draw(st.sampled_from(['h', 'z', 'a, b', 'h.x', '1']))} = {expr(0)}"
             for _ in range(draw(st.integers(1, 3)))]
    return "\n".join(lines)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(step_texts())
def test_fuzzed_steps_raise_only_spec_errors(step):
    cells = MINIMAL.replace("      h = tanh(x @ kernel + h @ recurrent_kernel + bias)\n",
                            "".join(f"      {line}\n" for line in step.splitlines()))
    text = spec(cells, "  - {type: RNN, cell: {type: MinimalRNNCell, units: 4}}\n")
    try:
        g = build_graph(load_spec_text(text, "m.yaml"))
    except SpecError:
        return
    # an accepted cell assigns every state: `y = ...` for `h = ...` is refused, never a state
    # stuck at its initial value
    import ast
    assigned = {t.id for st in ast.parse(step).body for tgt in st.targets
                for t in (tgt.elts if isinstance(tgt, ast.Tuple) else [tgt]) if isinstance(t, ast.Name)}
    cell = g.layers["rnn"].cells[0]
    assert {name for name, _ in cell.states} <= assigned, step


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=80))
def test_arbitrary_step_text_raises_only_spec_errors(step):
    text = spec(MINIMAL, "  - {type: RNN, cell: {type: MinimalRNNCell, units: 4}}\n")
    try:
        spec_obj = load_spec_text(text, "m.yaml")
    except SpecError:
        return
    spec_obj.cells["MinimalRNNCell"] = {**spec_obj.cells["MinimalRNNCell"], "step": step}
    try:
        build_graph(spec_obj)
    except SpecError:
        pass


@pytest.mark.parametrize("step, state", [("h = tanh(h + 1)", "[units]"), ("h = h", "[units]"),
                                         ("h = h * 0.5 + 1", "[]")])
@pytest.mark.parametrize("masked", [False, True])
def test_step_that_reads_no_input(step, state, masked):
    """Nothing to scan: the time loop is an ONNX Loop over the input's time steps."""
    cells = f"cells:\n  C:\n    attrs: [units]\n    state: {{h: {state}}}\n    step: |\n      {step}\n    output: h\n"
    layers = ("  - {type: Masking}\n" if masked else "") + \
        "  - {type: RNN, name: r, cell: {type: C, units: 4}, return_sequences: true, return_state: true}\n"
    text = spec(cells, layers, "x: {shape: [batch, 6, 3]}", "outputs: [r, r.states]\n")
    from test_lowering import masked_input
    c, got, _ = check_parity(text, native=0, loops=1, feeds=masked_input("holes") if masked else None)
    counts = op_counts(c.model)
    assert counts["Scan" if masked else "Loop"] == 1, counts     # a mask is something to scan
    assert ("as ONNX Scan" if masked else "as ONNX Loop (the step reads no input") in c.graph.layers["r"].reason


def step_lstm_cells() -> str:
    """The `cells:` block of specs/lstm_custom_cell.yaml (an LSTM as equations)."""
    from pathlib import Path

    import yaml
    path = Path(__file__).resolve().parents[1] / "specs" / "lstm_custom_cell.yaml"
    return yaml.safe_dump({"cells": yaml.safe_load(path.read_text())["cells"]}, sort_keys=False)


@pytest.mark.parametrize("units, gemms, provider", [(8, 1, "cuda"), (256, 2, "cuda"), (8, 2, "cpu"), (256, 2, "cpu")])
def test_wide_gate_products_are_split_by_their_slices(units, gemms, provider):
    """(h @ R + c)[:, a:b] = h @ R[:, a:b] + c[:, a:b]: wide gates get a product each, so the
    loop copies no gate block; narrow ones keep one product (a node costs more than the copy),
    except for the CPU provider, where each slice's activation fuses into its own Gemm
    (rnnc/passes/sink_slices.py)."""
    text = spec(step_lstm_cells(), f"  - {{type: RNN, name: r, return_sequences: true, return_state: true, "
                f"cell: {{type: StepLSTM, units: {units}}}}}\n", "x: {shape: [batch, time, 5]}",
                "outputs: [r, r.states]\n")
    c, _, _ = check_parity(text, native=0, loops=1, dims={"batch": 2, "time": 3}, provider=provider)
    body = [n.op_type for n in body_of(c.model).node]
    # narrow: the two column slices that tile the product are one Split (no Slice)
    assert body.count("Gemm") == gemms and "Slice" not in body and body.count("Split") == 3 - gemms, body
    main = [n.op_type for n in c.model.graph.node]
    assert main.count("MatMul") == gemms and main.count("Concat") >= 1, main   # hoisted, one per slice
    assert main.count("ConstantOfShape") == 3, main     # one [x, 1] for both projections (and h0, c0)


TWO_OUT = """cells:
  TwoOut:
    attrs: [units]
    params:
      kernel: {shape: [input, units]}
      recurrent_kernel: {shape: [units, units]}
    state: {h: [units], g: [units]}
    step: |
      h = tanh(x @ kernel + h @ recurrent_kernel)
      g = h
      o = 2 * h
    output: [h, o]
"""


@pytest.mark.parametrize("options", ["return_state: true", "return_sequences: true, return_state: true"])
@pytest.mark.parametrize("control", ["scan", "loop"])
def test_a_value_leaving_the_loop_twice(options, control):
    """Two states with the same next value (g = h), and an output that is a state's next
    value beside one that is not: every body output goes out under its own name."""
    import rnnc
    from helpers import assert_close, run_onnx_reference, run_ort
    from rnnc.reference import run_reference
    text = spec(TWO_OUT, f"  - {{type: RNN, name: r, cell: {{type: TwoOut, units: 3}}, {options}}}\n",
                "x: {shape: [batch, time, 2]}", "outputs: [r, r.states]\n")
    base = compile_text(text)
    c = rnnc.compile_spec(load_spec_text(text, "t.yaml"), weights=base.weights, control=control)
    body = body_of(c.model)
    names = [o.name for o in body.output]
    assert len(names) == len(set(names)), names
    feeds = random_feeds(c.graph, {"batch": 2, "time": 4})
    want = run_reference(c.graph, c.weights, feeds)
    assert_close(run_ort(c.model, feeds), want)
    assert_close(run_onnx_reference(c.model, feeds), want)


INF_AT_MASKED = """cells:
  Ratio:
    attrs: [units]
    params:
      kernel: {shape: [input, units]}
    state: {h: [units]}
    step: |
      o = (x @ kernel) / sum(abs(x), axis=-1, keepdims=True)
      h = h + o
    output: o
"""


@pytest.mark.parametrize("lowering", ["loop", "unroll"])
@pytest.mark.parametrize("seqs", [True, False])
def test_zero_output_for_mask_selects_zero(lowering, seqs):
    """At a masked step (x all 0) the step's output is 0/0: zero_output_for_mask gives 0 there,
    as Keras does, never NaN (the zero is selected, not computed as output * 0)."""
    from test_lowering import masked_input
    text = spec(INF_AT_MASKED, "  - {type: Masking}\n  - {type: RNN, name: r, zero_output_for_mask: true, "
                f"return_sequences: {str(seqs).lower()}, lowering: {lowering}, cell: {{type: Ratio, units: 2}}}}\n",
                "x: {shape: [batch, 6, 3]}")
    with np.errstate(divide="ignore", invalid="ignore"):
        c, got, _ = check_parity(text, feeds=masked_input("right"))
    assert all(np.isfinite(v).all() for v in got.values())


@pytest.mark.parametrize("step", [
    "a, g = split(z, [3 * units, units])\n      i, f, o = split(sigmoid(a), 3)\n      gg = tanh(g)",
    "i = sigmoid(z[:, :units])\n      f = sigmoid(z[:, units:2 * units])\n      o = sigmoid(z[:, 2 * units:3 * units])\n"
    "      gg = tanh(z[:, 3 * units:])",
    "i = sigmoid(z[:, :units])\n      f = sigmoid(z[:, :units])\n      o = sigmoid(z[:, units:3 * units][:, :units])\n"
    "      gg = tanh(z[:, 2 * units:3 * units])",
], ids=["split_sizes", "four_slices", "overlapping_and_partial"])
def test_sink_slices_shapes_of_slicing(step):
    cells = ("cells:\n  C:\n    attrs: [units]\n    params:\n      kernel: {shape: [input, 4 * units]}\n"
             "      recurrent_kernel: {shape: [units, 4 * units]}\n      bias: {shape: [4 * units]}\n"
             "    state: {h: [units], c: [units]}\n    step: |\n      z = x @ kernel + h @ recurrent_kernel + bias\n"
             f"      {step}\n      c = f * c + i * gg\n      h = o * tanh(c)\n    output: h\n")
    text = spec(cells, "  - {type: RNN, name: r, return_sequences: true, cell: {type: C, units: 256}}\n",
                "x: {shape: [batch, time, 4]}")
    c, _, _ = check_parity(text, native=0, loops=1, dims={"batch": 2, "time": 3})
    assert "Slice" not in [n.op_type for n in body_of(c.model).node]    # every slice became its own Gemm
