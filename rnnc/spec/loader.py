"""YAML source → validated Spec. Every problem in the file is collected and reported at
once, each with its file, line and key path, what was expected and what was found."""
from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any

from .. import layers as layer_defs  # defines the LayerDef kinds (rnnc/layers/) in the vocabulary
from ..cells.custom import check_definition
from ..errors import Problem, SpecError
from . import schema as S
from .model import CellDecl, InputDecl, LayerDecl, OutputDecl, Spec
from .yamlsrc import KeyPath, Source, load_yaml_file, load_yaml_text

_DIM_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]*")


def _shown(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (dict, list)):
        return "a mapping" if isinstance(v, dict) else "a list"
    return repr(v)


def _suggest(word: str, choices: Any) -> str:
    by_lower = {str(c).lower(): c for c in choices}
    close = difflib.get_close_matches(str(word).lower(), list(by_lower), n=1)
    return f" Did you mean {by_lower[close[0]]!r}?" if close else ""


class _Checker:
    def __init__(self, src: Source):
        self.src = src
        self.problems: list[Problem] = []

    def err(self, path: KeyPath, message: str) -> None:
        self.problems.append(self.src.problem(path, message))

    def keys(self, d: dict, allowed: dict[str, S.Key], path: KeyPath, what: str) -> dict[str, Any]:
        """Check a mapping's keys against a table; return the values with defaults filled."""
        out: dict[str, Any] = {}
        for k in d:
            if k not in allowed:
                self.err(path + (k,), f"unknown key {k!r} for {what}: expected one of "
                         f"{', '.join(sorted(allowed))}.{_suggest(k, allowed)}")
        for k, key in allowed.items():
            if k not in d:
                if key.required:
                    self.err(path, f"missing required key {k!r} for {what}")
                out[k] = key.default
                continue
            ok, value, expected = key.check(d[k])
            if not ok:
                self.err(path + (k,), f"expected {expected}, got {_shown(d[k])}")
                value = key.default     # reported: go on with the default to find further problems
            out[k] = value
        return out


def load_spec(path: str | Path) -> Spec:
    """Load and validate a spec file (YAML or JSON)."""
    if not isinstance(path, (str, Path)):
        raise SpecError(f"load_spec: expected a file path, got {type(path).__name__}")
    return validate(load_yaml_file(path))


def load_spec_text(text: str, file: str = "<spec>") -> Spec:
    if not isinstance(text, str):
        raise SpecError(f"load_spec_text: expected the spec's text (a str), got {type(text).__name__}")
    return validate(load_yaml_text(text, file))


def validate(src: Source) -> Spec:
    c = _Checker(src)
    data = src.data
    if not isinstance(data, dict):
        raise SpecError(problems=[src.problem((), f"expected a mapping with `rnnc: 1` at the top, got {_shown(data)}")])
    for k in data:
        if k not in S.TOP_KEYS:
            c.err((k,), f"unknown top-level key {k!r}: expected one of {', '.join(sorted(S.TOP_KEYS))}.{_suggest(k, S.TOP_KEYS)}")
    if "rnnc" not in data:
        c.err((), "missing `rnnc: 1` (the spec format version)")
    elif data["rnnc"] != 1 or isinstance(data["rnnc"], bool):
        c.err(("rnnc",), f"expected format version 1, got {_shown(data['rnnc'])}: this rnnc reads format 1")
    name = data.get("name", "model")
    if not isinstance(name, str) or not name:
        c.err(("name",), f"expected a model name (a string), got {_shown(name)}")
        name = "model"
    seed = data.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        c.err(("seed",), f"expected a non-negative integer, got {_shown(seed)}")
        seed = 0
    weights = data.get("weights")
    if weights is not None and not isinstance(weights, str):
        c.err(("weights",), f"expected a file name (.npz or .safetensors), got {_shown(weights)}")
        weights = None
    cells = data.get("cells") or {}
    if not isinstance(cells, dict):
        c.err(("cells",), f"expected a mapping of cell names to definitions, got {_shown(cells)}")
        cells = {}
    for cname, cdef in list(cells.items()):
        if cname in S.CELL_KEYS or not cname.isidentifier():
            c.err(("cells", cname), f"a custom cell needs its own name (letters, digits, _; not a built-in cell), "
                  f"got {cname!r}")
        found = check_definition(cname, cdef)
        for path, msg in found:
            c.err(path, msg)
        if found:
            cells.pop(cname)
    inputs = _inputs(c, data.get("inputs"))
    layers = _layers(c, data.get("layers"), cells)
    for layer in layers:
        if layer.name in inputs:
            c.err(layer.path + ("name",), f"layer name {layer.name!r} is also a model input's name: "
                  "references would be ambiguous; rename one of them")
    outputs = _outputs(c, data.get("outputs"))
    if c.problems:
        raise SpecError(problems=c.problems)
    return Spec(name=name, inputs=inputs, layers=layers, outputs=outputs, weights=weights,
                seed=seed, cells=cells, source=src)


def _inputs(c: _Checker, raw: Any) -> dict[str, InputDecl]:
    if raw is None:
        c.err((), "missing `inputs`: expected a mapping such as `inputs: {x: {shape: [batch, time, 8]}}`")
        return {}
    if not isinstance(raw, dict) or not raw:
        c.err(("inputs",), f"expected a non-empty mapping of input names to {{shape, dtype}}, got {_shown(raw)}")
        return {}
    out: dict[str, InputDecl] = {}
    for name, decl in raw.items():
        p: KeyPath = ("inputs", name)
        if not _NAME.fullmatch(name):
            c.err(p, f"expected an input name of letters, digits and _, got {name!r}")
        if not isinstance(decl, dict):
            c.err(p, f"expected {{shape: [...], dtype: ...}}, got {_shown(decl)}")
            continue
        for k in decl:
            if k not in S.INPUT_KEYS:
                c.err(p + (k,), f"unknown key {k!r} for an input: expected shape, dtype.{_suggest(k, S.INPUT_KEYS)}")
        shape = decl.get("shape")
        dims: list[int | str] = []
        if not isinstance(shape, list) or not shape:
            c.err(p + ("shape",), f"expected a list of dims such as [batch, time, 8], got {_shown(shape)}")
        else:
            for i, d in enumerate(shape):
                if isinstance(d, bool) or not ((isinstance(d, int) and d > 0) or (isinstance(d, str) and _DIM_NAME.fullmatch(d))):
                    c.err(p + ("shape", i), f"expected a positive integer or a dimension name (batch, time, ...), got {_shown(d)}")
                dims.append(d)
        dtype = decl.get("dtype", "float32")
        if dtype not in S.DTYPES:
            c.err(p + ("dtype",), f"expected one of {', '.join(S.DTYPES)}, got {_shown(dtype)}")
        out[name] = InputDecl(name, tuple(dims), dtype, p)
    return out


def _layers(c: _Checker, raw: Any, cells: dict) -> list[LayerDecl]:
    if not isinstance(raw, list) or not raw:
        got = "an empty list" if isinstance(raw, list) else _shown(raw)
        c.err(("layers",) if raw is not None else (), f"expected a non-empty list of layers, got {got}")
        return []
    explicit = {l.get("name") for l in raw if isinstance(l, dict) and isinstance(l.get("name"), str)}
    used: set[str] = set()
    counters: dict[str, int] = {}
    out: list[LayerDecl] = []
    for i, item in enumerate(raw):
        decl = _layer(c, item, ("layers", i), cells, top=True)
        if decl is None:
            continue
        name = decl.name
        if not name:
            base = S.DEFAULT_NAMES[decl.type]
            while True:
                n = counters.get(base, 0)
                counters[base] = n + 1
                name = base if n == 0 else f"{base}_{n}"
                if name not in explicit and name not in used:
                    break
            decl = LayerDecl(decl.type, name, decl.inputs, decl.config, decl.path, decl.explicit)
        elif name in used:
            c.err(decl.path + ("name",), f"duplicate layer name {name!r}: each layer needs its own name")
        used.add(name)
        out.append(decl)
    return out


def _layer(c: _Checker, item: Any, path: KeyPath, cells: dict, *, top: bool) -> LayerDecl | None:
    if not isinstance(item, dict):
        c.err(path, f"expected a layer mapping such as {{type: LSTM, units: 64}}, got {_shown(item)}")
        return None
    t = item.get("type")
    if not isinstance(t, str) or t not in S.LAYER_KEYS:
        if t is None:
            c.err(path, "missing required key 'type'")
        else:
            c.err(path + ("type",), f"unknown layer type {_shown(t)}.{_suggest(t, S.LAYER_KEYS)} Expected one "
                  f"of: {', '.join(S.LAYER_KEYS)} (docs/spec.md, \"Layers\")")
        return None
    table = {**S.COMMON_KEYS, **S.LAYER_KEYS[t]}
    ldef = layer_defs.LAYER_DEFS.get(t)
    if ldef is not None and ldef.masking in ("consume", "infer") and ldef.inputs[1] == 1:
        table["mask"] = S.MASK_KEY      # a defined kind that may read a mask (rnnc/ir/build.py checks it does)
    if not top:
        table.pop("input")
        table.pop("mask", None)      # a nested layer gets its mask from its wrapper
    cfg = c.keys(item, table, path, f"a {t} layer")
    name = cfg.pop("name") or ""
    inputs = cfg.pop("input", None)
    if cfg.get("mask", 0) is None:   # `mask:` stays in the config only where the spec gives it
        del cfg["mask"]
    cfg.pop("type")
    if t == "RNN":
        cfg["cell"] = _cells(c, item.get("cell"), path + ("cell",), cells)
    if ldef is not None and ldef.wraps:
        cfg["layer"] = _wrapped(c, item.get("layer"), path + ("layer",), cells, t)
    if t == "Bidirectional":
        cfg["layer"] = _inner(c, item.get("layer"), path + ("layer",), cells)
        if item.get("backward_layer") is not None:
            cfg["backward_layer"] = _inner(c, item["backward_layer"], path + ("backward_layer",), cells)
    return LayerDecl(t, name, inputs, cfg, path, frozenset(item))


def _inner(c: _Checker, item: Any, path: KeyPath, cells: dict) -> LayerDecl | None:
    decl = _layer(c, item, path, cells, top=False)
    if decl is None:
        return None
    if decl.type not in S.RECURRENT_LAYERS:
        c.err(path + ("type",), f"expected a recurrent layer ({', '.join(S.RECURRENT_LAYERS)}) inside Bidirectional, got {decl.type!r}")
        return None
    if decl.config.get("initial_state") is not None:
        c.err(path + ("initial_state",), "initial_state is not accepted inside Bidirectional's layer")
    return decl


def _wrapped(c: _Checker, item: Any, path: KeyPath, cells: dict, wrapper: str) -> LayerDecl | None:
    """The layer inside a wrapper (TimeDistributed): any layer but a recurrent one or a
    Bidirectional, without `input:`."""
    decl = _layer(c, item, path, cells, top=False)
    if decl is None:
        return None
    if decl.type in (*S.RECURRENT_LAYERS, "Bidirectional"):
        c.err(path + ("type",), f"{wrapper} around a recurrent layer is not supported: the recurrent layer "
              "already runs over time (wrap the layers that act on one step)")
        return None
    return decl


def _cells(c: _Checker, raw: Any, path: KeyPath, cells: dict) -> tuple[CellDecl, ...]:
    items = raw if isinstance(raw, list) else [raw]
    if isinstance(raw, list) and not raw:
        c.err(path, "expected a cell or a non-empty list of cells, got an empty list")
    out = []
    for i, item in enumerate(items):
        p = path + (i,) if isinstance(raw, list) else path
        if not isinstance(item, dict) or "type" not in item:
            c.err(p, f"expected a cell such as {{type: LSTMCell, units: 32}}, got {_shown(item)}")
            continue
        t = item["type"]
        if not isinstance(t, str):
            c.err(p + ("type",), f"expected a cell type name, got {_shown(t)}")
        elif t in S.CELL_KEYS:
            cfg = c.keys(item, {"type": S.COMMON_KEYS["type"], **S.CELL_KEYS[t]}, p, f"a {t}")
            cfg.pop("type")
            out.append(CellDecl(t, cfg, p))
        elif t in cells:
            out.append(CellDecl(t, {k: v for k, v in item.items() if k != "type"}, p))
        else:
            known = list(S.CELL_KEYS) + list(cells)
            c.err(p + ("type",), f"unknown cell type {_shown(t)}: expected one of {', '.join(known)} "
                  f"(custom cells are declared under `cells:`).{_suggest(t, known)}")
    return tuple(out)


def _outputs(c: _Checker, raw: Any) -> list[OutputDecl] | None:
    if raw is None:
        return None
    if isinstance(raw, str):
        return [OutputDecl(None, raw, ("outputs",))]
    if isinstance(raw, list) and raw:
        out = []
        for i, r in enumerate(raw):
            if not isinstance(r, str):
                c.err(("outputs", i), f"expected a reference such as `dense` or `lstm.state_h`, got {_shown(r)}")
            else:
                out.append(OutputDecl(None, r, ("outputs", i)))
        return out
    if isinstance(raw, dict) and raw:
        out = []
        for k, r in raw.items():
            if not S.printable_name(k):
                c.err(("outputs", k), f"expected an output name (non-empty, no '/' or control characters), got {k!r}")
            elif not isinstance(r, str):
                c.err(("outputs", k), f"expected a reference such as `dense` or `lstm.state_h`, got {_shown(r)}")
            else:
                out.append(OutputDecl(k, r, ("outputs", k)))
        return out
    c.err(("outputs",), f"expected a list of references or a mapping of names to references, got {_shown(raw)}")
    return None
