"""rnnc compile's --external-data, --weights-ignore-extra and --serving, end to end."""
from __future__ import annotations

import functools

import numpy as np
import onnx

import rnnc
from rnnc.cli import main

STATEFUL = "rnnc: 1\ninputs: {x: {shape: [4, time, 3]}}\nlayers:\n  - {type: GRU, units: 5, stateful: true}\n"


def test_external_data_writes_the_tensors_beside_the_model(tmp_path, capsys):
    spec = tmp_path / "m.yaml"
    spec.write_text("rnnc: 1\ninputs: {x: {shape: [batch, time, 3]}}\nlayers:\n  - {type: LSTM, units: 64}\n")
    out = tmp_path / "m.onnx"
    assert main(["compile", str(spec), "-o", str(out), "--external-data"]) == 0
    assert "tensors in" in capsys.readouterr().out
    assert (tmp_path / "m.onnx.data").stat().st_size > 64 * 64 * 4
    model = onnx.load(out)                          # loads the external tensors from beside it
    onnx.checker.check_model(str(out), full_check=True)
    x = np.random.default_rng(0).normal(size=(2, 5, 3)).astype(np.float32)
    got = rnnc.Session(str(out), providers="cpu").run({"x": x})["lstm"]
    want = rnnc.Session(rnnc.compile_spec(spec), providers="cpu").run({"x": x})["lstm"]
    np.testing.assert_array_equal(got, want)
    assert any(t.data_location == onnx.TensorProto.EXTERNAL for t in onnx.load(out, load_external_data=False)
               .graph.initializer) and model.graph.initializer


def test_weights_ignore_extra(tmp_path, capsys):
    spec = tmp_path / "s.yaml"
    spec.write_text(STATEFUL)
    w = tmp_path / "w.npz"
    np.savez(w, **{"gru/kernel": np.ones((3, 15), np.float32), "gru/recurrent_kernel": np.ones((5, 15), np.float32),
                   "gru/bias": np.ones((2, 15), np.float32), "decoder/kernel": np.ones((2, 2), np.float32)})
    out = tmp_path / "s.onnx"
    assert main(["compile", str(spec), "-o", str(out), "--weights", str(w)]) == 2
    err = capsys.readouterr().err
    assert "unexpected 1 weight(s): decoder/kernel" in err and "--weights-ignore-extra" in err and not out.exists()
    assert main(["compile", str(spec), "-o", str(out), "--weights", str(w), "--weights-ignore-extra"]) == 0
    assert out.exists()


def test_serving_form_has_a_symbolic_state_batch(tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text(STATEFUL)
    out = tmp_path / "s.onnx"
    assert main(["compile", str(spec), "-o", str(out), "--serving"]) == 0
    inputs = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim]
              for i in onnx.load(out).graph.input}
    assert inputs == {"x": ["batch", "time", 3], "gru/state_in": ["batch", 5]}
    sess = rnnc.Session(str(out), providers="cpu")
    x = np.random.default_rng(0).normal(size=(2, 6, 3)).astype(np.float32)
    whole = sess.run({"x": x})["gru"]
    sess.reset_states()
    sess.run({"x": x[:, :3]})
    np.testing.assert_allclose(sess.run({"x": x[:, 3:]})["gru"], whole, atol=1e-6)   # streamed = whole


def test_a_long_compile_reports_its_stages_a_short_one_is_quiet(tmp_path, capsys, monkeypatch):
    from rnnc import cli

    spec = tmp_path / "m.yaml"
    spec.write_text("rnnc: 1\ninputs: {x: {shape: [batch, time, 3]}}\nlayers:\n  - {type: LSTM, units: 4}\n")
    assert main(["compile", str(spec), "-o", str(tmp_path / "a.onnx")]) == 0
    assert "compiling:" not in capsys.readouterr().err          # under the threshold: nothing
    monkeypatch.setattr(cli, "_Progress", functools.partial(cli._Progress, after=0.0))   # every compile is long
    assert main(["compile", str(spec), "-o", str(tmp_path / "b.onnx")]) == 0
    err = capsys.readouterr().err.splitlines()
    assert [e.rsplit(" (", 1)[0] for e in err] == [
        "compiling: reading the spec and the weights, running the passes", "compiling: lowering to ONNX",
        "compiling: checking the model (onnx.checker)", f"compiling: writing {tmp_path / 'b.onnx'}"]


def test_summary_counts_a_model_of_any_size_without_drawing_weights(tmp_path, capsys):
    spec = tmp_path / "huge.yaml"
    spec.write_text("rnnc: 1\ninputs: {t: {shape: [batch, time], dtype: int32}}\nlayers:\n"
                    "  - {type: Embedding, input_dim: 3000000, output_dim: 1024}\n  - {type: LSTM, units: 4096}\n")
    assert main(["summary", str(spec)]) == 0            # 3.2e9 params: counted, nothing allocated
    assert "Total params: 3,155,902,464" in capsys.readouterr().out
    assert main(["check", str(spec)]) == 2              # compiling it would hold them: refused, and says why
    assert "expected at most" in capsys.readouterr().err


def test_a_bad_lowering_cost_in_the_environment_is_named(tmp_path, capsys, monkeypatch):
    spec = tmp_path / "m.yaml"
    spec.write_text("rnnc: 1\ninputs: {x: {shape: [batch, time, 3]}}\nlayers:\n  - {type: LSTM, units: 4}\n")
    monkeypatch.setenv("RNNC_LOWERING_COST", "fast")
    assert main(["compile", str(spec), "-o", str(tmp_path / "m.onnx")]) == 2
    assert "RNNC_LOWERING_COST: expected one of model, native, got 'fast'" in capsys.readouterr().err
    assert not (tmp_path / "m.onnx").exists()
