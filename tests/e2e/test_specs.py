"""Tier 3: every spec in specs/ compiles, runs on ONNX Runtime (and onnx.reference where the
model is portable) and matches the reference."""
from __future__ import annotations

from pathlib import Path

import onnx
import pytest

import rnnc
from helpers import assert_close, random_feeds, run_onnx_reference, run_ort
from rnnc.reference import run_reference

SPECS = sorted((Path(__file__).resolve().parents[2] / "specs").glob("*.yaml"))


def test_there_are_specs():
    assert len(SPECS) >= 3


@pytest.mark.parametrize("path", SPECS, ids=[p.stem for p in SPECS])
def test_spec_compiles_runs_and_matches(path):
    c = rnnc.compile_spec(path)
    onnx.checker.check_model(c.model, full_check=True)
    assert c.model.ir_version == 10 and c.model.opset_import[0].version == 21
    feeds = random_feeds(c.graph, {"batch": 2, "time": 6})
    want = run_reference(c.graph, c.weights, feeds)
    assert_close(run_ort(c.model, feeds), want, what=path.name)
    p = rnnc.compile_spec(path, target="portable")
    assert_close(run_onnx_reference(p.model, feeds), want, what=f"{path.name} (portable, onnx.reference)")
