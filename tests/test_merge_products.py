"""merge-products (rnnc/passes/merge_products.py): the products of one left operand become one
product over concatenated weights, gates of one activation share one activation node, so a
cell whose gate kernels are kept apart gets the single-kernel cell's loop body; exact, and
left alone where it would change a value or where sink-slices would undo it."""
from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import pytest
from test_custom_cells import body_of, spec, step_lstm_cells
from test_lowering import masked_input

import rnnc
from helpers import assert_close, op_counts, random_feeds, run_ort
from helpers import check_parity as _check_parity
from helpers import compile_text as _compile_text
from rnnc.cells.lang import evaluate, state_dependent
from rnnc.cells.ops import OPS, SOURCES, result_shape
from rnnc.ir import build_graph
from rnnc.passes.merge_products import MergeProducts, merge
from rnnc.passes.reassociate import reassociate
from rnnc.passes.sink_slices import sink
from rnnc.pipeline import pipeline
from rnnc.reference import run_reference
from rnnc.spec import load_spec_text


# The merge's own structure (one product per left operand) is what a model compiled for the
# CUDA provider keeps, and what most tests here look at; for the CPU provider sink-slices then
# cuts a merged product at its activation runs, because a Gemm fuses with the activation after it
# there (tested at the end of this file).
def check_parity(text: str, **kw):
    return _check_parity(text, provider=kw.pop("provider", "cuda"), **kw)


def compile_text(text: str, **kw):
    return _compile_text(text, provider=kw.pop("provider", "cuda"), **kw)


def cell(name: str, step: str, params: dict[str, str], state: str = "{h: [units], c: [units]}") -> str:
    """A `cells:` block: cell `name` with `params` (name -> shape) and the step's lines."""
    ps = "".join(f"      {k}: {{shape: {v}}}\n" for k, v in params.items())
    lines = "".join(f"      {line.strip()}\n" for line in step.strip().splitlines())
    return (f"cells:\n  {name}:\n    attrs: [units]\n    params:\n{ps}    state: {state}\n    step: |\n{lines}"
            "    output: h\n")


def gate_params(gates: str, prefix: tuple[str, str, str] = ("w", "u", "b")) -> dict[str, str]:
    w, u, b = prefix
    return {**{f"{w}{g}": "[input, units]" for g in gates}, **{f"{u}{g}": "[units, units]" for g in gates},
            **{f"{b}{g}": "[units]" for g in gates}}


SPLIT_LSTM_STEP = """i = sigmoid(x @ wi + h @ ui + bi)
f = sigmoid(x @ wf + h @ uf + bf)
o = sigmoid(x @ wo + h @ uo + bo)
g = tanh(x @ wg + h @ ug + bg)
c = f * c + i * g
h = o * tanh(c)"""
SPLIT_LSTM = cell("SplitLSTM", SPLIT_LSTM_STEP, gate_params("ifog"))


def layer(cell_name: str, units: int, options: str = "return_sequences: true") -> str:
    return f"  - {{type: RNN, name: r, {options}, cell: {{type: {cell_name}, units: {units}}}}}\n"


def body(model: onnx.ModelProto) -> list[str]:
    return [n.op_type for n in body_of(model).node]


def bodies(model: onnx.ModelProto) -> list[list[str]]:
    """The op types of every time loop's body (a Bidirectional has one per half)."""
    found = []

    def walk(g: onnx.GraphProto) -> None:
        for n in g.node:
            for a in n.attribute:
                if a.type == onnx.AttributeProto.GRAPH:
                    if n.op_type in ("Scan", "Loop"):
                        found.append([m.op_type for m in a.g.node])
                    walk(a.g)
    walk(model.graph)
    return found


def step_lstm_body(units: int, provider: str = "cuda") -> list[str]:
    """specs/lstm_custom_cell.yaml's body at `units`, forced onto the Scan, as compiled today."""
    c = compile_text(spec(step_lstm_cells(), layer("StepLSTM", units), "x: {shape: [batch, time, 5]}"),
                     provider=provider)
    return body(c.model)


def lowered_step(text: str):
    """The custom cell's step as reassociate-sums leaves it (merge-products' input)."""
    graph = build_graph(load_spec_text(text, "t.yaml"))
    return reassociate(graph.layers["r"].cells[0].program)


def state_products(prog) -> list:
    dep = state_dependent(prog)
    return [n for n in prog.nodes if n.op in ("gemm", "matmul") and dep[n.id]]


# ---- the cell ------------------------------------------------------------------------


def test_split_kernels_get_the_single_kernel_body():
    """Four gate kernels kept apart, forced onto the Scan: one Gemm over [ui | uf | uo | ug], one
    Sigmoid over i, f, o side by side, as specs/lstm_custom_cell.yaml's body (which was four
    Gemms, three Sigmoids and a Tanh: 14 nodes)."""
    text = spec(SPLIT_LSTM, layer("SplitLSTM", 64), "x: {shape: [batch, time, 5]}")
    c, _, _ = check_parity(text, native=0, loops=1, dims={"batch": 2, "time": 3})
    got, want = body(c.model), step_lstm_body(64)
    assert Counter(got) == Counter(want), (got, want)
    assert got[:4] == ["Gemm", "Split", "Sigmoid", "Split"], got
    counts = Counter(got)
    assert counts["Gemm"] == 1 and counts["Sigmoid"] == 1 and counts["Tanh"] == 2 and "Slice" not in got, got
    main = [n.op_type for n in c.model.graph.node]
    # the hoisted side: x @ [wi | wf | wo | wg] + [bi | bf | bo | bg] as one MatMul over [x, 1]
    assert main.count("MatMul") == 1 and main.count("Gemm") == 0, main
    step = c.graph.layers["r"].cells[0]
    assert len(state_products(step.step_program)) == 1
    assert step.program is not step.lowered and len(state_products(step.program)) == 4   # the reference's


def test_unhoisted_merge_still_computes_the_cell():
    """hoist=False (benchmarks): the weights' Concat runs in the body, the numbers are the same."""
    text = spec(SPLIT_LSTM, layer("SplitLSTM", 8), "x: {shape: [batch, 5, 3]}")
    base = compile_text(text)
    flat = rnnc.compile_spec(load_spec_text(text, "t.yaml"), weights=base.weights, hoist=False, provider="cuda")
    feeds = random_feeds(flat.graph)
    assert_close(run_ort(flat.model, feeds), run_reference(flat.graph, flat.weights, feeds))
    assert Counter(body(flat.model))["Gemm"] == 2     # the merged product and the merged projection


@pytest.mark.parametrize("pattern", ["right", "holes", "empty_row"])
def test_masked_and_bidirectional(pattern):
    text = spec(SPLIT_LSTM, "  - {type: Masking}\n" + layer("SplitLSTM", 4, "return_sequences: true, return_state: true")
                + "  - {type: Bidirectional, name: bi, input: masking, layer: "
                  "{type: RNN, go_backwards: false, return_sequences: true, cell: {type: SplitLSTM, units: 3}}}\n",
                "x: {shape: [batch, 6, 3]}", "outputs: [r, r.states, bi]\n")
    c, _, _ = check_parity(text, feeds=masked_input(pattern), native=0, loops=3)
    for ops in bodies(c.model):
        counts = Counter(ops)
        assert counts["Gemm"] == 1 and counts["Sigmoid"] == 1, ops


@pytest.mark.parametrize("options", ["return_state: true", "go_backwards: true, return_sequences: true",
                                     "return_sequences: true, return_state: true, lowering: unroll"])
def test_sequence_options(options):
    text = spec(SPLIT_LSTM, layer("SplitLSTM", 3, options), "x: {shape: [batch, 5, 3]}",
                "outputs: [r, r.states]\n" if "return_state" in options else "")
    c, _, _ = check_parity(text, native=0, loops=0 if "unroll" in options else 1)
    assert op_counts(c.model)["Gemm"] == (5 if "unroll" in options else 1)     # one per step


def test_recognition_still_sees_an_lstm():
    """lowering: auto proves the merged step an LSTM (recognize-builtins reads the final step:
    the slices of the concatenated weights are its W and R) and runs the native op."""
    text = spec(SPLIT_LSTM, layer("SplitLSTM", 4, "return_sequences: true, lowering: auto"),
                "x: {shape: [batch, 5, 3]}")
    c, _, _ = check_parity(text, native=1, loops=0)
    step = c.graph.layers["r"].cells[0]
    assert step.recognized is not None and len(state_products(step.step_program)) == 1


# ---- other cells -------------------------------------------------------------------------------

GRU_STEP = """z = sigmoid(x @ wz + h @ uz + bz)
r = sigmoid(h @ ur + bias_r + x @ wr)
hh = tanh(x @ wh + (r * h) @ uh + bh)
h = z * h + (1 - z) * hh"""
GRU = cell("SplitGRU", GRU_STEP, {**gate_params("zh"), "wr": "[input, units]", "ur": "[units, units]",
                                 "bias_r": "[units]"}, "{h: [units]}")


def test_gru_with_separate_kernels():
    """z and r read h: one Gemm, one Sigmoid over both (all its columns: no Slice); hh's product
    reads r * h, another left operand, and keeps its own Gemm."""
    text = spec(GRU, layer("SplitGRU", 6), "x: {shape: [batch, 5, 3]}")
    c, _, _ = check_parity(text, native=0, loops=1)
    ops = body(c.model)
    counts = Counter(ops)
    assert counts["Gemm"] == 2 and counts["Sigmoid"] == 1 and counts["Split"] == 1 and "Slice" not in ops, ops
    auto = spec(GRU, layer("SplitGRU", 6, "return_sequences: true, lowering: auto"), "x: {shape: [batch, 5, 3]}")
    check_parity(auto, native=1, loops=0)       # still a GRU (reset gate before the product)


MIXED = cell("Mixed", """a = sigmoid(x @ wa + h @ ua + ba)
g = tanh(x @ wg + h @ ug + bg)
r = relu(h @ ur + x @ wr + br)
q = sigmoid(x @ wq + h @ uq + bq)
c = a * c + g
h = q * tanh(c) + r""", gate_params("agrq"))


def test_different_activations_share_the_product():
    """Four products of h, three activations: one Gemm whose columns are laid out [a q | g | r],
    one Split of it (the three column slices tile it), and one Sigmoid for a and q."""
    text = spec(MIXED, layer("Mixed", 5), "x: {shape: [batch, 5, 3]}")
    c, _, _ = check_parity(text, native=0, loops=1)
    ops = body(c.model)
    counts = Counter(ops)
    assert counts["Gemm"] == 1 and counts["Sigmoid"] == 1 and counts["Relu"] == 1 and "Slice" not in ops, ops
    assert counts["Split"] == 2 and counts["Tanh"] == 2, ops
    prog = c.graph.layers["r"].cells[0].step_program
    (z,) = state_products(prog)
    assert z.shape[-1] == 20


RENAMED = cell("Renamed", """gate_c = tanh(bc + h @ rc + x @ kc)
zi = h @ ri
in_gate = sigmoid(x @ ki + zi + bi)
forget = sigmoid(bf + x @ kf + h @ rf)
out_gate = sigmoid(h @ ro + (x @ ko + bo))
c = forget * c + in_gate * gate_c
h = out_gate * tanh(c)""", gate_params("cifo", ("k", "r", "b")))


def test_reordered_and_renamed_terms():
    text = spec(RENAMED, layer("Renamed", 7), "x: {shape: [batch, 5, 3]}")
    c, _, _ = check_parity(text, native=0, loops=1)
    counts = Counter(body(c.model))
    assert counts["Gemm"] == 1 and counts["Sigmoid"] == 1 and counts["Tanh"] == 2, body(c.model)


APART = cell("Apart", """h = tanh(x @ w1 + h @ u1 + b1)
c = sigmoid(x @ w2 + c @ u2 + b2) * c""", {"w1": "[input, units]", "u1": "[units, units]", "b1": "[units]",
                                           "w2": "[input, units]", "u2": "[units, units]", "b2": "[units]"})


def test_products_of_different_operands_stay_apart():
    """h @ u1 and c @ u2: two left operands, nothing to merge; the step is left as it is."""
    text = spec(APART, layer("Apart", 4), "x: {shape: [batch, 5, 3]}")
    prog = lowered_step(text)
    assert merge(prog) is prog
    c, _, _ = check_parity(text, native=0, loops=1)
    assert sorted(body(c.model)) == sorted(["Gemm", "Tanh", "Gemm", "Sigmoid", "Mul", "Identity"]), body(c.model)


OUTSIDE = cell("Outside", """m = h @ um + x @ wm
h = tanh(x @ wh + h @ uh + bh)""", {"wm": "[input, units]", "um": "[units, units]", "wh": "[input, units]",
                                     "uh": "[units, units]", "bh": "[units]"}, "{h: [units], m: [units]}")


@pytest.mark.parametrize("options", ["return_state: true", "return_sequences: true, return_state: true"])
def test_a_product_that_is_a_next_state(options):
    """m's product is a state's next value as it is: it gets its columns of the merged product
    (the projections, a MatMul and a Gemm, are concatenated as they are)."""
    text = spec(OUTSIDE, layer("Outside", 4, options), "x: {shape: [batch, 5, 3]}", "outputs: [r, r.states]\n")
    c, _, _ = check_parity(text, native=0, loops=1)
    assert Counter(body(c.model))["Gemm"] == 1, body(c.model)


# ---- wide gates: sink-slices after merge-products ---------------------------------------------------


def test_wide_gates_end_as_the_single_kernel_cell():
    """At 256 units sink-slices splits the merged product back by its activation runs: one Gemm
    for [i f o], one for g, the body specs/lstm_custom_cell.yaml's cell gets at that width."""
    text = spec(SPLIT_LSTM, layer("SplitLSTM", 256), "x: {shape: [batch, time, 5]}")
    c, _, _ = check_parity(text, native=0, loops=1, dims={"batch": 2, "time": 3})
    got, want = body(c.model), step_lstm_body(256)
    assert Counter(got) == Counter(want), (got, want)
    counts = Counter(got)
    assert counts["Gemm"] == 2 and counts["Sigmoid"] == 1 and "Slice" not in got, got


LONE = cell("Lone", """a = x @ wa + h @ ua + ba
b = h @ ub + x @ wb + bb
h = tanh(a * b / units)""", gate_params("ab"), "{h: [units]}")


@pytest.mark.parametrize("units, gemms", [(8, 1), (256, 2)])
def test_products_read_alone(units, gemms):
    """Products read by a product of both (no activation to share): merged while narrow; at 256
    columns each, left apart (sink-slices would split the merged one back into them)."""
    text = spec(LONE, layer("Lone", units), "x: {shape: [batch, time, 3]}")
    prog = lowered_step(text)
    assert (merge(prog) is prog) == (gemms == 2)
    c, _, _ = check_parity(text, native=0, loops=1, dims={"batch": 2, "time": 3})
    assert Counter(body(c.model))["Gemm"] == gemms, body(c.model)


# ---- the pass on a Program ----------------------------------------------------------------------


def _values(prog, seed: int = 0) -> list[np.ndarray]:
    """The outputs and next states of `prog` in float64 (the op table's NumPy meaning)."""
    rng = np.random.default_rng(seed)
    vals = {i: rng.normal(size=tuple(2 if d == -1 else d for d in prog.nodes[i].shape))
            for _, i in (*prog.inputs, *prog.states, *prog.params)}
    return evaluate(prog, lambda n, a: OPS[n.op].numpy(n, a), vals, [*prog.outputs, *prog.next_states])


@pytest.mark.parametrize("text", [
    spec(SPLIT_LSTM, layer("SplitLSTM", 4)), spec(GRU, layer("SplitGRU", 3)), spec(MIXED, layer("Mixed", 3)),
    spec(RENAMED, layer("Renamed", 3)), spec(OUTSIDE, layer("Outside", 3)), spec(LONE, layer("Lone", 3)),
], ids=["split_lstm", "gru", "mixed", "renamed", "outside", "lone"])
def test_merge_on_a_program(text):
    """Well formed (each node's shape as the op table gives it, args before it), computing the
    same values (float64: to rounding), fewer products of the state, and a fixed point."""
    before = lowered_step(text)
    after = merge(before)
    assert after is not before
    for n in after.nodes:
        assert all(a < n.id for a in n.args)
        if n.op not in SOURCES:
            assert result_shape(n, [after.nodes[a] for a in n.args]) == n.shape, n
    for got, want in zip(_values(after), _values(before)):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    assert len(state_products(after)) < len(state_products(before))
    assert merge(after) is after
    assert [n for n, _ in after.params] == [n for n, _ in before.params]


def test_merge_then_sink_at_256():
    """The pass's own order: sink-slices cuts the merged [B, 1024] product at its activation
    runs' boundary (768 | 256) and pushes the cut into the concatenated weights."""
    prog = merge(lowered_step(spec(SPLIT_LSTM, layer("SplitLSTM", 256))))
    (z,) = state_products(prog)
    assert z.shape[-1] == 1024
    sunk = sink(prog)
    assert sorted(n.shape[-1] for n in state_products(sunk)) == [256, 768]
    for got, want in zip(_values(sunk), _values(prog)):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_pipeline_order():
    names = [p.name for p in pipeline()]
    assert names.index("reassociate-sums") < names.index("merge-products") < names.index("sink-slices") \
        < names.index("hoist-input-projection") < names.index("recognize-builtins")
    assert MergeProducts.name in names
    # int8 multiplies kernel params (rnnc/lower/int8.py): their Concat would stay float32
    assert "merge-products" not in [p.name for p in pipeline(quantize="int8")]


# ---- the CPU provider: a product per activation run, each fused with its activation ----------------

def _ort_optimized_body(model: onnx.ModelProto, tmp_path) -> list[str]:
    """The time loop's body as ONNX Runtime's CPU provider runs it (after its graph fusions)."""
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return body(onnx.load(str(tmp_path / "optimized.onnx")))


@pytest.mark.parametrize("which", ["split", "step"])
def test_cpu_bodies_get_a_gemm_per_activation_run(which, tmp_path):
    """For the CPU provider the products of [i f o] and of g are a Gemm each, each read by its
    activation alone, which ONNX Runtime fuses into it: two FusedGemm kernels where one Gemm
    would leave a Gemm, a Split and two activations (tools/bench.py lean measures the bodies)."""
    cells = SPLIT_LSTM if which == "split" else step_lstm_cells()
    name = "SplitLSTM" if which == "split" else "StepLSTM"
    text = spec(cells, layer(name, 64), "x: {shape: [batch, time, 5]}")
    c, _, _ = check_parity(text, native=0, loops=1, dims={"batch": 2, "time": 3}, provider="cpu")
    ops = body(c.model)
    assert Counter(ops) == Counter(step_lstm_body(64, "cpu")), ops
    counts = Counter(ops)
    assert counts["Gemm"] == 2 and counts["Sigmoid"] == 1 and counts["Tanh"] == 2 and "Slice" not in ops, ops
    nodes = body_of(c.model).node
    readers = {o: [m.op_type for m in nodes if o in m.input] for n in nodes if n.op_type == "Gemm" for o in n.output}
    assert sorted(map(tuple, readers.values())) == [("Sigmoid",), ("Tanh",)], readers
    fused = Counter(_ort_optimized_body(c.model, tmp_path))
    assert fused["FusedGemm"] == 2 and fused["Gemm"] == 0, fused
    assert sum(fused.values()) == len(ops) - 2          # each pair is one kernel


def test_cpu_keeps_one_product_where_an_activation_does_not_fuse():
    """gelu is no activation ONNX Runtime fuses into a Gemm: the merged product stays one."""
    text = spec(cell("Gelu", """a = sigmoid(x @ wa + h @ ua + ba)
g = gelu(x @ wg + h @ ug + bg)
c = a * c + g
h = tanh(c)""", gate_params("ag")), layer("Gelu", 8), "x: {shape: [batch, 5, 3]}")
    c, _, _ = check_parity(text, native=0, loops=1, provider="cpu")
    assert Counter(body(c.model))["Gemm"] == 1, body(c.model)
