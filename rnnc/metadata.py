"""The layer table rnnc stores in a compiled model (metadata key "rnnc.model", written by
rnnc/emit/model.py), read back by the runtime and by `inspect`. A model file is data from
anywhere: the table is checked field by field, and a damaged one is refused with a clear
error instead of being trusted."""
from __future__ import annotations

import json
from typing import Any

from .errors import ModelFileError
from .ir.plan import Plan, PlanError

KEY = "rnnc.model"
MAX_STATE_ELEMENTS = 1 << 31


def _fail(where: str | None, what: str) -> ModelFileError:
    return ModelFileError(f"{where or 'the model'}: rnnc's metadata ({KEY}) is damaged: {what}; recompile the model "
                          "with rnnc compile")


def _strs(v: Any) -> bool:
    return isinstance(v, list) and all(isinstance(x, str) for x in v)


def _dim(d: Any) -> bool:
    return (isinstance(d, int) and not isinstance(d, bool) and d > 0) or isinstance(d, str)


def parse(text: str, where: str | None = None) -> dict[str, Any]:
    """The checked table: {name, layers, states, inputs, outputs, equal_dims}. A layer's
    `plan` (rnnc/ir/plan.py) must be a valid plan that agrees with its lowering and reason."""
    try:
        meta = json.loads(text)
    except (ValueError, RecursionError):
        raise _fail(where, "not JSON") from None
    if not isinstance(meta, dict):
        raise _fail(where, f"expected a JSON object, got {type(meta).__name__}")
    layers = meta.get("layers", [])
    if not isinstance(layers, list):
        raise _fail(where, "`layers` is not a list")
    for i, l in enumerate(layers):
        if not (isinstance(l, dict) and isinstance(l.get("name"), str) and isinstance(l.get("kind"), str)
                and isinstance(l.get("config", {}), dict) and _strs(l.get("inputs", []))
                and _strs(l.get("notes", [])) and _strs(l.get("nodes", []))
                and isinstance(l.get("outputs", {}), dict) and isinstance(l.get("params", 0), int)
                and isinstance(l.get("reason", ""), str) and isinstance(l.get("lowering", ""), (str, type(None)))):
            raise _fail(where, f"layer {i} is not a {{name, kind, config, inputs, ...}} record")
        if l.get("plan") is not None:
            try:
                plan = Plan.from_json(l["plan"])
            except PlanError as e:
                raise _fail(where, f"layer {l['name']!r}: its plan: {e}") from None
            if plan.strategy != l.get("lowering") or plan.reason != l.get("reason", ""):
                raise _fail(where, f"layer {l['name']!r}: its lowering and reason disagree with its plan")
        if l["kind"] == "Embedding":
            n = l.get("config", {}).get("input_dim")
            if not (isinstance(n, int) and not isinstance(n, bool) and n > 0):
                raise _fail(where, f"layer {l['name']!r}: Embedding without a positive input_dim")
    states = meta.get("states", [])
    if not isinstance(states, list):
        raise _fail(where, "`states` is not a list")
    for i, s in enumerate(states):
        if not (isinstance(s, dict) and all(isinstance(s.get(k), str) for k in ("layer", "port", "input", "output"))
                and isinstance(s.get("dims"), list) and all(isinstance(d, int) and not isinstance(d, bool) and d > 0
                                                          for d in s["dims"])):
            raise _fail(where, f"state {i} is not a {{layer, port, input, output, dims}} record")
        n = 1
        for d in s["dims"]:
            n *= d
        if n > MAX_STATE_ELEMENTS:
            raise _fail(where, f"state {i} has {n:,} elements")
    equal = meta.get("equal_dims", [])
    if not (isinstance(equal, list) and all(isinstance(c, list) and len(c) == 3 and _dim(c[0]) and _dim(c[1])
                                            and isinstance(c[2], str) for c in equal)):
        raise _fail(where, "`equal_dims` is not a list of [dim, dim, why]")
    for k in ("inputs", "outputs"):
        if not _strs(meta.get(k, [])):
            raise _fail(where, f"`{k}` is not a list of names")
    return {**meta, "layers": layers, "states": states, "equal_dims": equal}
