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
shape the batch axis is the marker B."""
from __future__ import annotations

import ast
from dataclasses import dataclass, replace
from typing import Any, Callable

from .activations import NAMES as ACTIVATIONS

B = -1  # the batch axis in a full shape

UNARY = {"exp", "log", "sqrt", "abs", *ACTIVATIONS}
FUNCTIONS = sorted(UNARY | {"minimum", "maximum", "clip", "concat", "split", "stack", "einsum", "matmul",
                            "transpose", "reshape", "sum", "mean", "where"})
_BINOPS = {ast.Add: "add", ast.Sub: "sub", ast.Mult: "mul", ast.Div: "div", ast.Pow: "pow", ast.MatMult: "matmul"}
_CMPOPS = {ast.Lt: "less", ast.LtE: "less_equal", ast.Gt: "greater", ast.GtE: "greater_equal",
           ast.Eq: "equal", ast.NotEq: "not_equal"}


class StepError(Exception):
    """A problem in the step text at (line, col) of the text (1-based line, 0-based col)."""

    def __init__(self, message: str, line: int = 1, col: int = 0):
        super().__init__(message)
        self.message, self.line, self.col = message, line, col


@dataclass(frozen=True)
class Node:
    id: int
    op: str
    args: tuple[int, ...]
    attrs: tuple[tuple[str, Any], ...]
    shape: tuple[int, ...]          # full shape; batched values start with B
    dtype: str = "float"            # "float" | "bool" | "tuple" (split: pick its parts)

    @property
    def batched(self) -> bool:
        return self.shape[:1] == (B,)

    def attr(self, name: str, default: Any = None) -> Any:
        return dict(self.attrs).get(name, default)


@dataclass(frozen=True)
class Program:
    """A parsed step: nodes in evaluation order."""

    nodes: tuple[Node, ...]
    inputs: tuple[tuple[str, int], ...]       # step input name -> node
    states: tuple[tuple[str, int], ...]       # state name -> node holding its previous value
    params: tuple[tuple[str, int], ...]       # param name -> node
    next_states: tuple[int, ...]              # per state, the node of its next value
    outputs: tuple[int, ...]


def show(shape: tuple[int, ...]) -> str:
    return "(" + ", ".join("batch" if d == B else str(d) for d in shape) + ")"


def broadcast(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...] | None:
    out = []
    for i in range(1, max(len(a), len(b)) + 1):
        x = a[-i] if i <= len(a) else 1
        y = b[-i] if i <= len(b) else 1
        if x == y or y == 1:
            out.append(x)
        elif x == 1:
            out.append(y)
        else:
            return None
    return tuple(reversed(out))


class _Builder:
    def __init__(self, ints: dict[str, int], inputs: dict[str, tuple[int, ...]], states: dict[str, tuple[int, ...]],
                 params: dict[str, tuple[int, ...]]):
        self.ints = ints
        self.nodes: list[Node] = []
        self.env: dict[str, int] = {}
        self.assigned_at: dict[str, tuple[int, int]] = {}
        self.where = (1, 0)
        self.input_ids = [(n, self.add("input", (), (B, *s), name=n)) for n, s in inputs.items()]
        self.state_ids = [(n, self.add("state", (), (B, *s), name=n)) for n, s in states.items()]
        self.param_ids = [(n, self.add("param", (), tuple(s), name=n)) for n, s in params.items()]
        for name, i in (*self.input_ids, *self.state_ids, *self.param_ids):
            self.env[name] = i

    def error(self, message: str) -> StepError:
        return StepError(message, *self.where)

    def add(self, op: str, args: tuple[int, ...], shape: tuple[int, ...], dtype: str = "float", **attrs: Any) -> int:
        self.nodes.append(Node(len(self.nodes), op, args, tuple(sorted(attrs.items())), tuple(shape), dtype))
        return len(self.nodes) - 1

    def node(self, i: int) -> Node:
        return self.nodes[i]

    # -- integer expressions (slice bounds, shapes, axes) -------------------------
    def int_expr(self, e: ast.AST, what: str) -> int:
        if isinstance(e, ast.Constant) and isinstance(e.value, int) and not isinstance(e.value, bool):
            return e.value
        if isinstance(e, ast.Name) and e.id in self.ints:
            return self.ints[e.id]
        if isinstance(e, ast.UnaryOp) and isinstance(e.op, (ast.USub, ast.UAdd)):
            v = self.int_expr(e.operand, what)
            return -v if isinstance(e.op, ast.USub) else v
        if isinstance(e, ast.BinOp) and isinstance(e.op, (ast.Add, ast.Sub, ast.Mult, ast.FloorDiv)):
            a, b = self.int_expr(e.left, what), self.int_expr(e.right, what)
            if isinstance(e.op, ast.FloorDiv):
                if b == 0:
                    raise self.error(f"{what}: division by zero")
                return a // b
            return {ast.Add: a + b, ast.Sub: a - b, ast.Mult: a * b}[type(e.op)]
        raise self.error(f"{what}: expected an integer expression of attributes and sizes "
                         f"({', '.join(sorted(self.ints)) or 'none'}), got `{ast.unparse(e)}`")

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
            return self.add("const", (), (), value=float(e.value))
        if isinstance(e, ast.Name):
            if e.id in self.env:
                return self.env[e.id]
            if e.id in self.ints:
                return self.add("const", (), (), value=float(self.ints[e.id]))
            known = sorted(set(self.env) | set(self.ints))
            raise self.error(f"unknown name `{e.id}`: expected one of {', '.join(known)}")
        if isinstance(e, ast.UnaryOp) and isinstance(e.op, (ast.USub, ast.UAdd)):
            x = self.expr(e.operand)
            return x if isinstance(e.op, ast.UAdd) else self.add("neg", (x,), self.node(x).shape)
        if isinstance(e, ast.BinOp) and type(e.op) in _BINOPS:
            a, b = self.expr(e.left), self.expr(e.right)
            self.where = (e.lineno, e.col_offset)
            op = _BINOPS[type(e.op)]
            return self.matmul(a, b) if op == "matmul" else self.elementwise(op, a, b)
        if isinstance(e, ast.Compare) and len(e.ops) == 1 and type(e.ops[0]) in _CMPOPS:
            a, b = self.expr(e.left), self.expr(e.comparators[0])
            self.where = (e.lineno, e.col_offset)
            return self.elementwise(_CMPOPS[type(e.ops[0])], a, b, dtype="bool")
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

    def elementwise(self, op: str, a: int, b: int, dtype: str = "float") -> int:
        self.floats(a, b)
        sa, sb = self.node(a).shape, self.node(b).shape
        out = broadcast(sa, sb)
        if out is None:
            raise self.error(f"shapes {show(sa)} and {show(sb)} do not broadcast for `{op}`")
        return self.add(op, (a, b), out, dtype)

    def matmul(self, a: int, b: int) -> int:
        self.floats(a, b)
        sa, sb = self.node(a).shape, self.node(b).shape
        if not sa or not sb:
            raise self.error("matmul needs tensors of rank 1 or more, got a scalar")
        ea, eb = (sa if len(sa) > 1 else (1, *sa)), (sb if len(sb) > 1 else (*sb, 1))
        if ea[-1] != eb[-2] or B in (ea[-1], eb[-2]):
            raise self.error(f"matmul: inner dims differ: {show(sa)} @ {show(sb)} (expected {sa[-1]} == "
                             f"{sb[0] if len(sb) == 1 else sb[-2]})")
        batch = broadcast(ea[:-2], eb[:-2])
        if batch is None:
            raise self.error(f"matmul: leading dims of {show(sa)} and {show(sb)} do not broadcast")
        out = (*batch, *([ea[-2]] if len(sa) > 1 else []), *([eb[-1]] if len(sb) > 1 else []))
        return self.add("matmul", (a, b), out)

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
        spec: list[tuple] = []
        out: list[int] = []
        axis = 0
        for it in items:
            if isinstance(it, ast.Constant) and it.value is Ellipsis:
                skip = len(shape) - n_real
                spec += [("all",)] * skip
                out += list(shape[axis:axis + skip])
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
                    out.append(B)
                else:
                    start, stop, step = slice(lo, hi, st).indices(size)
                    n = len(range(start, stop, step))
                    if n == 0:
                        raise self.error(f"slice `{ast.unparse(it)}` of an axis of size {size} is empty")
                    spec.append(("slice", start, stop, step))
                    out.append(n)
            else:
                if size == B:
                    raise self.error("cannot index the batch axis (first): use `:` for it")
                k = self.int_expr(it, "index")
                if not -size <= k < size:
                    raise self.error(f"index {k} out of range for an axis of size {size}")
                spec.append(("index", k % size))
            axis += 1
        spec += [("all",)] * (len(shape) - axis)
        out += list(shape[axis:])
        return self.add("getitem", (x,), tuple(out), self.node(x).dtype, index=tuple(spec))

    # -- calls ---------------------------------------------------------------------
    def call(self, e: ast.Call) -> int:
        if not isinstance(e.func, ast.Name):
            raise self.error(f"not allowed in a step: calling `{ast.unparse(e.func)}` (only the listed functions: "
                             f"{', '.join(FUNCTIONS)})")
        fn = e.func.id
        if fn not in FUNCTIONS:
            raise self.error(f"unknown function `{fn}`: expected one of {', '.join(FUNCTIONS)}")
        kw = {k.arg: k.value for k in e.keywords}
        if None in kw:
            raise self.error("`**` arguments are not allowed in a step")
        allowed = {"concat": {"axis"}, "stack": {"axis"}, "split": {"axis"}, "sum": {"axis", "keepdims"},
                   "mean": {"axis", "keepdims"}}.get(fn, set())
        for k in kw:
            if k not in allowed:
                raise self.error(f"{fn}() takes no keyword `{k}`" + (f" (it takes {', '.join(sorted(allowed))})"
                                                                      if allowed else ""))
        if any(isinstance(a, ast.Starred) for a in e.args):
            raise self.error("`*` arguments are not allowed in a step")
        args = e.args
        self.where = (e.lineno, e.col_offset)

        def arity(*n: int) -> None:
            if len(args) not in n:
                raise self.error(f"{fn}() takes {' or '.join(map(str, n))} argument(s), got {len(args)}")

        if fn in UNARY:
            arity(1)
            x = self.expr(args[0])
            self.floats(x)
            if fn == "softmax" and not self.node(x).shape:
                raise self.error("softmax() normalizes over the last axis: expected a tensor of rank 1 or more, "
                                 "got a scalar")
            return self.add("act" if fn in ACTIVATIONS else fn, (x,), self.node(x).shape, name=fn)
        if fn in ("minimum", "maximum"):
            arity(2)
            return self.elementwise(fn, self.expr(args[0]), self.expr(args[1]))
        if fn == "matmul":
            arity(2)
            return self.matmul(self.expr(args[0]), self.expr(args[1]))
        if fn == "clip":
            arity(3)
            x = self.expr(args[0])
            self.floats(x)
            lo, hi = self.number(args[1]), self.number(args[2])
            if lo > hi:
                raise self.error(f"clip: lower bound {lo} is above upper bound {hi}")
            return self.add("clip", (x,), self.node(x).shape, lo=lo, hi=hi)
        if fn == "where":
            arity(3)
            c, a, b = (self.expr(v) for v in args)
            if self.node(c).dtype != "bool":
                raise self.error("where(): the condition must be a comparison, such as `x > 0`")
            self.floats(a, b)
            out = broadcast(self.node(c).shape, self.node(a).shape)
            out = broadcast(out, self.node(b).shape) if out is not None else None
            if out is None:
                raise self.error("where(): shapes do not broadcast: " + ", ".join(show(self.node(v).shape) for v in (c, a, b)))
            return self.add("where", (c, a, b), out)
        if fn in ("concat", "stack"):
            arity(1)
            if not isinstance(args[0], (ast.List, ast.Tuple)) or not args[0].elts:
                raise self.error(f"{fn}() takes a list of tensors: {fn}([a, b], axis=-1)")
            xs = [self.expr(v) for v in args[0].elts]
            self.floats(*xs)
            axis = self.int_expr(kw["axis"], "axis") if "axis" in kw else (-1 if fn == "concat" else 0)
            return self.join(fn, xs, axis)
        if fn == "split":
            arity(2)
            x = self.expr(args[0])
            self.floats(x)
            axis = self.axis(x, self.int_expr(kw["axis"], "axis") if "axis" in kw else -1)
            size = self.node(x).shape[axis]
            if isinstance(args[1], (ast.List, ast.Tuple)):
                sizes = self.int_list(args[1], "split sizes")
                if sum(sizes) != size or min(sizes) <= 0:
                    raise self.error(f"split sizes {sizes} must be positive and add up to {size}")
            else:
                n = self.int_expr(args[1], "split count")
                if n <= 0 or size % n:
                    raise self.error(f"split: an axis of size {size} does not split into {n} equal parts")
                sizes = [size // n] * n
            return self.add("split", (x,), self.node(x).shape, "tuple", axis=axis, sizes=tuple(sizes))
        if fn == "einsum":
            return self.einsum(args)
        if fn == "transpose":
            arity(2)
            x = self.expr(args[0])
            self.floats(x)
            perm = self.int_list(args[1], "transpose permutation")
            shape = self.node(x).shape
            if sorted(p % max(len(shape), 1) for p in perm) != list(range(len(shape))):
                raise self.error(f"transpose: expected a permutation of 0..{len(shape) - 1}, got {perm}")
            perm = [p % len(shape) for p in perm]
            if self.node(x).batched and perm[0] != 0:
                raise self.error("transpose: the batch axis must stay first (perm[0] == 0)")
            return self.add("transpose", (x,), tuple(shape[p] for p in perm), perm=tuple(perm))
        if fn == "reshape":
            arity(2)
            x = self.expr(args[0])
            self.floats(x)
            target = self.int_list(args[1], "reshape shape")
            shape = self.node(x).shape
            body = shape[1:] if self.node(x).batched else shape
            if self.node(x).batched:
                if not target or target[0] != -1:
                    raise self.error("reshape of a batched value: the new shape starts with -1 for the batch axis, "
                                     "e.g. reshape(x, [-1, 4, 8])")
                target = target[1:]
            n = 1
            for d in body:
                n *= d
            m = 1
            for d in target:
                m *= d
            if any(d <= 0 for d in target) or m != n:
                raise self.error(f"reshape: cannot reshape {show(shape)} into {target} ({n} values per example)")
            out = ((B,) if self.node(x).batched else ()) + tuple(target)
            return self.add("reshape", (x,), out, shape_to=tuple(target))
        # sum / mean
        arity(1)
        x = self.expr(args[0])
        self.floats(x)
        shape = self.node(x).shape
        axes = sorted({self.axis(x, a) for a in self.int_list(kw["axis"], "axis")}) if "axis" in kw else \
            list(range(1 if self.node(x).batched else 0, len(shape)))
        if self.node(x).batched and 0 in axes:
            raise self.error(f"{fn}: cannot reduce over the batch axis (0)")
        keep = bool(self.number(kw["keepdims"], allow_bool=True)) if "keepdims" in kw else False
        out = tuple((1 if i in axes else d) for i, d in enumerate(shape) if keep or i not in axes)
        return self.add(fn, (x,), out, axes=tuple(axes), keepdims=keep)

    def number(self, e: ast.AST, allow_bool: bool = False) -> float:
        if isinstance(e, ast.Constant) and (isinstance(e.value, (int, float)) and (allow_bool or not isinstance(e.value, bool))):
            return float(e.value)
        if isinstance(e, ast.UnaryOp) and isinstance(e.op, ast.USub):
            return -self.number(e.operand)
        return float(self.int_expr(e, "number"))

    def axis(self, x: int, axis: int) -> int:
        rank = len(self.node(x).shape)
        if not -rank <= axis < rank:
            raise self.error(f"axis {axis} out of range for shape {show(self.node(x).shape)}")
        axis %= rank
        if self.node(x).batched and axis == 0:
            raise self.error("axis 0 is the batch axis: use a later axis (axis=-1 for the last)")
        return axis

    def join(self, fn: str, xs: list[int], axis: int) -> int:
        shapes = [self.node(v).shape for v in xs]
        if len({self.node(v).batched for v in xs}) > 1:
            raise self.error(f"{fn}: mixing batched values with parameters: " + ", ".join(map(show, shapes)))
        rank = len(shapes[0]) + (1 if fn == "stack" else 0)
        if not -rank <= axis < rank:
            raise self.error(f"{fn}: axis {axis} out of range for shapes " + ", ".join(map(show, shapes)))
        axis %= rank
        if self.node(xs[0]).batched and axis == 0:
            raise self.error(f"{fn}: axis 0 is the batch axis: use a later axis (axis=-1 for the last)")
        if fn == "stack":
            if len(set(shapes)) != 1:
                raise self.error("stack: expected equal shapes, got " + ", ".join(map(show, shapes)))
            out = (*shapes[0][:axis], len(xs), *shapes[0][axis:])
        else:
            if any(len(s) != len(shapes[0]) or s[:axis] + s[axis + 1:] != shapes[0][:axis] + shapes[0][axis + 1:]
                   for s in shapes):
                raise self.error(f"concat: shapes must match except on axis {axis}: " + ", ".join(map(show, shapes)))
            out = (*shapes[0][:axis], sum(s[axis] for s in shapes), *shapes[0][axis + 1:])
        return self.add(fn, tuple(xs), out, axis=axis)

    def einsum(self, args: list[ast.AST]) -> int:
        if len(args) < 2 or not isinstance(args[0], ast.Constant) or not isinstance(args[0].value, str):
            raise self.error('einsum() takes an equation string and tensors: einsum("bij,ijk->bk", x, w)')
        eq = args[0].value.replace(" ", "")
        if eq.count("->") != 1 or "." in eq or not eq.isascii():
            raise self.error(f"einsum: expected an explicit equation of ASCII letters such as 'bij,ijk->bk', "
                             f"got {eq!r}")
        lhs, rhs = eq.split("->")
        subs = lhs.split(",")
        xs = [self.expr(a) for a in args[1:]]
        self.floats(*xs)
        if len(subs) != len(xs):
            raise self.error(f"einsum: {len(subs)} operand(s) in {eq!r}, got {len(xs)} tensor(s)")
        sizes: dict[str, int] = {}
        for s, x in zip(subs, xs):
            shape = self.node(x).shape
            if not s.isalpha() or len(s) != len(shape) or len(set(s)) != len(s):
                raise self.error(f"einsum: operand `{s}` does not fit shape {show(shape)}")
            for ch, d in zip(s, shape):
                if sizes.setdefault(ch, d) != d:
                    raise self.error(f"einsum: index `{ch}` is {show((sizes[ch],))[1:-1]} in one operand and "
                                     f"{show((d,))[1:-1]} in another")
        if not rhs.isalpha() and rhs != "" or any(ch not in sizes for ch in rhs) or len(set(rhs)) != len(rhs):
            raise self.error(f"einsum: output `{rhs}` must use each input index at most once")
        out = tuple(sizes[ch] for ch in rhs)
        batch = sorted(ch for ch, d in sizes.items() if d == B)
        if len(batch) > 1:   # two batch indices would pair each example with the others
            raise self.error(f"einsum: the batch axis takes one index letter in every operand, got "
                             f"{' and '.join(map(repr, batch))}")
        if any(self.node(x).batched for x in xs) and B not in out[:1]:
            raise self.error("einsum: the batch index must come first in the output")
        return self.add("einsum", tuple(xs), out, equation=eq)

    def split_parts(self, sid: int) -> list[int]:
        n = self.node(sid)
        parts = []
        for k, size in enumerate(n.attr("sizes")):
            shape = list(n.shape)
            shape[n.attr("axis")] = size
            parts.append(self.add("pick", (sid,), tuple(shape), index=k))
        return parts

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
            self.env[target.id] = value
            self.assigned_at[target.id] = (st.lineno, st.col_offset)
            return
        if isinstance(target, ast.Tuple) and all(isinstance(t, ast.Name) for t in target.elts):
            if self.node(value).dtype != "tuple":
                raise self.error("only split() results can be unpacked into several names")
            parts = self.split_parts(value)
            if len(parts) != len(target.elts):
                raise self.error(f"split() gives {len(parts)} parts, unpacked into {len(target.elts)} names")
            for t, p in zip(target.elts, parts):
                self.env[t.id] = p  # type: ignore[attr-defined]
                self.assigned_at[t.id] = (st.lineno, st.col_offset)  # type: ignore[attr-defined]
            return
        raise self.error(f"not allowed as an assignment target: `{ast.unparse(target)}`")


def parse_step(text: str, *, ints: dict[str, int], inputs: dict[str, tuple[int, ...]],
               states: dict[str, tuple[int, ...]], params: dict[str, tuple[int, ...]],
               outputs: list[str]) -> Program:
    """Parse and shape-check a step. Raises StepError(message, line, col) on any problem."""
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
    return Program(tuple(b.nodes), tuple(b.input_ids), tuple(b.state_ids), tuple(b.param_ids), tuple(next_states),
                   tuple(outs))


class ProgramWriter:
    """Rebuilds a program node by node, for the passes that rewrite a step: `add` appends a new
    node, `keep` copies an old one onto the new ids, `program` ends it."""

    def __init__(self, prog: Program):
        self.prog = prog
        self.nodes: list[Node] = []
        self.new_id: dict[int, int] = {}     # old node id -> new node id

    def add(self, op: str, args: tuple[int, ...], shape: tuple[int, ...], **attrs: Any) -> int:
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
        remap = lambda pairs: tuple((k, m[i]) for k, i in pairs)  # noqa: E731
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
