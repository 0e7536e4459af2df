"""Custom cells (docs/spec.md, "Custom cells"): a cell definition from the spec's `cells:`,
checked as data at load time, then bound to a layer (its attributes and the sizes of the
connected inputs) and parsed into a Program (rnnc/cells/lang.py)."""
from __future__ import annotations

import ast
from dataclasses import dataclass
from typing import Any

from .lang import Node, Program, StepError, int_value, live_nodes, parse_step
from .ops import OPS

DEF_KEYS = {"attrs", "inputs", "params", "state", "step", "output"}
INITS = ("glorot_uniform", "glorot_normal", "orthogonal", "zeros", "ones", "uniform", "normal")


@dataclass(frozen=True)
class BoundCell:
    """A custom cell bound to one layer: every size is a number and the step is parsed."""

    name: str
    attrs: dict[str, int]
    inputs: tuple[tuple[str, tuple[int, ...]], ...]     # per-step input shapes
    params: dict[str, tuple[int, ...]]
    inits: dict[str, str]
    states: tuple[tuple[str, tuple[int, ...]], ...]
    outputs: tuple[tuple[str, tuple[int, ...]], ...]    # per-step output shapes
    program: Program
    # not refused, but most likely a mistake: (key path, message, (line, col) in the step or
    # None); the layer shows them in its notes (rnnc/ir/build.py custom_cell)
    warnings: tuple[tuple[tuple, str, tuple[int, int] | None], ...] = ()


class CellDefError(Exception):
    """A problem at a key path inside the cell definition (or its step text)."""

    def __init__(self, path: tuple, message: str, step_pos: tuple[int, int] | None = None):
        super().__init__(message)
        self.path, self.message, self.step_pos = path, message, step_pos


def int_eval(text: Any, ints: dict[str, int], path: tuple) -> int:
    """A dimension: an integer, or an integer expression of attributes and sizes ("3 * units")."""
    if isinstance(text, int) and not isinstance(text, bool):
        return text
    if not isinstance(text, str):
        raise CellDefError(path, f"expected an integer or an integer expression, got {text!r}")
    if len(text) > 200:
        raise CellDefError(path, f"expected a short integer expression such as `3 * units`, got {len(text)} characters")
    try:
        tree = ast.parse(text, mode="eval").body
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        raise CellDefError(path, f"expected an integer expression such as `3 * units`, got {text!r}") from None

    def fail(reason: str, node: ast.AST) -> CellDefError:
        if reason == "unknown":
            name = node.id if isinstance(node, ast.Name) else ast.unparse(node)
            return CellDefError(path, f"unknown size `{name}` in {text!r}: expected one of {', '.join(sorted(ints))}")
        if reason == "zero":
            return CellDefError(path, f"division by zero in {text!r}")
        return CellDefError(path, f"expected an integer expression of attributes and sizes, got {text!r}")
    return int_value(tree, ints, fail, signs=False)     # a dimension has no sign


def check_definition(name: str, d: Any) -> list[tuple[tuple, str]]:
    """Structural checks of a `cells:` entry, before any layer uses it: [(path, message)]."""
    p = ("cells", name)
    if not isinstance(d, dict):
        return [(p, f"expected a cell definition mapping (attrs, params, state, step, output), got {type(d).__name__}")]
    out: list[tuple[tuple, str]] = []
    for k in d:
        if k not in DEF_KEYS:
            out.append((p + (k,), f"unknown key {k!r} in a cell definition: expected one of {', '.join(sorted(DEF_KEYS))}"))
    for k in ("state", "step", "output"):
        if k not in d:
            out.append((p, f"missing required key {k!r} in cell {name!r}"))
    attrs = d.get("attrs", [])
    if not isinstance(attrs, list) or not all(isinstance(a, str) and a.isidentifier() for a in attrs):
        out.append((p + ("attrs",), f"expected a list of attribute names, got {attrs!r}"))
    for key in ("inputs", "state"):
        v = d.get(key, {})
        if not isinstance(v, dict) or (key == "state" and not v) or not all(
                isinstance(n, str) and n.isidentifier() and isinstance(s, list) for n, s in v.items()):
            out.append((p + (key,), f"expected a mapping of names to shapes such as {{h: [units]}}, got {v!r}"))
    params = d.get("params", {})
    if not isinstance(params, dict):
        out.append((p + ("params",), f"expected a mapping of parameter names to {{shape, init}}, got {params!r}"))
    else:
        for pn, spec in params.items():
            pp = p + ("params", pn)
            if not isinstance(spec, dict) or "shape" not in spec or not isinstance(spec["shape"], list):
                out.append((pp, "expected {shape: [...], init: ...}"))
                continue
            for k in spec:
                if k not in ("shape", "init"):
                    out.append((pp + (k,), f"unknown key {k!r} for a parameter: expected shape, init"))
            if spec.get("init", "glorot_uniform") not in INITS:
                out.append((pp + ("init",), f"expected one of {', '.join(INITS)}, got {spec.get('init')!r}"))
    o = d.get("output")
    if "output" in d and not (isinstance(o, str) or (isinstance(o, list) and o and all(isinstance(x, str) for x in o))):
        out.append((p + ("output",), f"expected an output name or a list of names, got {o!r}"))
    if "step" in d and not isinstance(d["step"], str):
        out.append((p + ("step",), "expected the step as text (a YAML block: `step: |`)"))
    elif "step" in d:   # syntax now, for a cell no layer uses too; the rest when a layer binds it
        try:
            ast.parse(d["step"], mode="exec")
        except SyntaxError as e:
            out.append((p + ("step",), f"step line {e.lineno or 1}, column {e.offset or 1}: not valid step syntax: "
                                       f"{e.msg}"))
        except (ValueError, MemoryError, RecursionError) as e:
            out.append((p + ("step",), f"not valid step syntax: {e}"))
    return out


def bind(name: str, d: dict, attrs: dict[str, Any], input_shapes: list[tuple[int, ...]]) -> BoundCell:
    """Bind a definition to a layer's attributes and per-step input shapes; parse the step."""
    p = ("cells", name)
    want = d.get("attrs", [])
    for k in attrs:
        if k not in want:
            raise CellDefError(("@cell", k), f"unknown attribute {k!r} for cell {name!r}: expected {', '.join(want) or 'none'}")
    ints: dict[str, int] = {}
    for a in want:
        if a not in attrs:
            raise CellDefError(("@cell",), f"missing attribute {a!r} for cell {name!r}")
        v = attrs[a]
        if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
            raise CellDefError(("@cell", a), f"expected a positive integer, got {v!r}")
        ints[a] = v
    declared = d.get("inputs") or {"x": ["input"]}
    if len(declared) != len(input_shapes):
        raise CellDefError(("@input",), f"cell {name!r} takes {len(declared)} input(s) ({', '.join(declared)}), "
                           f"got {len(input_shapes)}")
    inputs = []
    for (iname, dims), shape in zip(declared.items(), input_shapes):
        if len(dims) != len(shape):
            raise CellDefError(p + ("inputs", iname), f"input `{iname}` is declared with {len(dims)} per-step dim(s) "
                               f"{dims}, got a tensor with per-step shape {list(shape)}")
        for k, (dim, size) in enumerate(zip(dims, shape)):
            if not isinstance(size, int):
                raise CellDefError(p + ("inputs", iname), f"input `{iname}` needs fixed per-step sizes, got {size!r}")
            if isinstance(dim, str) and dim.isidentifier() and dim not in ints:
                ints[dim] = size    # a size name, bound from the connected tensor
            elif int_eval(dim, ints, p + ("inputs", iname, k)) != size:
                raise CellDefError(p + ("inputs", iname, k), f"input `{iname}` axis {k + 1}: expected {dim} = "
                                   f"{int_eval(dim, ints, p)}, got {size}")
        inputs.append((iname, tuple(shape)))
    params, inits = {}, {}
    for pn, spec in (d.get("params") or {}).items():
        shape = tuple(int_eval(v, ints, p + ("params", pn, "shape", i)) for i, v in enumerate(spec["shape"]))
        if any(s <= 0 for s in shape):
            raise CellDefError(p + ("params", pn, "shape"), f"expected positive sizes, got {list(shape)}")
        params[pn], inits[pn] = shape, spec.get("init", "glorot_uniform")
    states = []
    for sn, dims in d["state"].items():
        shape = tuple(int_eval(v, ints, p + ("state", sn, i)) for i, v in enumerate(dims))
        if any(s <= 0 for s in shape):
            raise CellDefError(p + ("state", sn), f"expected positive sizes, got {list(shape)}")
        states.append((sn, shape))
    names = [d["output"]] if isinstance(d["output"], str) else list(d["output"])
    clash = (set(params) | set(dict(states))) & set(dict(inputs)) or set(params) & set(dict(states))
    if clash:
        raise CellDefError(p, f"names used twice among inputs, params and state: {', '.join(sorted(clash))}")
    try:
        prog = parse_step(d["step"], ints=ints, inputs=dict(inputs), states=dict(states), params=params, outputs=names,
                          assign_states=True)
    except StepError as e:
        raise CellDefError(p + ("step",), e.message, (e.line, e.col)) from None
    outs = tuple((n, prog.nodes[i].shape[1:]) for n, i in zip(names, prog.outputs))
    return BoundCell(name, {a: ints[a] for a in want}, tuple(inputs), params, inits, tuple(states), outs, prog,
                     step_warnings(p, prog))


def step_warnings(p: tuple, prog: Program) -> tuple[tuple[tuple, str, tuple[int, int] | None], ...]:
    """What a step does that is allowed but most likely a mistake. A parameter never read
    (by anything the outputs or next states depend on) is a warning, not an error: Keras
    accepts a weight its call() never uses, and a trained weights file may carry one; a state
    never assigned is refused by the parser. A name assigned and never used: the parser's
    warnings (rnnc/cells/lang.py)."""
    live = live_nodes(prog)
    out: list[tuple[tuple, str, tuple[int, int] | None]] = [
        (p + ("params", pn), f"parameter `{pn}` is declared but the step never uses it to compute the outputs or "
                             "states: it has no effect (use it, or remove it from params)", None)
        for pn, i in prog.params if i not in live]
    out += [(p + ("step",), message, (line, col)) for message, line, col in prog.warnings]
    return tuple(out)


# ---- NumPy semantics of the step's nodes (the reference interpreter's backend) ----------

def numpy_node(node: Node, args: list[Any], values: dict[str, Any] | None = None) -> Any:
    """Evaluate one step node on NumPy arrays (full shapes, batch axis first): the op table's
    NumPy function (rnnc/cells/ops.py)."""
    d = OPS.get(node.op)
    if d is None:   # pragma: no cover - the parser and the passes make only table ops
        raise ValueError(f"unknown step op {node.op!r}")
    return d.numpy(node, args)
