"""Tier 1: the IR and passes on small graphs, with structural asserts."""
from __future__ import annotations

from pathlib import Path

import pytest

from rnnc.errors import RnncError
from rnnc.ir import build_graph
from rnnc.ir.printer import summary
from rnnc.passes import ChooseLowering, HoistInputProjection, PassResult, run_passes
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


def lowered(text: str, target: str = "ort"):
    from rnnc.lower import supports
    from rnnc.lower.recurrent import fusable
    g = build_graph(load_spec_text(text, "m.yaml"))
    return run_passes(g, [HoistInputProjection(), ChooseLowering(supports=supports, fusable=fusable, target=target)])


HEAD = "rnnc: 1\ninputs: {x: {shape: [batch, 7, 3]}}\nlayers:\n"


@pytest.mark.parametrize("layer, lowering, reason", [
    ("{type: LSTM, units: 2}", "native", "native: ONNX LSTM op"),
    ("{type: GRU, units: 2, recurrent_dropout: 0.5}", "native", "native: ONNX GRU op"),
    ("{type: SimpleRNN, units: 2, activation: gelu}", "loop",
     "Loop: activation 'gelu' has no form in ONNX's RNN op; as ONNX Scan (faster than Loop on ONNX Runtime)"),
    ("{type: LSTM, units: 2, unroll: true}", "unroll", "unroll: requested, time = 7"),
    ("{type: LSTM, units: 2, lowering: loop}", "loop", "Loop: requested; as ONNX Scan (faster than Loop on ONNX Runtime)"),
    ("{type: RNN, cell: [{type: GRUCell, units: 2}, {type: LSTMCell, units: 2}]}", "native",
     "native: 2 stacked ONNX ops (GRU, LSTM)"),
    ("{type: Bidirectional, layer: {type: GRU, units: 2}}", "native",
     "native: one ONNX GRU op, direction=bidirectional"),
])
def test_choose_lowering_records_why(layer, lowering, reason):
    g = lowered(HEAD + f"  - {layer}\n")
    (l,) = g.layers.values()
    assert (l.lowering, l.reason) == (lowering, reason)


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
    g = lowered(text)
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
    with pytest.raises(RnncError, match="pass 'broken' failed \\(KeyError: 'oops'\\); passes run before it: fine"):
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
