"""Tier 1: the IR and passes on small graphs, with structural asserts."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from rnnc.errors import InternalError
from rnnc.ir import build_graph
from rnnc.ir.graph import Recurrence
from rnnc.ir.plan import Plan, PlanError
from rnnc.ir.printer import summary
from rnnc.ir.types import Ref
from rnnc.ir.verify import verify_graph
from rnnc.passes import HoistInputProjection, PassResult, ReassociateSums, SinkSlices, run_passes
from rnnc.pipeline import pipeline
from rnnc.spec import load_spec, load_spec_text

SPECS = Path(__file__).resolve().parents[1] / "specs"


@pytest.mark.parametrize("name, total", [("lstm_classifier", 164_106), ("gru_simplernn", 361_866),
                                         ("encoder_decoder", 258_698), ("bidirectional", 80_266)])
def test_guide_param_counts(name, total):
    g = build_graph(load_spec(SPECS / f"{name}.yaml"))
    assert g.param_count() == total
    assert f"Total params: {total:,}" in summary(g)


def test_summary_rows_and_non_trainable_bn():
    text = summary(build_graph(load_spec(SPECS / "mnist_lstm.yaml")))
    lines = text.splitlines()
    assert lines[0] == 'Model: "mnist_lstm"'
    assert any(l.startswith("lstm (LSTM)") and "(batch, 64)" in l and "23,808" in l for l in lines)
    assert any(l.startswith("batch_normalization (BatchNormalization)") and "256" in l for l in lines)
    assert "Non-trainable params: 128" in text and "Trainable params: 24,586" in text


def test_summary_bidirectional_and_stacked_states():
    text = summary(build_graph(load_spec(SPECS / "stacked_cells.yaml")))
    lines = text.splitlines()
    assert any(l.startswith("stack (RNN)") and "13,392" in l for l in lines)
    assert any(l.startswith("  cell 0 (LSTMCell)") and "(batch, 32)" in l and "6,272" in l for l in lines)
    assert any(l.startswith("  cell 2 (SimpleRNNCell)") and "784" in l for l in lines)
    bi = summary(build_graph(load_spec(SPECS / "bidirectional.yaml"))).splitlines()
    assert any(l.startswith("bidirectional (Bidirectional)") and "(batch, 5, 128)" in l and "38,400" in l for l in bi)
    assert any(l.startswith("  forward (LSTM)") and "(batch, 5, 64)" in l and "19,200" in l for l in bi)
    g = build_graph(load_spec(SPECS / "stacked_cells.yaml"))
    assert g.layers["stack"].state_ports == ("state_h_0", "state_c_0", "state_1", "state_2")


def lowered(text: str, target: str = "ort", control: str = "auto"):
    g = build_graph(load_spec_text(text, "m.yaml"))
    return run_passes(g, pipeline(target=target, control=control), verify=verify_graph)


HEAD = "rnnc: 1\ninputs: {x: {shape: [batch, 7, 3]}}\nlayers:\n"
MASKED = "rnnc: 1\ninputs: {x: {shape: [batch, 7, 3]}}\nlayers:\n  - {type: Masking}\n"
NO_INPUT = ("rnnc: 1\ninputs: {x: {shape: [batch, 7, 3]}}\ncells:\n  Decay:\n    state: {h: [2]}\n"
            "    step: |\n      h = 0.5 * h + 1.0\n    output: h\nlayers:\n")


def test_control_loop_plans_a_loop():
    l = lowered(HEAD + "  - {type: LSTM, units: 2, lowering: loop}\n", control="loop").layers["lstm"]
    assert (l.plan.time_loop, l.plan.scan_free) == ("loop", False)


@pytest.mark.parametrize("head, layer, plan", [
    (HEAD, "{type: LSTM, units: 2}", Plan("native", requested="auto", native_ops=("LSTM",))),
    (HEAD, "{type: GRU, units: 2, recurrent_dropout: 0.5}", Plan("native", requested="auto", native_ops=("GRU",))),
    (HEAD, "{type: SimpleRNN, units: 2, activation: gelu}",
     Plan("loop", requested="auto", time_loop="scan", why="activation 'gelu' has no form in ONNX's RNN op")),
    (HEAD, "{type: LSTM, units: 2, unroll: true}", Plan("unroll", requested="auto", unroll_steps=7, why="requested")),
    (HEAD, "{type: LSTM, units: 2, lowering: loop}", Plan("loop", requested="loop", time_loop="scan", why="requested")),
    (HEAD, "{type: RNN, cell: [{type: GRUCell, units: 2}, {type: LSTMCell, units: 2}]}",
     Plan("native", requested="auto", native_ops=("GRU", "LSTM"))),
    (HEAD, "{type: Bidirectional, layer: {type: GRU, units: 2}}",
     Plan("native", requested="auto", native_ops=("GRU",), fused=True)),
    (HEAD, "{type: Bidirectional, layer: {type: GRU, units: 2}, backward_layer: {type: GRU, units: 3, go_backwards: true}}",
     Plan("native", requested="auto", native_ops=("GRU", "GRU"), per_half=True)),
    (MASKED, "{type: LSTM, units: 2}", Plan("native", requested="auto", native_ops=("LSTM",), masked=True,
                                            time_loop="scan")),
    (MASKED, "{type: Bidirectional, layer: {type: LSTM, units: 2}}",
     Plan("native", requested="auto", native_ops=("LSTM",), fused=True, masked=True, time_loop="scan")),
    (NO_INPUT, "{type: RNN, cell: {type: Decay}}",
     Plan("loop", requested="auto", time_loop="loop", scan_free=True,
          why="custom cell 'Decay' is not an ONNX LSTM, GRU or RNN: the step does not read its input (ONNX's ops "
              "read x at every step)")),
    (MASKED, "{type: LSTM, units: 2, lowering: unroll}",
     Plan("unroll", requested="unroll", unroll_steps=7, masked=True, why="requested")),
])
def test_choose_lowering_plans(head, layer, plan):
    g = lowered(head + f"  - {layer}\n")
    l = list(g.layers.values())[-1]
    assert l.plan == plan
    assert l.lowering == plan.strategy and l.reason == plan.reason


def test_plan_sentence_is_generated_from_its_fields():
    assert Plan("native", requested="auto", native_ops=("LSTM",)).reason == "native: ONNX LSTM op"
    assert Plan("loop", requested="loop", time_loop="loop", why="requested").reason == "Loop: requested"
    assert Plan("loop", requested="auto", time_loop="loop", scan_free=True, why="x").reason.endswith(
        "as ONNX Loop (the step reads no input for a Scan to scan)")
    assert "exact Scan" in Plan("native", requested="auto", native_ops=("GRU",), masked=True,
                                time_loop="scan").reason


@pytest.mark.parametrize("fields, why", [
    (dict(strategy="native"), "without what was requested"),
    (dict(strategy="native", requested="auto"), "without ops"),
    (dict(strategy="loop", requested="auto"), "without its time-loop op"),
    (dict(strategy="native", requested="auto", native_ops=("LSTM",), masked=True), "fallback"),
    (dict(strategy="unroll", requested="auto"), "positive step count"),
    (dict(strategy="plain", fused=True), "no recurrent lowering fields"),
    (dict(strategy="native", requested="auto", native_ops=("LSTM", "GRU"), fused=True), "exactly one op"),
    (dict(strategy="native", requested="auto", native_ops=("Conv",)), "expected ONNX ops"),
    (dict(strategy="fast"), "is not one of"),
])
def test_inconsistent_plans_are_refused(fields, why):
    with pytest.raises(PlanError, match=why):
        Plan(**fields)


def test_plan_json_round_trip_and_damage():
    p = Plan("native", requested="auto", native_ops=("GRU",), fused=True, masked=True, time_loop="scan")
    assert Plan.from_json(p.to_json()) == p
    for bad in ([], {"strategy": "native", "requested": "auto", "native_ops": "LSTM"},
                {"strategy": "loop", "requested": "auto", "time_loop": "scan", "masked": "yes"},
                {"strategy": "plain", "extra": 1}, {"requested": "auto"}):
        with pytest.raises(PlanError):
            Plan.from_json(bad)


def test_masked_reason_and_portable_target():
    text = HEAD + "  - {type: Masking}\n  - {type: LSTM, name: l, units: 2, recurrent_dropout: 0.1}\n"
    l = lowered(text).layers["l"]
    assert l.reason.startswith("native: ONNX LSTM op; mask: right-padded batches run it with sequence_lens")
    assert l.notes == ("recurrent_dropout=0.1 ignored at inference",)
    p = lowered(text, target="portable").layers["l"]
    assert p.lowering == "loop" and "onnx.reference ignores" in p.reason


def test_hoisting_pass_marks_only_state_free_nodes():
    text = ("rnnc: 1\ninputs: {x: {shape: [batch, time, 3]}}\ncells:\n  C:\n    attrs: [u]\n"
            "    params: {w: {shape: [input, u]}, r: {shape: [u, u]}, b: {shape: [u]}}\n    state: {h: [u]}\n"
            "    step: |\n      p = x @ w + b\n      q = h @ r\n      h = tanh(p + q)\n    output: h\n"
            "layers:\n  - {type: RNN, name: rnn, cell: {type: C, u: 4}}\n")
    g = run_passes(build_graph(load_spec_text(text, "m.yaml")), [HoistInputProjection()], verify=verify_graph)
    cell = g.layers["rnn"].cells[0]
    ops = {n.id: n.op for n in cell.program.nodes}
    assert sorted(ops[i] for i in cell.hoisted) == ["add", "matmul"]     # x @ w, + b


def test_pass_manager_names_the_failing_pass():
    class Broken:
        name = "broken"

        def run(self, graph):
            raise KeyError("oops")

    class Fine:
        name = "fine"

        def run(self, graph):
            return PassResult(graph, False)

    g = build_graph(load_spec_text(HEAD + "  - {type: LSTM, units: 2}\n", "m.yaml"))
    with pytest.raises(InternalError, match="pass 'broken' failed \\(KeyError: 'oops'\\); passes run before it: fine"):
        run_passes(g, [Fine(), Broken()])


def test_loop_trip_count_comes_from_shapes():
    import rnnc
    c = rnnc.compile_spec(load_spec_text(HEAD.replace("7", "time") + "  - {type: GRU, units: 2, lowering: loop}\n"),
                          control="loop")
    nodes = {o: n for n in c.model.graph.node for o in n.output}
    loop = next(n for n in c.model.graph.node if n.op_type == "Loop")
    chain, stack = set(), [loop.input[0]]
    while stack:
        name = stack.pop()
        if name in nodes:
            chain.add(nodes[name].op_type)
            stack.extend(nodes[name].input)
    assert "Shape" in chain and chain <= {"Shape", "Slice", "Squeeze", "Transpose"}
    cond = loop.input[1]
    assert cond in {i.name for i in c.model.graph.initializer}        # a constant true


def test_symbolic_dims_stay_symbolic():
    g = build_graph(load_spec_text("rnnc: 1\ninputs: {x: {shape: [n, steps, 3]}}\nlayers:\n"
                                   "  - {type: LSTM, units: 2, return_sequences: true}\n", "m.yaml"))
    assert g.layers["lstm"].outputs["output"].dims == ("n", "steps", 2)


def test_pass_order_is_checked_when_the_pipeline_is_put_together():
    g = build_graph(load_spec_text(HEAD + "  - {type: LSTM, units: 2}\n", "m.yaml"))
    with pytest.raises(InternalError, match="'hoist-input-projection' must run after sink-slices"):
        run_passes(g, [HoistInputProjection(), SinkSlices()])
    with pytest.raises(InternalError, match="twice"):
        run_passes(g, [SinkSlices(), SinkSlices()])


def test_pass_preconditions_refuse_a_graph_not_ready():
    g = lowered(HEAD + "  - {type: LSTM, units: 2}\n")       # lowering already chosen
    with pytest.raises(InternalError, match="'sink-slices' cannot run: lowering is already chosen for lstm"):
        run_passes(g, [SinkSlices()])
    hoisted = run_passes(build_graph(load_spec_text(HEAD + "  - {type: LSTM, units: 2}\n", "m.yaml")),
                         [HoistInputProjection()])
    with pytest.raises(InternalError, match="already hoisted"):
        run_passes(hoisted, [ReassociateSums()])


def test_verify_names_a_pass_that_breaks_the_ir():
    class Dangling:
        name = "dangling"

        def run(self, graph):
            (l,) = graph.layers.values()
            return PassResult(graph.replace_layer(replace(l, inputs=(Ref("nowhere"),))), True)

    g = build_graph(load_spec_text(HEAD + "  - {type: LSTM, units: 2}\n", "m.yaml"))
    with pytest.raises(InternalError, match="IR after pass 'dangling' is broken.*nowhere names no model input"):
        run_passes(g, [Dangling()], verify=verify_graph)


def test_hoist_false_leaves_the_pass_out():
    names = [p.name for p in pipeline(hoist=False)]
    assert "hoist-input-projection" not in names and names[-1] == "choose-lowering"
    text = HEAD + "  - {type: LSTM, units: 2, lowering: loop}\n"
    g = run_passes(build_graph(load_spec_text(text, "m.yaml")), pipeline(hoist=False), verify=verify_graph)
    assert not g.layers["lstm"].cells[0].project_hoisted
    assert lowered(text).layers["lstm"].cells[0].project_hoisted


def test_unused_layers_are_planned_unused_and_emit_nothing():
    import rnnc
    text = (HEAD + "  - {type: LSTM, name: used, units: 2}\n  - {type: GRU, name: spare, units: 3, input: x}\n"
            "outputs: [used]\n")
    c = rnnc.compile_spec(load_spec_text(text, "m.yaml"))
    assert c.graph.layers["spare"].plan.strategy == "unused"
    assert not any(n.name.startswith("spare") or n.op_type == "GRU" for n in c.model.graph.node)
    assert c.graph.unused_layers() == ["spare"]


def test_semantics_are_fields_of_the_ir():
    g = build_graph(load_spec_text(MASKED + "  - {type: Bidirectional, name: bi, layer: {type: GRU, units: 2, "
                                   "return_sequences: true, zero_output_for_mask: false}}\n", "m.yaml"))
    fwd, bwd = g.layers["bi"].sublayers
    assert fwd.recurrence == Recurrence(go_backwards=False, return_sequences=True, zero_output_for_mask=True)
    assert bwd.recurrence == Recurrence(go_backwards=True, return_sequences=True, zero_output_for_mask=True,
                                        reverse_output=True)
    two = ("rnnc: 1\ninputs: {a: {shape: [batch, 7], dtype: int32}, b: {shape: [batch, 7], dtype: int32}}\n"
           "layers:\n  - {type: Embedding, name: ea, input: a, input_dim: 5, output_dim: 3, mask_zero: true}\n"
           "  - {type: Embedding, name: eb, input: b, input_dim: 5, output_dim: 3}\n"
           "  - {type: Concatenate, name: cat, input: [ea, eb]}\n  - {type: Add, name: add, input: [ea, eb]}\n"
           "  - {type: Add, name: same, input: [ea, ea]}\n")
    g = build_graph(load_spec_text(two, "m.yaml"))
    assert (g.layers["cat"].mask_merge, g.layers["cat"].input_masks) == ("concat", (Ref("ea", "mask"), None))
    assert (g.layers["add"].mask_merge, g.layers["add"].mask_out) == (None, None)      # an input has no mask
    assert (g.layers["same"].mask_merge, g.layers["same"].mask_out) == (None, Ref("ea", "mask"))  # passed through
