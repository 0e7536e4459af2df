"""The emitted ModelProto: pinned versions, symbolic dims, I/O order, names, metadata,
weights as initializers, and atomic writes."""
from __future__ import annotations

import json

import onnx
import pytest

import rnnc
from helpers import compile_text
from rnnc.emit import save_atomic

TEXT = """rnnc: 1
name: two_inputs
inputs:
  b_second: {shape: [batch, time, 3]}
  a_first: {shape: [batch, 4]}
layers:
  - {type: LSTM, name: enc, input: b_second, units: 4, return_state: true, dropout: 0.1}
  - {type: Dense, name: head, input: enc, units: 2}
outputs: {head: head, s: enc.states, a_copy: a_first}
"""


@pytest.fixture(scope="module")
def model():
    return compile_text(TEXT).model


def dims(vi):
    return [d.dim_param or d.dim_value for d in vi.type.tensor_type.shape.dim]


def test_versions_and_symbolic_dims(model):
    assert model.ir_version == 10
    assert [(o.domain, o.version) for o in model.opset_import] == [("", 21)]
    assert [i.name for i in model.graph.input] == ["b_second", "a_first"]
    assert dims(model.graph.input[0]) == ["batch", "time", 3]
    assert [o.name for o in model.graph.output] == ["head", "s_0", "s_1", "a_copy"]
    assert dims(model.graph.output[0]) == ["batch", 2]


def test_output_named_like_an_input_is_a_spec_error():
    with pytest.raises(rnnc.SpecError, match="output 'a_first' has the name of a model input"):
        compile_text(TEXT.replace("{head: head, s: enc.states, a_copy: a_first}", "[head, a_first]"))


def test_node_names_prefixed_and_weights_are_initializers(model):
    layer_nodes = [n for n in model.graph.node if not n.name.startswith("output/")]
    assert all(n.name.split("/")[0] in ("enc", "head") for n in layer_nodes)
    lstm = next(n for n in model.graph.node if n.op_type == "LSTM")
    inits = {i.name for i in model.graph.initializer}
    assert lstm.name == "enc/LSTM" and lstm.input[1] in inits and lstm.input[2] in inits and lstm.input[3] in inits
    assert {a.name: a.i for a in lstm.attribute if a.name == "layout"} == {"layout": 0}


def test_metadata_records_lowerings(model):
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["rnnc.version"] == rnnc.__version__
    info = json.loads(meta["rnnc.model"])
    enc = info["layers"][0]
    assert (enc["name"], enc["kind"], enc["lowering"], enc["reason"]) == ("enc", "LSTM", "native", "native: ONNX LSTM op")
    assert enc["notes"] == ["dropout=0.1 ignored at inference"]
    assert "LSTM" in enc["nodes"] and enc["params"] == 4 * 4 * (3 + 4 + 1)
    assert info["inputs"] == ["b_second", "a_first"]


def test_atomic_write_leaves_nothing_on_failure(tmp_path, model):
    class Boom:
        def SerializeToString(self):
            raise RuntimeError("disk full")
    with pytest.raises(RuntimeError):
        save_atomic(Boom(), tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []
    save_atomic(model, tmp_path / "m.onnx")
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]
    assert onnx.load(tmp_path / "m.onnx").graph.name == "two_inputs"
