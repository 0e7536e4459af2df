"""Spec loading: docs/spec.md's examples, defaults, references, and located, collected errors."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from rnnc.errors import SpecError
from rnnc.ir import build_graph
from rnnc.spec import load_spec, load_spec_text
from rnnc.spec import schema as S

SPEC_MD = Path(__file__).resolve().parents[1] / "docs" / "spec.md"


def spec_errors(text: str) -> list[str]:
    with pytest.raises(SpecError) as e:
        build_graph(load_spec_text(text, "m.yaml"))
    return [str(p) for p in e.value.problems]


def test_spec_md_sequential_and_functional_examples_build():
    blocks = re.findall(r"```yaml\n(.*?)```", SPEC_MD.read_text(), re.S)
    built = [build_graph(load_spec_text(b, "spec.md")) for b in blocks if "cells:" not in b]
    names = [g.name for g in built]
    assert names[:2] == ["lstm_classifier", "encoder_decoder"] and len(set(names)) == len(names)
    assert built[0].param_count() == 164_106
    assert built[1].param_count() == 258_698


def test_spec_md_custom_cell_examples_build():
    """The `cells:` examples are fragments (no `rnnc:` line, maybe no `inputs:`) or whole specs:
    a fragment gets `rnnc: 1` and, lacking inputs, one input x (batch, time, 8)."""
    blocks = [b for b in re.findall(r"```yaml\n(.*?)```", SPEC_MD.read_text(), re.S) if "cells:" in b]
    assert len(blocks) >= 2
    for b in blocks:
        if not re.search(r"^rnnc:", b, re.M):
            b = "rnnc: 1\n" + b
            if not re.search(r"^inputs:", b, re.M):
                b += "inputs:\n  x: {shape: [batch, time, 8]}\n"
        g = build_graph(load_spec_text(b, "spec.md"))
        assert any(c.custom for l in g.layers.values() for c in l.cells)


def test_defaults_follow_keras():
    g = build_graph(load_spec_text("""
rnnc: 1
inputs: {x: {shape: [batch, time, 3]}}
layers:
  - {type: LSTM, units: 4}
  - {type: LSTM, units: 4, input: x}
  - {type: GRU, units: 2, input: x}
""", "m.yaml"))
    assert list(g.layers) == ["lstm", "lstm_1", "gru"]
    cfg = g.layers["lstm"].config
    assert (cfg["activation"], cfg["recurrent_activation"], cfg["use_bias"], cfg["unit_forget_bias"],
            cfg["return_sequences"], cfg["lowering"]) == ("tanh", "sigmoid", True, True, False, "auto")
    assert g.layers["gru"].config["reset_after"] is True
    assert g.inputs["x"].dtype == "float32"
    assert [o.name for o in g.outputs] == ["gru"]  # defaults to the last layer


def test_json_is_accepted():
    g = build_graph(load_spec_text('{"rnnc": 1, "inputs": {"x": {"shape": ["batch", "time", 2]}},'
                                   ' "layers": [{"type": "GRU", "units": 3}]}', "m.json"))
    assert g.layers["gru"].outputs["output"].dims == ("batch", 3)


def test_references_states_and_output_names():
    g = build_graph(load_spec_text("""
rnnc: 1
inputs: {x: {shape: [batch, time, 3]}}
layers:
  - {type: LSTM, name: enc, units: 4, return_state: true, return_sequences: true}
  - {type: GRU, name: g, units: 5, input: enc.output, return_state: true}
outputs: {seq: enc, states: enc.states, last: g.state}
""", "m.yaml"))
    assert [o.name for o in g.outputs] == ["seq", "states_0", "states_1", "last"]
    assert [str(o.ref) for o in g.outputs] == ["enc", "enc.state_h", "enc.state_c", "g.state"]
    assert g.layers["g"].outputs["state"].dims == ("batch", 5)


def test_errors_are_collected_with_file_line_and_key_path():
    errs = spec_errors("""rnnc: 1
inputs:
  x: {shape: [batch, time, 3], dtype: float16}
layers:
  - {type: LSTM, units: 0}
  - {type: Dense, units: 3, activaton: relu}
  - {type: Lstm, units: 3}
""")
    assert errs == [
        "m.yaml:3: inputs.x.dtype: expected one of float32, int32, int64, bool, got 'float16'",
        "m.yaml:5: layers[0].units: expected a positive integer, got 0",
        "m.yaml:6: layers[1].activaton: unknown key 'activaton' for a Dense layer: expected one of "
        "activation, input, name, type, units, use_bias. Did you mean 'activation'?",
        "m.yaml:7: layers[2].type: unknown layer type 'Lstm'. Did you mean 'LSTM'? Expected one of: "
        + ", ".join(S.LAYER_KEYS) + ' (docs/spec.md, "Layers")',
    ]
    assert {"Embedding", "LSTM", "Bidirectional", "Dense", "ReLU"} <= set(S.LAYER_KEYS)


@pytest.mark.parametrize("text, expected", [
    ("rnnc: 2\ninputs: {x: {shape: [batch, time, 3]}}\nlayers: [{type: LSTM, units: 2}]\n",
     "m.yaml:1: rnnc: expected format version 1, got 2"),
    ("inputs: {x: {shape: [batch, time, 3]}}\nlayers: [{type: LSTM, units: 2}]\n",
     "missing `rnnc: 1`"),
    ("rnnc: 1\ninputs: {x: {shape: [batch, time, 3]}}\nlayers: [{type: LSTM, units: 2}]\noutputs: [lstm.state_h]\n",
     "m.yaml:4: outputs[0]: unknown reference 'lstm.state_h': expected one of lstm.output (set `return_state: true` on it)"),
    ("rnnc: 1\ninputs: {x: {shape: [batch, time, 3]}}\nlayers:\n  - {type: LSTM, units: 2, input: y}\n",
     "m.yaml:4: layers[0].input: unknown reference 'y'"),
    ("rnnc: 1\ninputs: {x: {shape: [batch, time, 3]}}\nlayers:\n  - {type: LSTM, units: 2, input: later}\n"
     "  - {type: Dense, name: later, units: 2, input: x}\n",
     "Layer 'later' is defined later"),
    ("rnnc: 1\ninputs: {x: {shape: [batch, time], dtype: int32}}\nlayers:\n  - {type: LSTM, units: 2}\n",
     "m.yaml:4: layers[0].input: LSTM expects float32 input, got int32 from x"),
    ("rnnc: 1\ninputs: {x: {shape: [batch, time, feat]}}\nlayers:\n  - {type: LSTM, units: 2}\n",
     "LSTM needs a fixed feature size (last dim), got 'feat'"),
    ("rnnc: 1\ninputs: {x: {shape: [batch, 3]}}\nlayers:\n  - {type: GRU, units: 2}\n",
     "GRU expects a (batch, time, features) input, got (batch, 3)"),
    ("rnnc: 1\ninputs: {x: {shape: [batch, time, 3]}, h: {shape: [batch, 5]}}\nlayers:\n"
     "  - {type: LSTM, units: 2, input: x, initial_state: [h]}\n",
     "expected 2 initial state tensor(s) (state_h, state_c), got 1"),
    ("rnnc: 1\ninputs: {x: {shape: [batch, time, 3]}, h: {shape: [batch, 5]}}\nlayers:\n"
     "  - {type: GRU, units: 2, input: x, initial_state: [h]}\n",
     "initial state 0 (h): expected float32 (batch, 2), got float32 (batch, 5)"),
    ("rnnc: 1\ninputs: {a: {shape: [batch, time, 3]}, b: {shape: [batch, time, 3]}}\nlayers:\n"
     "  - {type: GRU, units: 2}\n",
     "this layer has no `input:` and the model has several inputs"),
    ("rnnc: 1\ninputs: {x: {shape: [batch, time, 3]}}\nlayers:\n  - {type: Dense, name: d, units: 2}\n"
     "  - {type: Dense, name: d, units: 2}\n",
     "m.yaml:5: layers[1].name: duplicate layer name 'd'"),
    ("rnnc: 1\ninputs: {x: {shape: [batch, time, 3]}}\nlayers:\n  - {type: Add, input: [x, x, x], name: a}\n"
     "  - {type: Add, input: x}\n",
     "a Add layer takes a list of at least 2 inputs, got 1"),
    ("rnnc: 1\ninputs: {x: {shape: [batch, time, 3]}}\nlayers:\n"
     "  - {type: Bidirectional, layer: {type: Dense, units: 2}}\n",
     "expected a recurrent layer (SimpleRNN, GRU, LSTM, RNN) inside Bidirectional, got 'Dense'"),
    ("rnnc: 1\ninputs: {x: {shape: [batch, time, 3]}}\nlayers:\n  - {type: RNN, cell: {type: Foo, units: 2}}\n",
     "unknown cell type 'Foo'"),
    ("rnnc: 1\ninputs: {x: {shape: [batch, time, 3]}, h: {shape: [batch, 2]}}\nlayers:\n"
     "  - {type: Bidirectional, input: x, initial_state: [h], layer: {type: GRU, units: 2}}\n",
     "m.yaml:4: layers[0].initial_state: expected 2 initial state tensor(s) (forward_state, backward_state), got 1"),
    ("rnnc: 1\ninputs: {x: {shape: [batch, time, 3]}}\nlayers:\n"
     "  - {type: Bidirectional, layer: {type: GRU, units: 2, go_backwards: true}}\n",
     "m.yaml:4: layers[0].layer.go_backwards: a Bidirectional layer with go_backwards: true needs a backward_layer "
     "with go_backwards: false"),
    ("rnnc: 1\ninputs: {x: {shape: [batch, time, 3]}}\nlayers:\n  - {type: LSTM, units: 2, dropout: 1.5}\n",
     "m.yaml:4: layers[0].dropout: expected a number in [0, 1), got 1.5"),
    ("rnnc: 1\ninputs: {x: {shape: [batch, time, 3]}}\nlayers:\n  - {type: LSTM, units: true}\n",
     "expected a positive integer, got true"),
    ("rnnc: 1\ninputs: {x: {shape: [batch, -1, 3]}}\nlayers:\n  - {type: LSTM, units: 2}\n",
     "m.yaml:2: inputs.x.shape[1]: expected a positive integer or a dimension name"),
    ("rnnc: 1\ninputs: {x: {shape: [batch, time, 3]}}\nlayers:\n  - {type: LSTM, units: 2}\n  - {type: LSTM, units: 2}\n",
     "LSTM expects a (batch, time, features) input, got (batch, 2) from lstm"),
    ("rnnc: 1\nrnnc: 1\n", "m.yaml:2: rnnc: duplicate key 'rnnc'"),
    ("rnnc: 1\ninputs: {x: {shape: [batch, time, 3]}}\nlayers:\n  - {type: Dense, name: x, units: 2}\n",
     "m.yaml:4: layers[0].name: layer name 'x' is also a model input's name"),
    ("rnnc: 1\ninputs: [x\n", "not valid YAML"),
    ("", "the file is empty"),
    ("- 1\n- 2\n", "expected a mapping with `rnnc: 1` at the top, got a list"),
    ("rnnc: 1\ninputs: {x: {shape: [batch, time, 3]}}\nlayers: [{type: LSTM, units: 2}]\nextra: 1\n",
     "m.yaml:4: extra: unknown top-level key 'extra'"),
])
def test_spec_errors(text: str, expected: str):
    errs = spec_errors(text)
    assert any(expected in e for e in errs), errs


def test_yaml_tags_are_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "pwned"
    text = f"rnnc: 1\nname: !!python/object/apply:os.system ['touch {marker}']\n"
    errs = spec_errors(text)
    assert "not allowed in a spec" in errs[0] and errs[0].startswith("m.yaml:2:")
    assert not marker.exists()


def test_missing_file_is_a_spec_error(tmp_path):
    with pytest.raises(SpecError, match="file not found"):
        load_spec(tmp_path / "nope.yaml")


def test_masks_propagate_as_in_keras():
    g = build_graph(load_spec_text("""
rnnc: 1
inputs: {t: {shape: [batch, time], dtype: int32}}
layers:
  - {type: Embedding, name: e, input_dim: 10, output_dim: 4, mask_zero: true}
  - {type: Dense, name: d, units: 4}
  - {type: LSTM, name: a, units: 3, return_sequences: true}
  - {type: GRU, name: b, units: 3}
  - {type: Dense, name: out, units: 2}
""", "m.yaml"))
    L = g.layers
    assert str(L["e"].mask_out) == "e.mask"
    assert L["d"].mask_in == L["e"].mask_out == L["a"].mask_in == L["b"].mask_in
    assert L["b"].mask_out is None and L["out"].mask_in is None


def test_stacked_cells_and_bidirectional_params():
    g = build_graph(load_spec_text("""
rnnc: 1
inputs: {x: {shape: [batch, time, 3]}}
layers:
  - {type: RNN, name: r, return_state: true, cell: [{type: LSTMCell, units: 4}, {type: GRUCell, units: 2}]}
  - {type: Bidirectional, name: bi, input: x, layer: {type: GRU, units: 5, return_sequences: true}}
""", "m.yaml"))
    r = g.layers["r"]
    assert list(r.params) == ["cells/0/kernel", "cells/0/recurrent_kernel", "cells/0/bias",
                              "cells/1/kernel", "cells/1/recurrent_kernel", "cells/1/bias"]
    assert r.params["cells/1/kernel"] == (4, 6)
    assert r.state_ports == ("state_h_0", "state_c_0", "state_1")
    bi = g.layers["bi"]
    assert bi.outputs["output"].dims == ("batch", "time", 10)
    assert bi.param_count() == 2 * (3 * 5 * (3 + 5) + 2 * 3 * 5)
    fwd, bwd = bi.sublayers
    assert (fwd.config["go_backwards"], bwd.config["go_backwards"]) == (False, True)


def test_every_layer_lowering_error_at_once():
    from rnnc.errors import LoweringError
    from rnnc.pipeline import prepare
    text = ("rnnc: 1\ninputs: {x: {shape: [batch, time, 3]}}\nlayers:\n"
            "  - {type: LSTM, name: l, units: 2, activation: gelu, lowering: native, return_sequences: true}\n"
            "  - {type: GRU, name: g, units: 2, activation: selu, lowering: native}\n")
    with pytest.raises(LoweringError) as e:
        prepare(load_spec_text(text, "m.yaml"))
    assert [p.line for p in e.value.problems] == [4, 5]
    assert "activation 'gelu'" in e.value.problems[0].message and "activation 'selu'" in e.value.problems[1].message


def test_an_unused_cell_is_still_syntax_checked():
    text = ("rnnc: 1\ncells:\n  C:\n    state: {h: [2]}\n    step: 'h = foo('\n    output: h\n"
            "inputs: {x: {shape: [batch, time, 3]}}\nlayers:\n  - {type: LSTM, units: 2}\n")
    assert any("cells.C.step: step line 1, column 8: not valid step syntax" in e for e in spec_errors(text))


def test_json_floats_with_exponents_and_names_with_control_characters():
    text = ('{"rnnc": 1, "inputs": {"x": {"shape": ["batch", 3]}}, '
            '"layers": [{"type": "BatchNormalization", "epsilon": 1e-05}]}')
    assert load_spec_text(text, "m.json").layers[0].config["epsilon"] == 1e-05
    errs = spec_errors('rnnc: 1\ninputs: {"x\\n": {shape: [batch, 3]}}\nlayers: [{type: Dense, units: 2, '
                       'name: "a\\0b"}]\n')
    assert any("inputs.'x\\n': expected an input name" in e for e in errs), errs
    assert any("layers[0].name: expected a non-empty name without" in e for e in errs), errs


def test_yaml_alias_bombs_are_refused():
    laughs = "rnnc: 1\na0: &a0 [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]\n" for i in range(1, 9))
    assert any("expands to more than 100,000 values" in e for e in spec_errors(laughs))
    assert any("refers to a value that contains it" in e
               for e in spec_errors("rnnc: 1\nlayers: &a [{type: LSTM, units: 4}, *a]\n"))
