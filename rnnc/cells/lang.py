"""The custom-cell step language: Python expression syntax parsed with `ast` into a small,
typed expression graph, never executed. Only the constructs below are accepted; anything
else is a SpecError that points at the step's line and column.

    statements   name = expr        a, b = split(z, 2)
    expressions  + - * / ** @, unary -, comparisons (for where), numeric literals,
                 names (step inputs, states, params, earlier results, attributes and sizes),
                 indexing and slicing with integer-expression bounds (z[:, units:2 * units]),
                 calls: activations, exp log sqrt abs minimum maximum clip concat split stack
                 einsum matmul transpose reshape sum mean where

Shapes are checked as the graph is built. Batched values carry the batch axis first, as the
user writes them (`z[:, :units]`, `einsum("bij,ijkl->bkl", ...)`, `axis=-1`); in a full
shape the batch axis is the marker B.

What each op takes, its shape rule and its NumPy meaning are in the op table
(rnnc/cells/ops.py); this module holds the syntax: operators, subscripts, calls dispatched
by the table, statements."""
from __future__ import annotations

import ast
import difflib
from dataclasses import dataclass, replace
from typing import Any, Callable, Mapping

from .ops import (
    CALLS,
    FUNCTIONS,
    OPS,
    Arg,
    B,
    Dtype,
    Keyword,
    Shape,
    StepError,
    broadcast,
    einsum_equation,
    normalize_axis,
    show,
)

__all__ = ["B", "FUNCTIONS", "Node", "Program", "ProgramWriter", "StepError", "broadcast", "evaluate", "int_value",
           "live_nodes", "parse_step", "reads_inputs", "show", "state_dependent"]

_BINOPS = {ast.Add: "add", ast.Sub: "sub", ast.Mult: "mul", ast.Div: "div", ast.Pow: "pow", ast.MatMult: "matmul"}
_CMPOPS = {ast.Lt: "less", ast.LtE: "less_equal", ast.Gt: "greater", ast.GtE: "greater_equal",
           ast.Eq: "equal", ast.NotEq: "not_equal"}


@dataclass(frozen=True)
class Node:
    """One value of a step: op `op` (a table op, rnnc/cells/ops.py, or a source: input, state,
    param) of the nodes `args`, with attributes `attrs` (sorted by name)."""

    id: int
    op: str
    args: tuple[int, ...]
    attrs: tuple[tuple[str, Any], ...]
    shape: Shape                    # full shape; batched values start with B
    dtype: Dtype = "float"          # "float" | "bool" | "tuple" (split: pick its parts)

    @property
    def batched(self) -> bool:
        return self.shape[:1] == (B,)

    def attr(self, name: str, default: Any = None) -> Any:
        return dict(self.attrs).get(name, default)


@dataclass(frozen=True)
class Program:
    """A parsed step: nodes in evaluation order (a node's args come before it)."""

    nodes: tuple[Node, ...]
    inputs: tuple[tuple[str, int], ...]       # step input name -> node
    states: tuple[tuple[str, int], ...]       # state name -> node holding its previous value
    params: tuple[tuple[str, int], ...]       # param name -> node
    next_states: tuple[int, ...]              # per state, the node of its next value
    outputs: tuple[int, ...]
    # what the parser noticed but did not refuse: (message, line, column) in the step text
    # (a name assigned and never used); rewritten programs drop them (they are reported at bind)
    warnings: tuple[tuple[str, int, int], ...] = ()


def did_you_mean(word: str, choices: Any) -> str:
    """` Did you mean `x`?` for the closest of `choices`, as unknown keys get (rnnc/spec/loader.py)."""
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" Did you mean `{close[0]}`?" if close else ""


def int_value(e: ast.AST, ints: Mapping[str, int], fail: Callable[[str, ast.AST], Exception], *,
              signs: bool = True) -> int:
    """The value of an integer expression of attributes and sizes (`3 * units`, `units // 2`):
    integer literals, names in `ints`, + - * //, and unary +/- where `signs`. Anything else
    raises `fail(reason, node)`, reason "unknown" (a name not in ints), "zero" (// by zero)
    or "other" (node: the part that is not allowed). One evaluator for the step's integer
    arguments (here) and the dimensions of a cell definition (rnnc/cells/custom.py)."""
    if isinstance(e, ast.Constant) and isinstance(e.value, int) and not isinstance(e.value, bool):
        return e.value
    if isinstance(e, ast.Name):
        if e.id in ints:
            return ints[e.id]
        raise fail("unknown", e)
    if signs and isinstance(e, ast.UnaryOp) and isinstance(e.op, (ast.USub, ast.UAdd)):
        v = int_value(e.operand, ints, fail, signs=signs)
        return -v if isinstance(e.op, ast.USub) else v
    if isinstance(e, ast.BinOp) and isinstance(e.op, (ast.Add, ast.Sub, ast.Mult, ast.FloorDiv)):
        a, b = int_value(e.left, ints, fail, signs=signs), int_value(e.right, ints, fail, signs=signs)
        if isinstance(e.op, ast.FloorDiv):
            if b == 0:
                raise fail("zero", e)
            return a // b
        return {ast.Add: a + b, ast.Sub: a - b, ast.Mult: a * b}[type(e.op)]
    raise fail("other", e)


class _Builder:
    def __init__(self, ints: dict[str, int], inputs: dict[str, Shape], states: dict[str, Shape],
                 params: dict[str, Shape]):
        self.ints = ints
        self.nodes: list[Node] = []
        self.env: dict[str, int] = {}
        self.assigned_at: dict[str, tuple[int, int]] = {}
        # every binding a statement makes: [name, node, (line, col), read?]; `binding` is the
        # current one of each name (reads mark it)
        self.bindings: list[list[Any]] = []
        self.binding: dict[str, int] = {}
        self.where = (1, 0)
        self.input_ids = [(n, self.add("input", (), (B, *s), name=n)) for n, s in inputs.items()]
        self.state_ids = [(n, self.add("state", (), (B, *s), name=n)) for n, s in states.items()]
        self.param_ids = [(n, self.add("param", (), tuple(s), name=n)) for n, s in params.items()]
        for name, i in (*self.input_ids, *self.state_ids, *self.param_ids):
            self.env[name] = i

    def error(self, message: str) -> StepError:
        return StepError(message, *self.where)

    def located(self, f: Callable[..., Any], *args: Any) -> Any:
        """f(*args), its StepError placed at the expression being built."""
        try:
            return f(*args)
        except StepError as e:
            raise self.error(e.message) from None

    def add(self, op: str, args: tuple[int, ...], shape: Shape, dtype: Dtype = "float", **attrs: Any) -> int:
        self.nodes.append(Node(len(self.nodes), op, args, tuple(sorted(attrs.items())), tuple(shape), dtype))
        return len(self.nodes) - 1

    def make(self, op: str, args: tuple[int, ...], **attrs: Any) -> int:
        """A node of table op `op` on nodes `args`: the table resolves its attributes and gives
        its shape and dtype (rnnc/cells/ops.py)."""
        d = OPS[op]
        ins = [self.node(i) for i in args]
        try:
            if d.resolve is not None:
                attrs = d.resolve(ins, attrs)
            shape = d.shape(ins, attrs)
        except StepError as e:
            raise self.error(e.message) from None
        return self.add(op, args, shape, d.result_dtype(ins), **attrs)

    def node(self, i: int) -> Node:
        return self.nodes[i]

    # -- integer expressions (slice bounds, shapes, axes) -------------------------
    def int_expr(self, e: ast.AST, what: str) -> int:
        def fail(reason: str, node: ast.AST) -> StepError:
            if reason == "zero":
                return self.error(f"{what}: division by zero")
            return self.error(f"{what}: expected an integer expression of attributes and sizes "
                              f"({', '.join(sorted(self.ints)) or 'none'}), got `{ast.unparse(node)}`")
        return int_value(e, self.ints, fail)

    def int_list(self, e: ast.AST, what: str) -> list[int]:
        if isinstance(e, (ast.List, ast.Tuple)):
            return [self.int_expr(v, what) for v in e.elts]
        return [self.int_expr(e, what)]

    # -- expressions ---------------------------------------------------------------
    def expr(self, e: ast.AST) -> int:
        self.where = (getattr(e, "lineno", self.where[0]), getattr(e, "col_offset", self.where[1]))
        if isinstance(e, ast.Constant):
            if isinstance(e.value, bool) or not isinstance(e.value, (int, float)):
                raise self.error(f"expected a number, got {e.value!r}")
            return self.make("const", (), value=float(e.value))
        if isinstance(e, ast.Name):
            if e.id in self.env:
                if e.id in self.binding:
                    self.bindings[self.binding[e.id]][3] = True
                return self.env[e.id]
            if e.id in self.ints:
                return self.make("const", (), value=float(self.ints[e.id]))
            known = sorted(set(self.env) | set(self.ints))
            raise self.error(f"unknown name `{e.id}`: expected one of {', '.join(known)}.{did_you_mean(e.id, known)}")
        if isinstance(e, ast.UnaryOp) and isinstance(e.op, (ast.USub, ast.UAdd)):
            x = self.expr(e.operand)
            return x if isinstance(e.op, ast.UAdd) else self.operator("neg", x)
        if isinstance(e, ast.BinOp) and type(e.op) in _BINOPS:
            a, b = self.expr(e.left), self.expr(e.right)
            self.where = (e.lineno, e.col_offset)
            return self.operator(_BINOPS[type(e.op)], a, b)
        if isinstance(e, ast.Compare) and len(e.ops) == 1 and type(e.ops[0]) in _CMPOPS:
            a, b = self.expr(e.left), self.expr(e.comparators[0])
            self.where = (e.lineno, e.col_offset)
            return self.operator(_CMPOPS[type(e.ops[0])], a, b)
        if isinstance(e, ast.Subscript):
            return self.subscript(e)
        if isinstance(e, ast.Call):
            return self.call(e)
        raise self.error(f"not allowed in a step: {type(e).__name__} `{ast.unparse(e)}` (a step uses arithmetic, "
                         "indexing and the listed functions only)")

    def floats(self, *ids: int) -> None:
        for i in ids:
            if self.node(i).dtype != "float":
                raise self.error(f"expected a number tensor, got a {self.node(i).dtype} value")

    def check_dtypes(self, operands: list[tuple[Arg, list[int]]]) -> None:
        """Each operand holds what its Arg asks for (a float tensor, unless it says otherwise)."""
        for arg, ids in operands:
            if arg.dtype == "float":
                self.floats(*ids)
            elif arg.dtype == "bool":
                for i in ids:
                    if self.node(i).dtype != "bool":
                        raise self.error(arg.dtype_error or f"expected a comparison, got a {self.node(i).dtype} value")

    def operator(self, op: str, *ids: int) -> int:
        """An operator's node (+, @, <, unary -) on computed operands."""
        d = OPS[op]
        self.check_dtypes([(arg, [i]) for arg, i in zip(d.positional(len(ids)), ids)])
        return self.make(op, ids)

    def subscript(self, e: ast.Subscript) -> int:
        if isinstance(e.value, ast.Call) and getattr(e.value.func, "id", None) == "split":
            parts = self.split_parts(self.call(e.value))
            k = self.int_expr(e.slice, "split index")
            if not -len(parts) <= k < len(parts):
                raise self.error(f"split index {k} out of range for {len(parts)} parts")
            return parts[k]
        x = self.expr(e.value)
        shape = self.node(x).shape
        items = e.slice.elts if isinstance(e.slice, ast.Tuple) else [e.slice]
        if sum(isinstance(i, ast.Constant) and i.value is Ellipsis for i in items) > 1:
            raise self.error("at most one `...` in an index")
        n_real = sum(not (isinstance(i, ast.Constant) and i.value is Ellipsis) for i in items)
        if n_real > len(shape):
            raise self.error(f"too many indices ({n_real}) for shape {show(shape)}")
        spec: list[tuple] = []       # per axis: ("all",), ("slice", start, stop, step), ("index", k)
        axis = 0
        for it in items:
            if isinstance(it, ast.Constant) and it.value is Ellipsis:
                skip = len(shape) - n_real
                spec += [("all",)] * skip
                axis += skip
                continue
            size = shape[axis]
            if isinstance(it, ast.Slice):
                lo = None if it.lower is None else self.int_expr(it.lower, "slice bound")
                hi = None if it.upper is None else self.int_expr(it.upper, "slice bound")
                st = None if it.step is None else self.int_expr(it.step, "slice step")
                if st == 0:
                    raise self.error("slice step cannot be zero")
                if size == B:
                    if (lo, hi, st) != (None, None, None):
                        raise self.error("the batch axis (first) can only be taken whole: `:`")
                    spec.append(("all",))
                else:
                    start, stop, step = slice(lo, hi, st).indices(size)
                    if not range(start, stop, step):
                        raise self.error(f"slice `{ast.unparse(it)}` of an axis of size {size} is empty")
                    spec.append(("slice", start, stop, step))
            else:
                if size == B:
                    raise self.error("cannot index the batch axis (first): use `:` for it")
                k = self.int_expr(it, "index")
                if not -size <= k < size:
                    raise self.error(f"index {k} out of range for an axis of size {size}")
                spec.append(("index", k % size))
            axis += 1
        spec += [("all",)] * (len(shape) - axis)
        return self.make("getitem", (x,), index=tuple(spec))

    # -- calls ---------------------------------------------------------------------
    def call(self, e: ast.Call) -> int:
        """A function call, dispatched by the op table: arguments converted in the table's
        order (rnnc/cells/ops.py, OpDef), then the node made."""
        if not isinstance(e.func, ast.Name):
            raise self.error(f"not allowed in a step: calling `{ast.unparse(e.func)}` (only the listed functions: "
                             f"{', '.join(FUNCTIONS)})")
        fn = e.func.id
        if fn not in CALLS:
            raise self.error(f"unknown function `{fn}`: expected one of {', '.join(FUNCTIONS)}."
                             f"{did_you_mean(fn, FUNCTIONS)}")
        d = OPS[CALLS[fn]]
        kw = {k.arg: k.value for k in e.keywords}
        if None in kw:
            raise self.error("`**` arguments are not allowed in a step")
        allowed = {k.name for k in d.keywords}
        for k in kw:
            if k not in allowed:
                raise self.error(f"{fn}() takes no keyword `{k}`" + (f" (it takes {', '.join(sorted(allowed))})"
                                                                      if allowed else ""))
        if any(isinstance(a, ast.Starred) for a in e.args):
            raise self.error("`*` arguments are not allowed in a step")
        args = e.args
        self.where = (e.lineno, e.col_offset)
        lo, hi = d.arity
        if len(args) < lo or (hi is not None and len(args) > hi):
            raise self.error(d.usage or f"{fn}() takes {lo}{' or more' if hi is None else ''} argument(s), "
                                        f"got {len(args)}")
        specs = d.positional(len(args))
        attrs: dict[str, Any] = {}
        for a, s in zip(args, specs):           # 1. literals (an einsum equation)
            if s.kind == "equation":
                if not isinstance(a, ast.Constant) or not isinstance(a.value, str):
                    raise self.error(d.usage or f"{fn}(): `{s.name}` must be a string")
                attrs[s.name] = self.located(einsum_equation, a.value)
        operands: list[tuple[Arg, list[int]]] = []
        for a, s in zip(args, specs):           # 2. tensors
            if s.kind == "tensor":
                operands.append((s, [self.expr(a)]))
            elif s.kind == "tensors":
                if not isinstance(a, (ast.List, ast.Tuple)) or not a.elts:
                    raise self.error(f"{fn}() takes a list of tensors: {fn}([a, b], axis=-1)")
                operands.append((s, [self.expr(v) for v in a.elts]))
        self.check_dtypes(operands)             # 3. their dtypes
        ids = tuple(i for _, group in operands for i in group)
        for k in d.keywords:                    # 4. keywords
            attrs[k.name] = self.keyword(k, kw.get(k.name), ids[0] if ids else -1)
        for a, s in zip(args, specs):           # 5. the other arguments
            if s.kind == "number":
                attrs[s.name] = self.number(a)
            elif s.kind == "ints":
                attrs[s.name] = self.int_list(a, s.what)
            elif s.kind == "count_or_sizes":
                attrs[s.name] = self.int_list(a, f"{s.what} sizes") if isinstance(a, (ast.List, ast.Tuple)) \
                    else self.int_expr(a, f"{s.what} count")
        if d.name_attr:
            attrs["name"] = fn
        return self.make(d.name, ids, **attrs)

    def keyword(self, k: Keyword, e: ast.AST | None, x: int) -> Any:
        """Keyword `k` as written (e; None: left out) for a call whose first tensor is x."""
        if k.kind == "axis":
            return self.axis(x, k.default if e is None else self.int_expr(e, k.name))
        if e is None:
            return k.default
        if k.kind == "int":
            return self.int_expr(e, k.name)
        if k.kind == "axes":
            return sorted({self.axis(x, a) for a in self.int_list(e, k.name)})
        return bool(self.number(e, allow_bool=True))        # "flag"

    def number(self, e: ast.AST, allow_bool: bool = False) -> float:
        if isinstance(e, ast.Constant) and (isinstance(e.value, (int, float)) and (allow_bool or not isinstance(e.value, bool))):
            return float(e.value)
        if isinstance(e, ast.UnaryOp) and isinstance(e.op, ast.USub):
            return -self.number(e.operand)
        return float(self.int_expr(e, "number"))

    def axis(self, x: int, axis: int) -> int:
        return self.located(normalize_axis, self.node(x), axis)

    def split_parts(self, sid: int) -> list[int]:
        return [self.make("pick", (sid,), index=k) for k in range(len(self.node(sid).attr("sizes")))]

    # -- statements ------------------------------------------------------------------
    def statement(self, st: ast.stmt) -> None:
        self.where = (st.lineno, st.col_offset)
        if not isinstance(st, ast.Assign) or len(st.targets) != 1:
            raise self.error(f"not allowed in a step: {type(st).__name__} (a step is a list of `name = expression`)")
        target = st.targets[0]
        value = self.expr(st.value)
        if isinstance(target, ast.Name):
            if self.node(value).dtype == "tuple":
                raise self.error("split() gives several parts: unpack them (`a, b = split(...)`) or index one")
            self.bind_name(target.id, value, st)
            return
        if isinstance(target, ast.Tuple) and all(isinstance(t, ast.Name) for t in target.elts):
            if self.node(value).dtype != "tuple":
                raise self.error("only split() results can be unpacked into several names")
            parts = self.split_parts(value)
            if len(parts) != len(target.elts):
                raise self.error(f"split() gives {len(parts)} parts, unpacked into {len(target.elts)} names")
            for t, p in zip(target.elts, parts):
                assert isinstance(t, ast.Name)   # checked above: every target is a name
                self.bind_name(t.id, p, st)
            return
        raise self.error(f"not allowed as an assignment target: `{ast.unparse(target)}`")

    def bind_name(self, name: str, value: int, st: ast.stmt) -> None:
        self.env[name] = value
        self.assigned_at[name] = (st.lineno, st.col_offset)
        self.binding[name] = len(self.bindings)
        self.bindings.append([name, value, (st.lineno, st.col_offset), False])

    def unused(self, kept: set[str]) -> list[tuple[str, int, tuple[int, int]]]:
        """Bindings never read and not a state's next value or an output (the final binding of
        a name in `kept`); names starting with `_` are discards."""
        final = {i for n, i in self.binding.items() if n in kept}
        return [(name, node, at) for i, (name, node, at, read) in enumerate(self.bindings)
                if not read and i not in final and not name.startswith("_")]


def parse_step(text: str, *, ints: dict[str, int], inputs: dict[str, Shape], states: dict[str, Shape],
               params: dict[str, Shape], outputs: list[str], assign_states: bool = False) -> Program:
    """Parse and shape-check a step. Raises StepError(message, line, col) on any problem.
    assign_states: every state must be assigned (`h = ...`; `h = h` keeps it), as a cell's
    step must (rnnc/cells/custom.py bind); off for steps parsed on their own (op-table tests)."""
    if not isinstance(text, str) or not text.strip():
        raise StepError("expected the step as text: one `name = expression` per line")
    try:
        tree = ast.parse(text, mode="exec")
    except SyntaxError as e:
        raise StepError(f"not valid step syntax: {e.msg}", e.lineno or 1, max((e.offset or 1) - 1, 0)) from None
    except (ValueError, MemoryError, RecursionError) as e:
        raise StepError(f"not valid step syntax: {e}") from None
    b = _Builder(ints, inputs, states, params)
    try:
        for st in tree.body:
            b.statement(st)
    except RecursionError:
        raise StepError("the step is nested too deeply", *b.where) from None
    b.where = (1, 0)
    unused = b.unused(set(states) | set(outputs))
    never = [n for n in states if n not in b.assigned_at] if assign_states else []
    if never:
        name = never[0]
        # the likeliest slip: an unused name of the state's shape (`y = ...` for `h = ...`), the last one
        fits = [u for u in unused if b.node(u[1]).shape == (B, *states[name])] or unused
        hint = f"`{fits[-1][0]}` here is assigned and never used: did you mean `{name} = ...`?" if fits else \
            f"write `{name} = {name}` to keep it unchanged"
        raise StepError(f"state `{name}` is never assigned by the step, so it would keep its initial value at every "
                        f"step: expected a line `{name} = ...` computing its next value ({hint})",
                        *(fits[-1][2] if fits else (1, 0)))
    next_states = []
    for name, shape in states.items():
        i = b.env[name]
        got = b.node(i).shape
        if b.node(i).dtype != "float" or got != (B, *shape):
            raise StepError(f"state `{name}`: the step gives it shape {show(got)}, expected {show((B, *shape))}",
                            *b.assigned_at.get(name, (1, 0)))
        next_states.append(i)
    outs = []
    for name in outputs:
        if name not in b.env:
            raise StepError(f"output `{name}` is not computed by the step (known: {', '.join(sorted(b.env))})")
        i = b.env[name]
        if b.node(i).dtype != "float" or not b.node(i).batched:
            raise StepError(f"output `{name}` must be a per-example (batched) tensor, got shape {show(b.node(i).shape)}",
                            *b.assigned_at.get(name, (1, 0)))
        outs.append(i)
    warnings = tuple((f"`{name}` is assigned and never used (name it `_{name}` if that is meant)", *at)
                     for name, _, at in unused)
    return Program(tuple(b.nodes), tuple(b.input_ids), tuple(b.state_ids), tuple(b.param_ids), tuple(next_states),
                   tuple(outs), warnings)


class ProgramWriter:
    """Rebuilds a program node by node, for the passes that rewrite a step: `add` appends a new
    node, `keep` copies an old one onto the new ids, `program` ends it."""

    def __init__(self, prog: Program):
        self.prog = prog
        self.nodes: list[Node] = []
        self.new_id: dict[int, int] = {}     # old node id -> new node id

    def add(self, op: str, args: tuple[int, ...], shape: Shape, **attrs: Any) -> int:
        """A new float node of table op `op` (rnnc/cells/ops.py) on new ids `args`, with the shape
        the table's rule gives it (`ops.result_shape` checks one)."""
        self.nodes.append(Node(len(self.nodes), op, args, tuple(sorted(attrs.items())), shape))
        return len(self.nodes) - 1

    def keep(self, n: Node) -> int:
        self.new_id[n.id] = len(self.nodes)
        self.nodes.append(replace(n, id=len(self.nodes), args=tuple(self.new_id[a] for a in n.args)))
        return self.new_id[n.id]

    def program(self) -> Program:
        """The new program (the old one if nothing changed)."""
        p, m = self.prog, self.new_id
        if len(self.nodes) == len(p.nodes) and all(a == b for a, b in zip(self.nodes, p.nodes)):
            return p
        def remap(pairs: tuple[tuple[str, int], ...]) -> tuple[tuple[str, int], ...]:
            return tuple((k, m[i]) for k, i in pairs)

        return Program(tuple(self.nodes), remap(p.inputs), remap(p.states), remap(p.params),
                       tuple(m[i] for i in p.next_states), tuple(m[i] for i in p.outputs))


def live_nodes(prog: Program) -> set[int]:
    """The nodes the outputs and next states depend on (the rest is dead)."""
    live: set[int] = set()
    stack = [*prog.outputs, *prog.next_states]
    while stack:
        i = stack.pop()
        if i not in live:
            live.add(i)
            stack.extend(prog.nodes[i].args)
    return live


def reads_inputs(prog: Program) -> bool:
    """Does the step use its input at all (`h = tanh(h)` does not)?"""
    live = live_nodes(prog)
    return any(i in live for _, i in prog.inputs)


def state_dependent(prog: Program) -> list[bool]:
    """Per node: does it depend on a state (so it must run inside the time loop)?"""
    dep = [False] * len(prog.nodes)
    for n in prog.nodes:
        dep[n.id] = n.op == "state" or any(dep[a] for a in n.args)
    return dep


def evaluate(prog: Program, fn: Callable[[Node, list[Any]], Any], values: dict[int, Any],
             wanted: list[int]) -> list[Any]:
    """Evaluate the nodes needed for `wanted` with `fn(node, arg values)`; `values` seeds
    inputs, states, params (and any node already computed, e.g. hoisted)."""
    need: set[int] = set()
    stack = list(wanted)
    while stack:
        i = stack.pop()
        if i in need or i in values:
            continue
        need.add(i)
        stack.extend(prog.nodes[i].args)
    env = dict(values)
    for n in prog.nodes:
        if n.id in need:
            env[n.id] = fn(n, [env[a] for a in n.args])
    return [env[i] for i in wanted]
