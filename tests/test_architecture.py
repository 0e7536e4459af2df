"""The architecture's boundaries, checked: the IR side imports no ONNX, the linter keeps the
boundaries, and the pieces compose as documented (docs/, README "Architecture")."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import rnnc
from helpers import check_parity
from rnnc.reference import run_reference
from rnnc.spec import load_spec_text

ROOT = Path(__file__).resolve().parents[1]


def test_ir_side_imports_no_onnx():
    code = ("import rnnc.ir, rnnc.spec, rnnc.cells, rnnc.passes, sys; "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('onnx', 'onnxruntime')); "
            "assert not bad, bad")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr


def test_package_root_and_version_load_no_onnx():
    code = ("import rnnc, rnnc.emit.builder, sys; from rnnc import __version__; "
            "assert 'onnxruntime' not in sys.modules and 'rnnc.pipeline' not in sys.modules, sorted(sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr


@pytest.mark.skipif(shutil.which("ruff") is None, reason="ruff is a test extra")
@pytest.mark.parametrize("folder, module", [("ir", "onnx"), ("passes", "onnx.helper"), ("spec", "onnxruntime"),
                                            ("cells", "onnx"), ("lower", "onnxruntime")])
def test_linter_refuses_an_import_across_a_boundary(folder, module, tmp_path):
    probe = ROOT / "rnnc" / folder / "_boundary_probe.py"
    probe.write_text(f"import {module}\n")
    try:
        r = subprocess.run(["ruff", "check", "--select", "TID251", str(probe)], capture_output=True, text=True,
                           cwd=ROOT)
    finally:
        probe.unlink()
    assert r.returncode == 1 and "TID251" in r.stdout, r.stdout + r.stderr


@pytest.mark.skipif(shutil.which("ruff") is None, reason="ruff is a test extra")
def test_runtime_may_import_onnxruntime():
    r = subprocess.run(["ruff", "check", "--select", "TID251", "rnnc/runtime"], capture_output=True, text=True,
                       cwd=ROOT)
    assert r.returncode == 0, r.stdout


def test_unhoisted_stacked_cells_project_once():
    # with the hoisting pass left out, a stacked built-in cell after the first projects its
    # input inside the time loop, once (it was projected twice)
    text = ("rnnc: 1\ninputs: {x: {shape: [batch, 6, 3]}}\nlayers:\n"
            "  - {type: RNN, lowering: loop, return_sequences: true, cell: [{type: GRUCell, units: 4}, "
            "{type: LSTMCell, units: 5}]}\n")
    spec = load_spec_text(text, "m.yaml")
    c = rnnc.compile_spec(spec, hoist=False)
    x = np.random.default_rng(0).normal(size=(2, 6, 3)).astype(np.float32)
    want = run_reference(c.graph, c.weights, {"x": x})
    got = rnnc.Session(c, providers="cpu").run({"x": x})
    np.testing.assert_allclose(got["rnn"], want["rnn"], atol=1e-5)
    check_parity(text, native=0, loops=1)


def test_importer_orders_layers_after_what_they_read_and_names_a_cycle():
    from rnnc.importers.keras_file import ModelConverter

    mc = ModelConverter({}, "m.keras")
    mc.layers = [{"name": "c", "input": ["a", "b"]}, {"name": "a", "input": "x"}, {"name": "b", "input": "a.state_h"},
                 {"name": "d", "input": "x"}]
    mc._toposort()
    assert [l["name"] for l in mc.layers] == ["a", "b", "c", "d"]     # Keras's order, moved only as needed
    mc.layers = [{"name": "p", "input": "q"}, {"name": "q", "input": "p"}, {"name": "r", "input": "x"}]
    mc._toposort()
    (problem,) = mc.conv.problems
    assert "cycle: p -> q -> p" in problem.message or "cycle: q -> p -> q" in problem.message


def test_readme_lists_every_layer_kind():
    from rnnc.spec import schema as S

    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("### Supported Keras layers"):]
    table = table[:table.index("\n\n**")]
    missing = [k for k in S.LAYER_KEYS if f"`{k}`" not in table and f"`{k}(" not in table]
    assert not missing, f"README's table of supported layers lacks {missing}"
