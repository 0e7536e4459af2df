"""ONNX emission of custom-cell step nodes (rnnc/cells/lang.py).

`lead` is the number of extra leading axes on batched values: 0 inside the time loop
([B, ...]), 1 for nodes hoisted out of it and computed for every step at once ([T, B, ...]).
Axes, index lists, permutations and einsum subscripts written by the user (batch first)
are shifted by `lead` for batched values; parameters and constants have no leading axes.

Each op of the step language's table (rnnc/cells/ops.py) has its emitter here, registered
with `@emitter(op, ...)`; `check_emitters()` runs at import and fails on an op without an
emitter or an emitter without an op."""
from __future__ import annotations

from typing import Any, Callable, Iterable

import numpy as np
from onnx import TensorProto, helper

from ..cells.lang import Node
from ..cells.ops import OPS
from ..emit.builder import GraphBuilder
from . import activations
from .context import INT64_MIN

# (builder, node, argument tensors, lead) -> the node's tensor (a list of them for `split`)
Emitter = Callable[[GraphBuilder, Node, list[Any], int], Any]
EMITTERS: dict[str, Emitter] = {}


def emitter(*ops: str) -> Callable[[Emitter], Emitter]:
    """Register the decorated function as the ONNX form of step ops `ops` (table ops,
    rnnc/cells/ops.py)."""
    def register(fn: Emitter) -> Emitter:
        for op in ops:
            if op in EMITTERS:
                raise RuntimeError(f"two ONNX emitters for step op {op!r}: {EMITTERS[op].__name__}, {fn.__name__}")
            EMITTERS[op] = fn
        return fn
    return register


def check_emitters(ops: Iterable[str] | None = None, emitters: Iterable[str] | None = None) -> None:
    """Every op of the table has an emitter and every emitter is for a table op (run at
    import; a failure is a developer error: add the missing half)."""
    table, made = set(OPS if ops is None else ops), set(EMITTERS if emitters is None else emitters)
    missing, unknown = sorted(table - made), sorted(made - table)
    if missing or unknown:
        raise RuntimeError("step ops and their ONNX emitters disagree (rnnc/cells/ops.py, rnnc/lower/cellops.py):"
                           + (f" no emitter for {', '.join(missing)};" if missing else "")
                           + (f" emitters for ops not in the table: {', '.join(unknown)}" if unknown else ""))


def emit(b: GraphBuilder, node: Node, args: list[Any], lead: int) -> Any:
    """The ONNX nodes for one step node; returns its tensor name (a list for `split`)."""
    fn = EMITTERS.get(node.op)
    if fn is None:   # pragma: no cover - check_emitters covers every table op
        raise ValueError(f"unknown step op {node.op!r}")
    return fn(b, node, args, lead)


def _shift(node: Node, lead: int) -> int:
    """The leading axes before a value's own: user axes of batched values move by them."""
    return lead if node.batched else 0


_BINARY = {"add": "Add", "sub": "Sub", "mul": "Mul", "div": "Div", "pow": "Pow", "matmul": "MatMul",
           "minimum": "Min", "maximum": "Max", "less": "Less", "less_equal": "LessOrEqual", "greater": "Greater",
           "greater_equal": "GreaterOrEqual", "equal": "Equal"}
_UNARY = {"neg": "Neg", "exp": "Exp", "log": "Log", "sqrt": "Sqrt", "abs": "Abs"}


@emitter("const")
def _const(b: GraphBuilder, node: Node, args: list[Any], lead: int) -> Any:
    return b.const(np.float32(node.attr("value")), dtype="float32")


@emitter(*_BINARY)
def _binary(b: GraphBuilder, node: Node, args: list[Any], lead: int) -> Any:
    return b.op(_BINARY[node.op], args)


@emitter("gemm")
def _gemm(b: GraphBuilder, node: Node, args: list[Any], lead: int) -> Any:
    # a @ W + c, a [B, k] per step (passes/reassociate.py)
    return affine(b, *args, lead=lead if node.batched else 0,
                  folds=len(node.shape) == 2 and tuple(node.attr("c_shape", ())) == node.shape[1:])


@emitter("not_equal")
def _not_equal(b: GraphBuilder, node: Node, args: list[Any], lead: int) -> Any:
    return b.op("Not", [b.op("Equal", args)])


@emitter(*_UNARY)
def _unary(b: GraphBuilder, node: Node, args: list[Any], lead: int) -> Any:
    return b.op(_UNARY[node.op], args)


@emitter("act")
def _act(b: GraphBuilder, node: Node, args: list[Any], lead: int) -> Any:
    y = activations.emit(b, node.attr("name"), args[0])
    return b.op("Identity", [y]) if y == args[0] else y


@emitter("clip")
def _clip(b: GraphBuilder, node: Node, args: list[Any], lead: int) -> Any:
    lo, hi = (b.const(np.float32(node.attr(k)), dtype="float32") for k in ("lo", "hi"))
    return b.op("Clip", [args[0], lo, hi])


@emitter("where")
def _where(b: GraphBuilder, node: Node, args: list[Any], lead: int) -> Any:
    return b.op("Where", args)


@emitter("getitem")
def _getitem_node(b: GraphBuilder, node: Node, args: list[Any], lead: int) -> Any:
    return _getitem(b, node, args[0], _shift(node, lead))


@emitter("concat")
def _concat(b: GraphBuilder, node: Node, args: list[Any], lead: int) -> Any:
    return b.op("Concat", args, axis=node.attr("axis") + _shift(node, lead))


@emitter("stack")
def _stack(b: GraphBuilder, node: Node, args: list[Any], lead: int) -> Any:
    ax = node.attr("axis") + _shift(node, lead)
    return b.op("Concat", [b.op("Unsqueeze", [a, b.const([ax])]) for a in args], axis=ax, name="Stack")


@emitter("split")
def _split(b: GraphBuilder, node: Node, args: list[Any], lead: int) -> Any:
    sizes = list(node.attr("sizes"))
    outs = b.op("Split", [args[0], b.const(sizes)], outputs=len(sizes), axis=node.attr("axis") + _shift(node, lead))
    return [outs] if isinstance(outs, str) else outs


@emitter("pick")
def _pick(b: GraphBuilder, node: Node, args: list[Any], lead: int) -> Any:
    return args[0][node.attr("index")]


@emitter("einsum")
def _einsum(b: GraphBuilder, node: Node, args: list[Any], lead: int) -> Any:
    return b.op("Einsum", args, equation=_einsum_lead(node, lead))


@emitter("transpose")
def _transpose(b: GraphBuilder, node: Node, args: list[Any], lead: int) -> Any:
    shift = _shift(node, lead)
    perm = list(range(shift)) + [p + shift for p in node.attr("perm")]
    return b.op("Transpose", args, perm=perm)


@emitter("reshape")
def _reshape(b: GraphBuilder, node: Node, args: list[Any], lead: int) -> Any:
    target = list(node.attr("shape_to"))
    if node.batched:   # keep the leading axes (0 = copy) and the batch axis (-1 = infer)
        target = [0] * _shift(node, lead) + [-1] + target
    return b.op("Reshape", [args[0], b.const(target)])


@emitter("sum", "mean")
def _reduce(b: GraphBuilder, node: Node, args: list[Any], lead: int) -> Any:
    axes = [a + _shift(node, lead) for a in node.attr("axes")]
    return b.op("ReduceSum" if node.op == "sum" else "ReduceMean", [args[0], b.const(axes)],
                keepdims=int(node.attr("keepdims")))


def affine(b: GraphBuilder, x: str, w: str, c: str | None, *, lead: int, folds: bool = True) -> str:
    """x @ w + c, x [..., B, k], w [k, n], c broadcastable to [B, n] (or None).
    In the step (no leading axes): one Gemm. For all steps at once (x [T, B, k]), with c a
    vector [n], c folds into the product: [x, 1] @ [w; c], one MatMul, since a separate Add
    would be one more pass over the [T, B, n] result (ONNX Runtime folds [w; c] once, at load)."""
    if not lead:
        return b.op("Gemm", [x, w, c]) if c else b.op("MatMul", [x, w])
    if not c:
        return b.op("MatMul", [x, w])
    if not folds:
        return b.op("Add", [b.op("MatMul", [x, w]), c])
    x1 = b.memo.get(("x_1", x))
    if x1 is None:   # one [x, 1] however many products read x
        ones_shape = b.op("Concat", [b.op("Shape", [x], end=-1), b.const([1])], axis=0)
        ones = b.op("ConstantOfShape", [ones_shape], value=_ONE, name="ones")              # [T, B, 1]
        x1 = b.memo[("x_1", x)] = b.op("Concat", [x, ones], axis=-1, name="x_1")           # [T, B, k + 1]
    wc = b.op("Concat", [w, b.op("Unsqueeze", [c, b.const([0])])], axis=0, name="w_c")     # [k + 1, n]
    return b.op("MatMul", [x1, wc], name="affine")


_ONE = helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0])


def _getitem(b: GraphBuilder, node: Node, x: str, shift: int) -> str:
    starts, ends, axes, steps, squeeze = [], [], [], [], []
    for axis, s in enumerate(node.attr("index"), start=shift):
        if s[0] == "slice":
            start, stop, step = s[1], s[2], s[3]
            if step < 0 and stop < 0:   # Python's "before the first element"
                stop = INT64_MIN
            starts.append(start)
            ends.append(stop)
            axes.append(axis)
            steps.append(step)
        elif s[0] == "index":
            starts.append(s[1])
            ends.append(s[1] + 1)
            axes.append(axis)
            steps.append(1)
            squeeze.append(axis)
    y = x
    if axes:
        c = b.const
        y = b.op("Slice", [x, c(starts), c(ends), c(axes), c(steps)])
    if squeeze:
        y = b.op("Squeeze", [y, b.const(squeeze)])
    return y if y != x else b.op("Identity", [x])


def _einsum_lead(node: Node, lead: int) -> str:
    eq = node.attr("equation")
    if not lead or not node.batched:
        return eq
    lhs, rhs = eq.split("->")
    free = next(ch for ch in "zyxwvutsrqponmlkjihgfedcbaZYXWVUTSRQPONMLKJIHGFEDCBA" if ch not in eq)
    # batched operands (those whose first index is the output's batch index) get the new axis
    bidx = rhs[0]
    subs = [(free + s if s[:1] == bidx else s) for s in lhs.split(",")]
    return ",".join(subs) + "->" + free + rhs


check_emitters()
