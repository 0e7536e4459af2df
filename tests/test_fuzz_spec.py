"""Malformed specs: random mutations of valid specs must give an RnncError (exit 2 in the
CLI), never another exception. An InternalError (a compiler bug, exit 1) is not an RnncError,
so it fails the fuzz: tests/test_internal_errors.py checks that compile_or_refuse lets it through."""
from __future__ import annotations

import copy
from pathlib import Path

import yaml
from hypothesis_or_skip import HealthCheck, given, settings, st  # skips the property tests without hypothesis

import rnnc
from rnnc.errors import RnncError
from rnnc.spec import load_spec_text

SPECS = sorted((Path(__file__).resolve().parents[1] / "specs").glob("*.yaml"))
BASES = [yaml.safe_load(p.read_text()) for p in SPECS]
VALUES = st.one_of(st.none(), st.booleans(), st.integers(-3, 70), st.floats(-2, 2, allow_nan=False),
                   st.sampled_from(["", "batch", "time", "lstm", "x", "tanh", "LSTM", "GRUCell", "a.b", "lstm.states",
                                    "embedding.state_h", "relu", "concat", "null"]),
                   st.lists(st.sampled_from(["batch", "time", 3, 0, -1, "x"]), max_size=4),
                   st.dictionaries(st.sampled_from(["type", "units", "shape", "x"]), st.integers(-1, 5), max_size=2))


def paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from paths(v, prefix + (i,))


@st.composite
def mutated(draw):
    spec = copy.deepcopy(draw(st.sampled_from(BASES)))
    for _ in range(draw(st.integers(1, 3))):
        all_paths = [p for p in paths(spec) if p]
        path = draw(st.sampled_from(all_paths))
        parent = spec
        for part in path[:-1]:
            parent = parent[part]
        action = draw(st.sampled_from(["set", "delete", "rename"]))
        if action == "delete":
            del parent[path[-1]]
        elif action == "rename" and isinstance(parent, dict):
            parent[draw(st.sampled_from(["units", "input", "name", "cell", "layer", "foo"]))] = parent.pop(path[-1])
        else:
            parent[path[-1]] = draw(VALUES)
    return spec


def compile_or_refuse(spec: dict) -> None:
    """Compile a (possibly malformed) spec; a clean refusal (an RnncError) is accepted, and
    anything else (an InternalError included: it is not an RnncError) propagates."""
    text = yaml.safe_dump(spec, sort_keys=False)
    try:
        parsed = load_spec_text(text, "fuzz.yaml")
        if parsed.weights:      # the specs' weights files are not part of the fuzz
            parsed.weights = None
        rnnc.compile_spec(parsed)
    except RnncError:           # only user errors: never `except Exception`
        pass


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_mutated_specs_fail_cleanly(spec):
    compile_or_refuse(spec)
