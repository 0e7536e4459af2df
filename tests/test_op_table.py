"""The step language's op table (rnnc/cells/ops.py) and the ONNX emitters registered for it
(rnnc/lower/cellops.py): both halves for every op, the same numbers from each op's NumPy
function and from its ONNX form on ONNX Runtime, and shape rules that agree with the nodes
the parser and the passes make."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from rnnc.cells.activations import NAMES as ACTIVATIONS
from rnnc.cells.custom import numpy_node
from rnnc.cells.lang import B, Node, Program, parse_step
from rnnc.cells.ops import OPS, SOURCES, OpDef, result_shape
from rnnc.emit.builder import GraphBuilder
from rnnc.lower.cellops import EMITTERS, check_emitters, emit

TOL = 1e-5
ROOT = Path(__file__).resolve().parents[1]

INTS = {"units": 4}
INPUTS = {"x": (3,)}
STATES = {"h": (4,), "c": (2, 3)}
PARAMS = {"kernel": (3, 4), "w": (4, 4), "bias": (4,), "m": (2, 3, 4)}

# Per op, steps that make it (each line a step of its own; `h` is left as it was).
EXAMPLES: dict[str, list[str]] = {
    "const": ["y = h + 2.5", "y = h * units"],
    "neg": ["y = -h", "y = -m"],
    "add": ["y = h + bias", "y = m + 1"],
    "sub": ["y = h - x @ kernel"],
    "mul": ["y = h * bias"],
    "div": ["y = h / bias"],
    "pow": ["y = h ** bias", "y = h ** 2"],
    "less": ["y = where(h < bias, h, 0)"],
    "less_equal": ["y = where(h <= bias, h, 0)"],
    "greater": ["y = where(h > bias, h, 0)"],
    "greater_equal": ["y = where(h >= bias, h, 0)"],
    "equal": ["y = where(h == bias, h, 0)"],
    "not_equal": ["y = where(h != bias, h, 0)"],
    "minimum": ["y = minimum(h, bias)"],
    "maximum": ["y = maximum(h, x @ kernel)"],
    "matmul": ["y = h @ w", "y = matmul(bias, w)", "y = h @ bias", "y = c @ m[0]"],
    "gemm": ["h = tanh(h @ w + x @ kernel + bias)"],          # made by the reassociate pass
    "exp": ["y = exp(h)"],
    "log": ["y = log(h)"],
    "sqrt": ["y = sqrt(m)"],
    "abs": ["y = abs(-h)"],
    "act": [f"y = {name}(h)" for name in ACTIVATIONS] + ["y = softmax(c)"],
    "clip": ["y = clip(h, 0.7, 1.2)"],
    "where": ["y = where(h > 1, h, bias)", "y = where(c > 1, 1, c)"],
    "getitem": ["y = h[:, 1:3]", "y = h[:, ::-1]", "y = c[:, 1, ::2]", "y = c[..., 0]", "y = m[1]",
                "y = m[:, -1:0:-1, 2:]", "y = where(h > 1, h, 0)[:, 0]", "y = (h > 1)[:, 1:]"],
    "concat": ["y = concat([h, h * 2], axis=-1)", "y = concat([m, m], axis=0)", "y = concat([c, c], axis=1)"],
    "stack": ["y = stack([h, h * 2], axis=1)", "y = stack([m, m])", "y = stack([h, h], axis=-1)"],
    "split": ["a, b = split(h, 2)", "a, b = split(c, [1, 2], axis=-1)", "a, b = split(m, 2, axis=0)"],
    "pick": ["a, b = split(c, [1, 2], axis=-1)", "y = split(h, 4)[3]"],
    "einsum": ["y = einsum('bi,ij->bj', h, w)", "y = einsum('bij,ijk->bk', c, m)", "y = einsum('ijk->kj', m)",
               "y = einsum('bij->bji', c)"],
    "transpose": ["y = transpose(c, [0, 2, 1])", "y = transpose(m, [2, 0, -2])"],
    "reshape": ["y = reshape(c, [-1, 6])", "y = reshape(m, [6, 4])", "y = reshape(h, [-1, 2, 2])"],
    "sum": ["y = sum(c, axis=-1)", "y = sum(h)", "y = sum(m, axis=[0, 2], keepdims=True)"],
    "mean": ["y = mean(c, axis=1, keepdims=True)", "y = mean(m)"],
}


def parse(step: str) -> Program:
    prog = parse_step(step, ints=INTS, inputs=INPUTS, states=STATES, params=PARAMS, outputs=["h"])
    if "h @ w" in step and "tanh" in step:
        from rnnc.passes.reassociate import reassociate
        prog = reassociate(prog)
    return prog


def example_programs() -> list[Program]:
    return [parse(s) for steps in EXAMPLES.values() for s in steps]


# ---- both halves for every op ---------------------------------------------------------------

def test_every_op_has_an_emitter_and_every_emitter_an_op():
    assert set(OPS) == set(EMITTERS)
    check_emitters()
    assert not SOURCES & set(OPS)


def test_the_check_names_an_op_without_an_emitter():
    fake = OpDef("fake_op", lambda ins, at: (), lambda node, a: 0.0)
    with pytest.raises(RuntimeError, match="no emitter for fake_op"):
        check_emitters({**OPS, "fake_op": fake})
    with pytest.raises(RuntimeError, match="emitters for ops not in the table: ghost"):
        check_emitters(emitters=[*EMITTERS, "ghost"])


def test_importing_the_emitters_fails_on_a_table_op_without_one():
    code = ("from rnnc.cells import ops\n"
            "ops.OPS['fake_op'] = ops.OpDef('fake_op', lambda ins, at: (), lambda node, a: 0.0)\n"
            "import rnnc.lower.cellops\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode != 0 and "RuntimeError" in r.stderr and "no emitter for fake_op" in r.stderr, r.stderr


def test_the_cells_package_does_not_import_onnx():
    code = ("import rnnc.cells, rnnc.cells.lang, rnnc.cells.ops, rnnc.cells.custom, rnnc.cells.builtin, sys\n"
            "assert 'onnx' not in sys.modules and 'onnxruntime' not in sys.modules, sorted(sys.modules)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr


def test_the_examples_cover_the_table():
    made = {n.op for p in example_programs() for n in p.nodes}
    assert set(OPS) <= made, sorted(set(OPS) - made)
    assert made <= set(OPS) | SOURCES, sorted(made - set(OPS) - SOURCES)
    assert set(EXAMPLES) == set(OPS)


def test_the_functions_of_the_language_come_from_the_table():
    from rnnc.cells.lang import FUNCTIONS
    assert set(FUNCTIONS) == {f for d in OPS.values() for f in d.functions}
    assert {"tanh", "einsum", "split", "where", "sum"} <= set(FUNCTIONS)


# ---- shape rules ------------------------------------------------------------------------

def check_shapes(prog: Program) -> None:
    for n in prog.nodes:
        if n.op in SOURCES:
            continue
        ins = [prog.nodes[a] for a in n.args]
        assert result_shape(n, ins) == n.shape, n
        assert OPS[n.op].result_dtype(ins) == n.dtype, n


def test_shape_rules_agree_with_the_parsed_nodes():
    for prog in example_programs():
        check_shapes(prog)


def test_shape_rules_agree_with_the_passes():
    """The specs' custom cells, as parsed and as the passes rewrote them (gemm, sunk slices)."""
    import yaml

    from rnnc.pipeline import prepare
    from rnnc.spec import load_spec_text
    seen = 0
    for path in sorted((ROOT / "specs").glob("*.yaml")):
        text = path.read_text()
        if "cells:" not in text or not yaml.safe_load(text).get("cells"):
            continue
        graph, _ = prepare(load_spec_text(text, path.name))
        for layer in graph.layers.values():
            for cell in getattr(layer, "cells", ()):
                for prog in (cell.program, cell.lowered):
                    if prog is not None:
                        check_shapes(prog)
                        seen += 1
    assert seen >= 4


# ---- the same numbers from NumPy and from ONNX Runtime -------------------------------------

BATCH, TIME = 2, 3
LEVELS = np.array([0.5, 0.75, 1.0, 1.25, 1.5])    # positive (log, sqrt, pow) and often equal (==, <=)


def value(rng: np.random.Generator, n: Node, shape: tuple[int, ...], lead: int) -> np.ndarray:
    full = (TIME,) * (lead if n.batched else 0) + tuple(BATCH if d == B else d for d in shape)
    if n.dtype == "bool":
        return rng.random(full) < 0.5
    return rng.choice(LEVELS, size=full).astype(np.float32)


def run_node(prog: Program, node: Node, lead: int, seed: int = 0) -> None:
    """Node `node` alone, its operands fed as graph inputs: ONNX Runtime against the table's
    NumPy function (per time step t for the hoisted form, lead = 1)."""
    rng = np.random.default_rng(seed)
    b = GraphBuilder()
    inputs, feeds, args, values = [], {}, [], []
    for k, a in enumerate(prog.nodes[i] for i in node.args):
        if a.dtype == "tuple":                       # pick: the parts of a split
            names, parts = [], []
            for j, size in enumerate(a.attr("sizes")):
                shape = list(a.shape)
                shape[a.attr("axis")] = size
                names.append(f"in{k}_{j}")
                parts.append(value(rng, a, tuple(shape), lead))
            args.append(names)
            values.append(parts)
        else:
            names, parts = [f"in{k}"], [value(rng, a, a.shape, lead)]
            args.append(names[0])
            values.append(parts[0])
        for name, v in zip(names, parts):
            dtype = TensorProto.BOOL if v.dtype == bool else TensorProto.FLOAT
            inputs.append(helper.make_tensor_value_info(name, dtype, list(v.shape)))
            feeds[name] = v
            b.reserve(name)
    out = emit(b, node, args, lead)
    outs = out if isinstance(out, list) else [out]
    produced = {o for n in b.nodes for o in n.output}
    outs = [o if o in produced else b.op("Identity", [o]) for o in outs]    # outputs some node computes

    def as64(v):
        return [as64(p) for p in v] if isinstance(v, list) else v if v.dtype == bool else v.astype(np.float64)

    args64 = [as64(v) for v in values]
    if lead and node.batched:
        batched = [prog.nodes[i].batched for i in node.args]
        steps = [numpy_node(node, [([p[t] for p in v] if isinstance(v, list) else v[t]) if bt else v
                                   for v, bt in zip(args64, batched)]) for t in range(TIME)]
        want = [np.stack(ps) for ps in zip(*steps)] if isinstance(steps[0], list) else np.stack(steps)
    else:
        want = numpy_node(node, args64)
    wants = [np.asarray(w) for w in (want if isinstance(want, list) else [want])]
    out_info = [helper.make_tensor_value_info(o, TensorProto.BOOL if w.dtype == bool else TensorProto.FLOAT,
                                              list(w.shape))
                for o, w in zip(outs, wants)]
    model = helper.make_model(helper.make_graph(b.nodes, "one_node", inputs, out_info, initializer=b.initializers),
                              opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = 10
    onnx.checker.check_model(model)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    got = sess.run(None, feeds)
    assert len(got) == len(wants), node
    for g, w in zip(got, wants):
        assert g.shape == w.shape, (node, g.shape, w.shape)
        err = float(np.max(np.abs(g.astype(np.float64) - w.astype(np.float64)))) if w.size else 0.0
        assert err <= TOL, (node, err)


@pytest.mark.parametrize("lead", [0, 1], ids=["step", "hoisted"])
@pytest.mark.parametrize("op", sorted(OPS))
def test_numpy_and_onnx_agree(op, lead):
    count = 0
    for step in EXAMPLES[op]:
        prog = parse(step)
        for n in prog.nodes:
            if n.op == op:
                run_node(prog, n, lead)
                count += 1
    assert count, f"no example makes {op}"
