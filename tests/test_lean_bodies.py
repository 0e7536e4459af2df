"""Loop bodies as lean as hand-built ones, and the right-padded mask check in a few nodes."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from test_custom_cells import body_of, spec, step_lstm_cells
from test_lowering import HEAD, masked_input

from helpers import check_parity


@pytest.mark.parametrize("provider, want", [
    ("cpu", ["Gemm", "Sigmoid", "Split", "Mul", "Gemm", "Tanh", "Mul", "Add", "Tanh", "Mul", "Identity"]),
    ("cuda", ["Gemm", "Split", "Sigmoid", "Split", "Mul", "Tanh", "Mul", "Add", "Tanh", "Mul", "Identity"])])
def test_step_lstm_body_at_64_units(provider, want):
    """specs/lstm_custom_cell.yaml's cell at 64 units, forced onto the Scan. For the CUDA
    provider the two column slices of the gate product are one Split; for the CPU provider each
    slice is a product of its own, read by its activation alone, which ONNX Runtime fuses into
    the Gemm (two FusedGemm kernels: rnnc/passes/sink_slices.py). The Identity stays: h leaves the
    body as the next state and as the sequence, and ONNX Runtime's Scan silently returns wrong
    values for a repeated output name (and for a body input passed through as an output)."""
    text = spec(step_lstm_cells(), "  - {type: RNN, name: r, return_sequences: true, "
                "cell: {type: StepLSTM, units: 64}}\n", "x: {shape: [batch, time, 5]}")
    c, _, _ = check_parity(text, native=0, loops=1, dims={"batch": 2, "time": 3}, provider=provider)
    body = [n.op_type for n in body_of(c.model).node]
    assert body == want, body


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


def _right_padded_model() -> onnx.ModelProto:
    """The run-time check alone, as a model: mask [B, T] bool -> is every row right-padded and
    non-empty (the native op with sequence_lens is exact then, else the exact loop runs)."""
    from onnx import TensorProto, helper

    from rnnc.emit.builder import GraphBuilder
    from rnnc.lower.context import LowerCtx
    from rnnc.lower.recurrent import right_padded

    b = GraphBuilder()
    b.reserve("mask")
    cond = right_padded(LowerCtx(b, None, {}, "ort"), "mask")
    b.nodes.append(helper.make_node("Identity", [cond], ["ok"]))
    g = helper.make_graph(b.nodes, "check", [helper.make_tensor_value_info("mask", TensorProto.BOOL, ["b", "t"])],
                          [helper.make_tensor_value_info("ok", TensorProto.BOOL, [])], initializer=b.initializers)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)])
    m.ir_version = 10
    return m


def test_right_padded_check_decides_as_its_definition():
    import onnxruntime as ort
    from onnx.reference import ReferenceEvaluator

    m = _right_padded_model()
    sess, ref = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]), ReferenceEvaluator(m)
    rng = np.random.default_rng(0)
    cases = [np.array([[1, 1, 1], [1, 1, 0], [1, 0, 0]]), np.array([[1, 1, 1]]),     # right-padded: fast path
             np.array([[0, 1, 1]]), np.array([[1, 0, 1]]), np.array([[1, 1, 0], [0, 0, 0]]),  # left, hole, empty
             *(rng.random((rng.integers(1, 5), rng.integers(1, 7))) > p for p in np.linspace(0.05, 0.6, 200))]
    seen = set()
    for mask in cases:
        mask = np.asarray(mask, dtype=bool)
        want = bool(all(row[0] and not np.any(row[np.argmin(row):]) if not row.all() else True for row in mask))
        for got in (sess.run(None, {"mask": mask})[0], ref.run(None, {"mask": mask})[0]):
            assert bool(got) == want, mask
        seen.add(want)
    assert seen == {True, False}
