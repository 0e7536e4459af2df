"""Lowering by cost (rnnc/passes/cost_model.py, choose_lowering): only exact candidates, the
cheapest by a fixed table here (the committed table's numbers are this machine's and change
when remeasured), the plan's candidates in metadata and inspect, and compile --tune."""
from __future__ import annotations

import json

import pytest

import rnnc
from rnnc import cli
from rnnc.inspect import report as inspect_report
from rnnc.ir.plan import Plan, PlanError
from rnnc.passes.cost_model import CostModel, pick
from rnnc.spec import load_spec_text

# ms per run at time 10: SimpleRNN's loop is cheaper than its native op, the LSTM's native op
# is the cheapest; masked rows double the native op's cost
TABLE = {
    "machine": "test", "onnxruntime": "0", "rnnc": "0", "threads": 1, "time": 10, "input": "units",
    "measured": "-", "columns": [],
    "rows": [
        ["cpu", "SimpleRNN", 16, 4, False, {"native": 10.0, "loop": 5.0, "unroll": 6.0}],
        ["cpu", "SimpleRNN", 64, 4, False, {"native": 20.0, "loop": 10.0, "unroll": 12.0}],
        ["cpu", "LSTM", 16, 4, False, {"native": 5.0, "loop": 10.0, "unroll": 9.0}],
        ["cpu", "LSTM", 64, 4, False, {"native": 10.0, "loop": 20.0, "unroll": 30.0}],
        ["cpu", "GRU", 16, 4, False, {"native": 10.0, "loop": 9.9, "unroll": 20.0}],   # within the margin
        ["cpu", "SimpleRNN", 16, 4, True, {"native": 40.0, "loop": 5.0}],
    ],
}
FIXED = CostModel(TABLE)


def spec(layer: str, time: int | str = "time", masking: bool = False) -> str:
    return (f"rnnc: 1\ninputs: {{x: {{shape: [batch, {time}, 8]}}}}\nlayers:\n"
            + ("  - {type: Masking}\n" if masking else "") + f"  - {layer}\n")


def plan_of(layer: str, time: int | str = "time", masking: bool = False, **kw) -> Plan:
    c = rnnc.compile_spec(load_spec_text(spec(layer, time, masking)), cost=kw.pop("cost", FIXED), **kw)
    return [l.plan for l in c.graph.layers.values() if l.is_recurrent][0]


def test_pick_keeps_native_on_a_tie():
    assert pick({"native": 10.0, "loop": 9.6}) == "native"
    assert pick({"native": 10.0, "loop": 9.0}) == "loop"
    assert pick({"native": 10.0, "loop": 9.0, "unroll": 8.0}) == "unroll"


def test_model_interpolates_in_log_units_and_scales_with_time():
    m = FIXED
    assert m.step_ms("SimpleRNN", "native", 16, 4) == pytest.approx(10.0 / 40)
    assert m.step_ms("SimpleRNN", "native", 32, 4) == pytest.approx(15.0 / 40)     # halfway in log(units)
    assert m.step_ms("SimpleRNN", "native", 1024, 4) == pytest.approx(20.0 / 40)   # clamped
    assert m.step_ms("Conv", "native", 16, 4) is None


def test_cost_picks_the_cheaper_exact_candidate():
    p = plan_of("{type: SimpleRNN, units: 16}")
    assert p.strategy == "loop" and p.cost_source == "model"
    assert dict(p.candidates) == pytest.approx({"native": 10.0 * 32 * 50 / 40, "loop": 5.0 * 32 * 50 / 40})
    assert "modeled faster than the exact native op (0.50×" in p.why
    assert "batch 32 (symbolic 'batch': default), time 50 (symbolic 'time': default)" in p.cost_note
    p = plan_of("{type: LSTM, units: 16}")
    assert p.strategy == "native" and [c for c, _ in p.candidates] == ["native", "loop"]
    assert plan_of("{type: GRU, units: 16}").strategy == "native"           # 1 % faster: noise, kept native


def test_unroll_is_a_candidate_only_at_a_fixed_time():
    p = plan_of("{type: LSTM, units: 16}", time=10)
    assert [c for c, _ in p.candidates] == ["native", "loop", "unroll"]
    assert "batch 32 (symbolic 'batch': default), time 10;" in p.cost_note
    assert plan_of("{type: LSTM, units: 16}", time=500).candidates[-1][0] == "loop"   # too long to unroll


def test_masked_layers_use_the_masked_factors():
    p = plan_of("{type: SimpleRNN, units: 16}", masking=True)
    assert p.masked and dict(p.candidates)["native"] == pytest.approx(4 * 10.0 * 32 * 50 / 40)


def test_only_exact_candidates():
    # gelu: the native op cannot be exact, so it is no candidate (and one candidate: no cost)
    p = plan_of("{type: SimpleRNN, units: 16, activation: gelu}")
    assert p.strategy == "loop" and not p.candidates and "gelu" in p.why
    p = plan_of("{type: SimpleRNN, units: 16, activation: gelu}", time=10)
    assert [c for c, _ in p.candidates] == ["loop", "unroll"]


def test_explicit_lowering_and_native_rule_bypass_the_model():
    p = plan_of("{type: SimpleRNN, units: 16, lowering: native}")
    assert p.strategy == "native" and not p.candidates
    p = plan_of("{type: SimpleRNN, units: 16}", cost="native")
    assert p.strategy == "native" and not p.candidates
    # CUDA: cuDNN's op wherever exact (no table)
    p = plan_of("{type: SimpleRNN, units: 16}", cost="model", provider="cuda")
    assert p.strategy == "native" and not p.candidates


def test_recognized_custom_cell_takes_the_same_choice():
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "specs" / "lstm_custom_cell.yaml").read_text()
    c = rnnc.compile_spec(load_spec_text(text), cost=FIXED)
    p = c.graph.layers["rnn"].plan
    assert p.strategy == "native" and p.recognized and [n for n, _ in p.candidates] == ["native", "loop"]
    cheap = CostModel({**TABLE, "rows": [["cpu", "LSTM", u, 4, False, {"native": 9.0, "loop": 1.0}] for u in (16, 64)]})
    p = rnnc.compile_spec(load_spec_text(text), cost=cheap).graph.layers["rnn"].plan
    assert p.strategy == "loop" and "modeled faster" in p.why


def test_plan_candidates_round_trip_and_validation():
    p = plan_of("{type: SimpleRNN, units: 16}")
    assert Plan.from_json(json.loads(json.dumps(p.to_json()))) == p
    bad = dict(p.to_json(), candidates=[["native", 1.0]])       # the chosen loop is not among them
    with pytest.raises(PlanError, match="candidates"):
        Plan.from_json(bad)
    with pytest.raises(PlanError, match="candidates"):
        Plan.from_json(dict(p.to_json(), candidates=[["fast", 1.0], ["loop", 2.0]]))
    with pytest.raises(PlanError, match="cost_source"):
        Plan.from_json(dict(p.to_json(), cost_source=""))
    with pytest.raises(PlanError, match="pairs"):
        Plan.from_json(dict(p.to_json(), candidates=[["loop", "1"]]))


def test_inspect_shows_the_candidates():
    c = rnnc.compile_spec(load_spec_text(spec("{type: SimpleRNN, name: r, units: 16}")), cost=FIXED)
    r, _, _ = inspect_report.build(c.model)
    plan = [l for l in r["layers"] if l["name"] == "r"][0]["plan"]
    assert plan["cost_source"] == "model" and [x[0] for x in plan["candidates"]] == ["native", "loop"]
    from rnnc.inspect.text import render

    text = " ".join(render(r).split())                  # unwrapped
    assert "cost: model at batch 32" in text and "loop 200.00 ms (chosen)" in text


def test_committed_table_is_used_by_default():
    p = plan_of("{type: LSTM, units: 64}", cost="model")
    assert p.cost_source == "model" and "CPU cost table" in p.cost_note and len(p.candidates) == 2


def test_tune_measures_and_keeps_the_fastest():
    text = spec("{type: SimpleRNN, name: r, units: 8, return_sequences: true}", time=6)
    c = rnnc.compile_spec(load_spec_text(text), tune=True, tune_dims={"batch": 2})
    p = c.graph.layers["r"].plan
    assert p.cost_source == "tuned" and [n for n, _ in p.candidates] == ["native", "loop", "unroll"]
    assert p.strategy == min(p.candidates, key=lambda x: x[1])[0]
    assert "measured whole-model time at batch 2, time 50" in p.cost_note


def test_cli_tune_and_dim(tmp_path, capsys):
    f = tmp_path / "m.yaml"
    f.write_text(spec("{type: GRU, name: g, units: 8}"))
    out = tmp_path / "m.onnx"
    assert cli.main(["compile", str(f), "-o", str(out), "--tune", "--dim", "batch=2", "--dim", "time=4"]) == 0
    text = capsys.readouterr().out
    assert "g: tuned at measured whole-model time at batch 2, time 4" in text
    assert cli.main(["compile", str(f), "-o", str(out), "--dim", "batch=2"]) == 2
    assert "add --tune" in capsys.readouterr().err
