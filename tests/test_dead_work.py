"""No dead work in a compiled graph: every node output is read (or is an output ONNX cannot
leave out), no Transpose pair cancels out, no Identity renames a tensor its producer could
write under the output's name (rnnc/emit/peephole.py prune and cancel_transposes,
rnnc/emit/model.py)."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

import rnnc
from helpers import check_parity, run_ort
from rnnc.emit.peephole import _perm, _reads, _subgraphs

SPECS = sorted((Path(__file__).resolve().parents[1] / "specs").glob("*.yaml"))
NATIVE = ("LSTM", "GRU", "RNN")


def dead_work(g: onnx.GraphProto, where: str = "") -> list[str]:
    """What in g (and its subgraphs) does work nobody reads."""
    used: Counter = Counter(o.name for o in g.output)
    for n in g.node:
        used.update(_reads(n))
    producer = {o: n for n in g.node for o in n.output}
    found = []
    for n in g.node:
        for i, o in enumerate(n.output):
            if not o or used[o]:
                continue
            if n.op_type in NATIVE and i == 0 and any(used[x] for x in n.output[1:]):
                continue    # Y named while Y_h is read (onnx.reference: test_an_unnamed_output_...)
            if n.op_type == "Scan" and i < len(n.input) - next(a.i for a in n.attribute if a.name == "num_scan_inputs"):
                continue    # a Scan's final states: ONNX Runtime's Scan has no empty outputs
            if n.op_type == "Loop" and i < len(n.input) - 2:
                continue
            found.append(f"{where}{n.name}: output {i} ({o}) is never read")
        if n.op_type == "Transpose":
            first = producer.get(n.input[0])
            if first is not None and first.op_type == "Transpose":
                p, q = _perm(first), _perm(n)
                if [p[i] for i in q] == list(range(len(q))) or used[first.output[0]] == 1:
                    found.append(f"{where}{first.name} -> {n.name}: two Transposes that are one (or none)")
        if n.op_type == "Identity" and n.name.startswith("output/") and n.input[0] in producer \
                and Counter(o.name for o in g.output)[n.input[0]] == 0:
            found.append(f"{where}{n.name}: an Identity where the producer could write the output")
        for sg in _subgraphs(n):
            found += dead_work(sg, f"{where}{n.name}/")
    return found


@pytest.mark.parametrize("path", SPECS, ids=[p.stem for p in SPECS])
def test_example_specs_have_no_dead_work(path):
    c = rnnc.compile_spec(path)
    assert dead_work(c.model.graph) == []


def test_an_unnamed_output_in_the_middle_is_misread_by_onnx_reference():
    """Why a native op's Y keeps its name when only Y_h is read: onnx.reference stores an
    unnamed ("") output under "" and hands it to a later node's omitted inputs (here Clip's
    min), while ONNX Runtime does not; trailing outputs are simply left off (Y_c)."""
    rng = np.random.default_rng(0)
    W = numpy_helper.from_array(rng.normal(size=(1, 8, 3)).astype(np.float32), "W")
    R = numpy_helper.from_array(rng.normal(size=(1, 8, 2)).astype(np.float32), "R")
    hi = numpy_helper.from_array(np.array(0.1, np.float32), "hi")
    x = rng.normal(size=(4, 2, 3)).astype(np.float32)

    def run(y: str) -> tuple[np.ndarray, np.ndarray]:
        nodes = [helper.make_node("LSTM", ["x", "W", "R"], [y, "yh"], hidden_size=2),
                 helper.make_node("Clip", ["yh", "", "hi"], ["out"])]
        g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)], [W, R, hi])
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)])
        m.ir_version = 10
        return run_ort(m, {"x": x})["out"], ReferenceEvaluator(m).run(None, {"x": x})[0]

    ort_named, ref_named = run("y")
    np.testing.assert_allclose(ref_named, ort_named, atol=1e-6)
    ort_empty, ref_empty = run("")
    np.testing.assert_allclose(ort_empty, ort_named, atol=1e-6)
    assert not np.allclose(ref_empty, ort_named)        # the reference clipped from below by Y


def test_stacked_time_major_layers_hand_over_without_transposes():
    text = ("rnnc: 1\ninputs: {x: {shape: [batch, time, 3]}}\nlayers:\n"
            "  - {type: LSTM, units: 4, return_sequences: true}\n"
            "  - {type: Bidirectional, layer: {type: LSTM, units: 3, return_sequences: true}}\n"
            "  - {type: Bidirectional, layer: {type: GRU, units: 2, return_sequences: true}}\n"
            "  - {type: LSTM, units: 2}\n")
    c, _, _ = check_parity(text)
    ops = [n.op_type for n in c.model.graph.node]
    # one Transpose in ([B, T, 3] -> [T, B, 3]) and one per fused Bidirectional's [T, 2, B, u]
    # (-> [T, B, 2, u], then a Reshape to [T, B, 2u]): nothing goes back to batch-major between them
    assert ops.count("Transpose") == 3, ops
    assert dead_work(c.model.graph) == []


def test_embedding_gathers_from_time_major_tokens():
    text = ("rnnc: 1\ninputs: {tokens: {shape: [batch, time], dtype: int64}}\nlayers:\n"
            "  - {type: Embedding, input_dim: 20, output_dim: 5, mask_zero: false}\n"
            "  - {type: LSTM, units: 4}\n")
    c, _, _ = check_parity(text)
    g = c.model.graph
    tr = [n for n in g.node if n.op_type == "Transpose"]
    assert len(tr) == 1 and tr[0].input[0] == "tokens" and list(_perm(tr[0])) == [1, 0], tr
    gather = next(n for n in g.node if n.op_type == "Gather")
    assert gather.input[1] == tr[0].output[0]


def test_outputs_are_written_by_their_producers():
    text = ("rnnc: 1\ninputs: {x: {shape: [batch, time, 3]}}\nlayers:\n"
            "  - {type: LSTM, name: l, units: 4, return_state: true}\n"
            "  - {type: Dense, name: d, units: 2, input: l}\n"
            "outputs: [d, l, l.states]\n")
    c, _, _ = check_parity(text)
    ids = [n for n in c.model.graph.node if n.op_type == "Identity"]
    # l (the last output) and l.state_h are the same tensor: it leaves once through an Identity
    assert len(ids) == 1, [(n.input, n.output) for n in ids]
