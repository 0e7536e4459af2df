"""Loop bodies as lean as hand-built ones, and the right-padded mask check in a few nodes."""
from __future__ import annotations

import onnx
import pytest
from test_custom_cells import body_of, spec, step_lstm_cells
from test_lowering import HEAD, masked_input

from helpers import check_parity


def test_step_lstm_body_at_64_units():
    """specs/lstm_custom_cell.yaml's cell at 64 units, forced onto the Scan: the two column
    slices of the gate product are one Split. The Identity stays: h leaves the body as the next
    state and as the sequence, and ONNX Runtime's Scan reads a repeated output name wrong
    (and refuses a body input passed through as an output)."""
    text = spec(step_lstm_cells(), "  - {type: RNN, name: r, return_sequences: true, "
                "cell: {type: StepLSTM, units: 64}}\n", "x: {shape: [batch, time, 5]}")
    c, _, _ = check_parity(text, native=0, loops=1, dims={"batch": 2, "time": 3})
    body = [n.op_type for n in body_of(c.model).node]
    assert body == ["Gemm", "Split", "Sigmoid", "Split", "Mul", "Tanh", "Mul", "Add", "Tanh", "Mul", "Identity"], body


def _right_padded_nodes(model: onnx.ModelProto) -> list[str]:
    g = model.graph
    producer = {o: n for n in g.node for o in n.output}
    iff = next(n for n in g.node if n.op_type == "If")
    seen, todo = [], [iff.input[0]]
    while todo:
        n = producer.get(todo.pop())
        if n is None or n in seen:
            continue
        seen.append(n)
        if n.op_type != "Cast":        # the mask's Cast to uint8 starts the check
            todo += list(n.input)
    return [n.op_type for n in seen]


@pytest.mark.parametrize("pattern", ["right", "holes", "left", "empty_row"])
@pytest.mark.parametrize("layer", ["LSTM", "Bidirectional"])
def test_right_padded_check_is_six_nodes(layer, pattern):
    inner = "{type: LSTM, units: 4, return_sequences: true}"
    rec = inner if layer == "LSTM" else f"{{type: Bidirectional, layer: {inner}}}"
    text = HEAD.format(time=6) + f"  - {{type: Masking}}\n  - {rec}\n"
    # a right-padded batch runs the native op with sequence_lens, which onnx.reference ignores
    c, _, _ = check_parity(text, feeds=masked_input(pattern), onnx_reference=pattern != "right")
    # Cast, Pad, Pad, Sub, ReduceMax, Less (the lengths and steps: inside the fast branch)
    assert sorted(_right_padded_nodes(c.model)) == sorted(["Cast", "Pad", "Pad", "Sub", "ReduceMax", "Less"])
