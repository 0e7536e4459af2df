"""The op table of the step language (rnnc/cells/lang.py): one entry per node op a Program
can hold, with everything about the op that is not ONNX: how a call writes it (function
names, positional arguments, keywords with their defaults), how its attributes are resolved
and checked, its result's shape and dtype, and its NumPy meaning (the reference interpreter's
backend). Each op's ONNX form is registered beside it in rnnc/lower/cellops.py (`@emitter`),
which checks at import that the two agree: adding an op is one entry here and one emitter there.

Rules raise StepError with the message only; the parser places it at the expression being
built. Nothing here imports onnx."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Literal, Mapping, Sequence

import numpy as np

from .activations import NAMES as ACTIVATIONS
from .activations import apply as apply_activation

if TYPE_CHECKING:
    from .lang import Node

B = -1  # the batch axis in a full shape

Shape = tuple[int, ...]
Attrs = dict[str, Any]
Dtype = Literal["float", "bool", "tuple"]     # "tuple": split's result (pick its parts)
ArgKind = Literal["tensor", "tensors", "equation", "number", "ints", "count_or_sizes"]
KeywordKind = Literal["int", "axis", "axes", "flag"]

ResolveFn = Callable[[Sequence["Node"], Attrs], Attrs]
ShapeFn = Callable[[Sequence["Node"], Mapping[str, Any]], Shape]
NumpyFn = Callable[["Node", Sequence[Any]], Any]

# Values fed to a step (never computed): they have no table entry, NumPy function or emitter.
SOURCES = frozenset({"input", "state", "param"})


class StepError(Exception):
    """A problem in the step text at (line, col) of the text (1-based line, 0-based col)."""

    def __init__(self, message: str, line: int = 1, col: int = 0):
        super().__init__(message)
        self.message, self.line, self.col = message, line, col


def show(shape: Sequence[int]) -> str:
    return "(" + ", ".join("batch" if d == B else str(d) for d in shape) + ")"


def broadcast(a: Shape, b: Shape) -> Shape | None:
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


# ---- the table's types -----------------------------------------------------------------

@dataclass(frozen=True)
class Arg:
    """A positional argument of a call (or an operand of an operator).

    kind: "tensor" (an expression; `dtype` says what it must hold: "float", "bool", "any"),
    "tensors" (a list of float tensors: concat([a, b])), "equation" (an einsum string literal),
    "number" (a float literal or integer expression), "ints" (an integer expression or a list
    of them), "count_or_sizes" (split's: a list gives the sizes, an expression the count).
    Non-tensor arguments become the node attribute `name`; `what` names them in errors
    (for count_or_sizes: "<what> sizes" / "<what> count")."""

    name: str
    kind: ArgKind = "tensor"
    dtype: Literal["float", "bool", "any"] = "float"
    what: str = ""
    dtype_error: str | None = None      # the message when a tensor's dtype is wrong (else the generic one)

    @property
    def tensor(self) -> bool:
        return self.kind in ("tensor", "tensors")


@dataclass(frozen=True)
class Keyword:
    """A keyword argument: kind "int" (an integer expression), "axis" (one, checked against
    the first tensor: in range, not the batch axis), "axes" (one or a list, each an axis),
    "flag" (True/False or a number). `default` stands in when the call leaves it out."""

    name: str
    kind: KeywordKind
    default: Any = None


@dataclass(frozen=True)
class OpDef:
    """One op of the step language.

    A call `fn(args..., kw=...)` with fn in `functions` converts its arguments in a fixed
    order (equation literals, then tensors, then the tensors' dtype checks, then keywords,
    then the other positional arguments), then `resolve` turns the converted arguments into
    the node's attributes (checking them against the operands), then `shape` gives the
    result's shape from the operands and the final attributes. `shape` alone also checks a
    node made elsewhere (the passes)."""

    name: str                                   # the node op
    shape: ShapeFn
    numpy: NumpyFn                              # (node, argument values) -> value (float64 NumPy)
    resolve: ResolveFn | None = None            # converted call arguments -> node attributes
    args: tuple[Arg, ...] = ()                  # positional arguments (operands of an operator)
    variadic: bool = False                      # the last argument repeats (einsum's tensors)
    keywords: tuple[Keyword, ...] = ()
    functions: tuple[str, ...] = ()             # the step-language calls that make this op
    name_attr: bool = False                     # the function called is the attribute `name`
    dtype: Literal["float", "bool", "tuple", "same"] = "float"   # "same": the first operand's
    usage: str | None = None                    # the message for a call with wrong arguments
    made_by: str = "call"                       # "call" | "operator" | "syntax" | "pass" (documentation)

    @property
    def arity(self) -> tuple[int, int | None]:
        """(min, max) positional arguments; max None: any number more."""
        n = len(self.args)
        return (n, None) if self.variadic else (n, n)

    def positional(self, n: int) -> tuple[Arg, ...]:
        """The Arg of each of n positional arguments (a variadic last one repeated)."""
        if self.variadic and n > len(self.args):
            return self.args + (self.args[-1],) * (n - len(self.args))
        return self.args[:n]

    def result_dtype(self, ins: Sequence[Node]) -> Dtype:
        if self.dtype == "same":
            return ins[0].dtype
        return self.dtype


def result_shape(node: Node, ins: Sequence[Node]) -> Shape:
    """The shape the table gives `node` on operands `ins` (raises StepError where they do
    not fit): a check for nodes built outside the parser."""
    return OPS[node.op].shape(ins, dict(node.attrs))


# ---- shared checks -------------------------------------------------------------------------

def normalize_axis(x: Node, axis: int) -> int:
    """A user axis of x (batch first, negative from the end) as a non-negative one."""
    rank = len(x.shape)
    if not -rank <= axis < rank:
        raise StepError(f"axis {axis} out of range for shape {show(x.shape)}")
    axis %= rank
    if x.batched and axis == 0:
        raise StepError("axis 0 is the batch axis: use a later axis (axis=-1 for the last)")
    return axis


def einsum_equation(text: str) -> str:
    """An einsum equation as written (spaces dropped), checked for its form."""
    eq = text.replace(" ", "")
    if eq.count("->") != 1 or "." in eq or not eq.isascii():
        raise StepError(f"einsum: expected an explicit equation of ASCII letters such as 'bij,ijk->bk', "
                        f"got {eq!r}")
    return eq


def matmul_shape(sa: Shape, sb: Shape) -> Shape:
    if not sa or not sb:
        raise StepError("matmul needs tensors of rank 1 or more, got a scalar")
    ea, eb = (sa if len(sa) > 1 else (1, *sa)), (sb if len(sb) > 1 else (*sb, 1))
    if ea[-1] != eb[-2] or B in (ea[-1], eb[-2]):
        raise StepError(f"matmul: inner dims differ: {show(sa)} @ {show(sb)} (expected {sa[-1]} == "
                        f"{sb[0] if len(sb) == 1 else sb[-2]})")
    batch = broadcast(ea[:-2], eb[:-2])
    if batch is None:
        raise StepError(f"matmul: leading dims of {show(sa)} and {show(sb)} do not broadcast")
    return (*batch, *([ea[-2]] if len(sa) > 1 else []), *([eb[-1]] if len(sb) > 1 else []))


# ---- shape rules and resolvers ------------------------------------------------------------

def _same(ins: Sequence[Node], at: Mapping[str, Any]) -> Shape:
    return ins[0].shape


def _scalar(ins: Sequence[Node], at: Mapping[str, Any]) -> Shape:
    return ()


def _broadcasting(op: str) -> ShapeFn:
    def rule(ins: Sequence[Node], at: Mapping[str, Any]) -> Shape:
        sa, sb = ins[0].shape, ins[1].shape
        out = broadcast(sa, sb)
        if out is None:
            raise StepError(f"shapes {show(sa)} and {show(sb)} do not broadcast for `{op}`")
        return out
    return rule


def _matmul(ins: Sequence[Node], at: Mapping[str, Any]) -> Shape:
    return matmul_shape(ins[0].shape, ins[1].shape)


def _gemm(ins: Sequence[Node], at: Mapping[str, Any]) -> Shape:
    out = matmul_shape(ins[0].shape, ins[1].shape)
    if broadcast(ins[2].shape, out) != out:
        raise StepError(f"gemm: the addend {show(ins[2].shape)} does not broadcast to the product {show(out)}")
    return out


def _activation(ins: Sequence[Node], at: Mapping[str, Any]) -> Shape:
    if at["name"] == "softmax" and not ins[0].shape:
        raise StepError("softmax() normalizes over the last axis: expected a tensor of rank 1 or more, "
                        "got a scalar")
    return ins[0].shape


def _clip_bounds(ins: Sequence[Node], at: Attrs) -> Attrs:
    if at["lo"] > at["hi"]:
        raise StepError(f"clip: lower bound {at['lo']} is above upper bound {at['hi']}")
    return at


def _where(ins: Sequence[Node], at: Mapping[str, Any]) -> Shape:
    c, a, b = ins
    out = broadcast(c.shape, a.shape)
    out = broadcast(out, b.shape) if out is not None else None
    if out is None:
        raise StepError("where(): shapes do not broadcast: " + ", ".join(show(v.shape) for v in ins))
    return out


def _join_axis(fn: str) -> ResolveFn:
    def resolve(ins: Sequence[Node], at: Attrs) -> Attrs:
        shapes = [v.shape for v in ins]
        if len({v.batched for v in ins}) > 1:
            raise StepError(f"{fn}: mixing batched values with parameters: " + ", ".join(map(show, shapes)))
        rank = len(shapes[0]) + (1 if fn == "stack" else 0)
        axis = at["axis"]
        if not -rank <= axis < rank:
            raise StepError(f"{fn}: axis {axis} out of range for shapes " + ", ".join(map(show, shapes)))
        axis %= rank
        if ins[0].batched and axis == 0:
            raise StepError(f"{fn}: axis 0 is the batch axis: use a later axis (axis=-1 for the last)")
        return {**at, "axis": axis}
    return resolve


def _concat(ins: Sequence[Node], at: Mapping[str, Any]) -> Shape:
    shapes, axis = [v.shape for v in ins], at["axis"]
    if any(len(s) != len(shapes[0]) or s[:axis] + s[axis + 1:] != shapes[0][:axis] + shapes[0][axis + 1:]
           for s in shapes):
        raise StepError(f"concat: shapes must match except on axis {axis}: " + ", ".join(map(show, shapes)))
    return (*shapes[0][:axis], sum(s[axis] for s in shapes), *shapes[0][axis + 1:])


def _stack(ins: Sequence[Node], at: Mapping[str, Any]) -> Shape:
    shapes, axis = [v.shape for v in ins], at["axis"]
    if len(set(shapes)) != 1:
        raise StepError("stack: expected equal shapes, got " + ", ".join(map(show, shapes)))
    return (*shapes[0][:axis], len(ins), *shapes[0][axis:])


def _split_sizes(ins: Sequence[Node], at: Attrs) -> Attrs:
    axis, sizes = at["axis"], at["sizes"]
    size = ins[0].shape[axis]
    if isinstance(sizes, list):         # split(z, [a, b]): the sizes
        if sum(sizes) != size or min(sizes) <= 0:
            raise StepError(f"split sizes {sizes} must be positive and add up to {size}")
    else:                               # split(z, n): n equal parts
        n = sizes
        if n <= 0 or size % n:
            raise StepError(f"split: an axis of size {size} does not split into {n} equal parts")
        sizes = [size // n] * n
    return {"axis": axis, "sizes": tuple(sizes)}


def _pick(ins: Sequence[Node], at: Mapping[str, Any]) -> Shape:
    src = ins[0]
    shape = list(src.shape)
    shape[src.attr("axis")] = src.attr("sizes")[at["index"]]
    return tuple(shape)


def _getitem(ins: Sequence[Node], at: Mapping[str, Any]) -> Shape:
    """index: one entry per axis: ("all",), ("slice", start, stop, step) as slice.indices
    gives them, or ("index", k) (the axis goes)."""
    out: list[int] = []
    for s, d in zip(at["index"], ins[0].shape):
        if s[0] == "all":
            out.append(d)
        elif s[0] == "slice":
            out.append(len(range(s[1], s[2], s[3])))
    return tuple(out)


def _einsum(ins: Sequence[Node], at: Mapping[str, Any]) -> Shape:
    eq = at["equation"]
    lhs, rhs = eq.split("->")
    subs = lhs.split(",")
    if len(subs) != len(ins):
        raise StepError(f"einsum: {len(subs)} operand(s) in {eq!r}, got {len(ins)} tensor(s)")
    sizes: dict[str, int] = {}
    for s, x in zip(subs, ins):
        shape = x.shape
        if not s.isalpha() or len(s) != len(shape) or len(set(s)) != len(s):
            raise StepError(f"einsum: operand `{s}` does not fit shape {show(shape)}")
        for ch, d in zip(s, shape):
            if sizes.setdefault(ch, d) != d:
                raise StepError(f"einsum: index `{ch}` is {show((sizes[ch],))[1:-1]} in one operand and "
                                f"{show((d,))[1:-1]} in another")
    if not rhs.isalpha() and rhs != "" or any(ch not in sizes for ch in rhs) or len(set(rhs)) != len(rhs):
        raise StepError(f"einsum: output `{rhs}` must use each input index at most once")
    out = tuple(sizes[ch] for ch in rhs)
    batch = sorted(ch for ch, d in sizes.items() if d == B)
    if len(batch) > 1:   # two batch indices would pair each example with the others
        raise StepError(f"einsum: the batch axis takes one index letter in every operand, got "
                        f"{' and '.join(map(repr, batch))}")
    if any(x.batched for x in ins) and B not in out[:1]:
        raise StepError("einsum: the batch index must come first in the output")
    return out


def _transpose_perm(ins: Sequence[Node], at: Attrs) -> Attrs:
    x, perm = ins[0], at["perm"]
    shape = x.shape
    if sorted(p % max(len(shape), 1) for p in perm) != list(range(len(shape))):
        raise StepError(f"transpose: expected a permutation of 0..{len(shape) - 1}, got {perm}")
    perm = [p % len(shape) for p in perm]
    if x.batched and perm[0] != 0:
        raise StepError("transpose: the batch axis must stay first (perm[0] == 0)")
    return {"perm": tuple(perm)}


def _transpose(ins: Sequence[Node], at: Mapping[str, Any]) -> Shape:
    return tuple(ins[0].shape[p] for p in at["perm"])


def _reshape_target(ins: Sequence[Node], at: Attrs) -> Attrs:
    x, target = ins[0], at["shape_to"]
    shape = x.shape
    body = shape[1:] if x.batched else shape
    if x.batched:
        if not target or target[0] != -1:
            raise StepError("reshape of a batched value: the new shape starts with -1 for the batch axis, "
                            "e.g. reshape(x, [-1, 4, 8])")
        target = target[1:]
    n = 1
    for d in body:
        n *= d
    m = 1
    for d in target:
        m *= d
    if any(d <= 0 for d in target) or m != n:
        raise StepError(f"reshape: cannot reshape {show(shape)} into {target} ({n} values per example)")
    return {"shape_to": tuple(target)}


def _reshape(ins: Sequence[Node], at: Mapping[str, Any]) -> Shape:
    return ((B,) if ins[0].batched else ()) + tuple(at["shape_to"])


def _reduce_axes(fn: str) -> ResolveFn:
    def resolve(ins: Sequence[Node], at: Attrs) -> Attrs:
        x = ins[0]
        axes = at["axis"]          # normalized axes, or None: every axis but the batch axis
        if axes is None:
            axes = list(range(1 if x.batched else 0, len(x.shape)))
        if x.batched and 0 in axes:
            raise StepError(f"{fn}: cannot reduce over the batch axis (0)")
        return {"axes": tuple(axes), "keepdims": at["keepdims"]}
    return resolve


def _reduce(ins: Sequence[Node], at: Mapping[str, Any]) -> Shape:
    axes, keep = at["axes"], at["keepdims"]
    return tuple((1 if i in axes else d) for i, d in enumerate(ins[0].shape) if keep or i not in axes)


# ---- NumPy meanings ------------------------------------------------------------------------

def _np_binary(f: Callable[[Any, Any], Any]) -> NumpyFn:
    return lambda node, a: f(a[0], a[1])


def _np_unary(f: Callable[[Any], Any]) -> NumpyFn:
    return lambda node, a: f(a[0])


def _np_getitem(node: Node, a: Sequence[Any]) -> Any:
    idx = tuple(slice(None) if s[0] == "all" else slice(s[1], None if s[2] < 0 else s[2], s[3])
                if s[0] == "slice" else s[1] for s in node.attr("index"))
    return a[0][idx]


def _np_reshape(node: Node, a: Sequence[Any]) -> Any:
    return np.reshape(a[0], ((a[0].shape[0],) if node.batched else ()) + tuple(node.attr("shape_to")))


def _np_reduce(f: Callable[..., Any]) -> NumpyFn:
    return lambda node, a: f(a[0], axis=tuple(node.attr("axes")), keepdims=node.attr("keepdims"))


# ---- the table -------------------------------------------------------------------------------

_X = Arg("x")
_TWO = (Arg("a"), Arg("b"))

_BINARY = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide, "pow": np.power}
_COMPARE = {"less": np.less, "less_equal": np.less_equal, "greater": np.greater, "greater_equal": np.greater_equal,
            "equal": np.equal, "not_equal": np.not_equal}
_UNARY = {"exp": np.exp, "log": np.log, "sqrt": np.sqrt, "abs": np.abs}

_DEFS: list[OpDef] = [
    OpDef("const", _scalar, lambda node, a: np.float64(node.attr("value")), made_by="syntax"),
    OpDef("neg", _same, lambda node, a: -a[0], args=(Arg("x", dtype="any"),), made_by="operator"),
    *(OpDef(op, _broadcasting(op), _np_binary(f), args=_TWO, made_by="operator") for op, f in _BINARY.items()),
    *(OpDef(op, _broadcasting(op), _np_binary(f), args=_TWO, dtype="bool", made_by="operator")
      for op, f in _COMPARE.items()),
    *(OpDef(op, _broadcasting(op), _np_binary(f), args=_TWO, functions=(op,))
      for op, f in {"minimum": np.minimum, "maximum": np.maximum}.items()),
    OpDef("matmul", _matmul, _np_binary(np.matmul), args=_TWO, functions=("matmul",)),
    OpDef("gemm", _gemm, lambda node, a: np.matmul(a[0], a[1]) + a[2],     # a @ w + c (passes/reassociate.py)
          args=(Arg("a"), Arg("w"), Arg("c")), made_by="pass"),
    *(OpDef(op, _same, _np_unary(f), args=(_X,), functions=(op,), name_attr=True) for op, f in _UNARY.items()),
    OpDef("act", _activation, lambda node, a: apply_activation(node.attr("name"), np.asarray(a[0])),
          args=(_X,), functions=ACTIVATIONS, name_attr=True),
    OpDef("clip", _same, lambda node, a: np.clip(a[0], node.attr("lo"), node.attr("hi")), resolve=_clip_bounds,
          args=(_X, Arg("lo", "number"), Arg("hi", "number")), functions=("clip",)),
    OpDef("where", _where, lambda node, a: np.where(a[0], a[1], a[2]),
          args=(Arg("cond", dtype="bool", dtype_error="where(): the condition must be a comparison, such as `x > 0`"),
                Arg("a"), Arg("b")), functions=("where",)),
    OpDef("getitem", _getitem, _np_getitem, args=(Arg("x", dtype="any"),), dtype="same", made_by="syntax"),
    OpDef("concat", _concat, lambda node, a: np.concatenate(a, axis=node.attr("axis")), resolve=_join_axis("concat"),
          args=(Arg("xs", "tensors"),), keywords=(Keyword("axis", "int", -1),), functions=("concat",)),
    OpDef("stack", _stack, lambda node, a: np.stack(a, axis=node.attr("axis")), resolve=_join_axis("stack"),
          args=(Arg("xs", "tensors"),), keywords=(Keyword("axis", "int", 0),), functions=("stack",)),
    OpDef("split", _same, lambda node, a: np.split(a[0], np.cumsum(node.attr("sizes"))[:-1], axis=node.attr("axis")),
          resolve=_split_sizes, args=(_X, Arg("sizes", "count_or_sizes", what="split")),
          keywords=(Keyword("axis", "axis", -1),), functions=("split",), dtype="tuple"),
    OpDef("pick", _pick, lambda node, a: a[0][node.attr("index")], args=(Arg("parts", dtype="any"),),
          made_by="syntax"),     # part `index` of a split: `a, b = split(...)`, `split(...)[k]`
    OpDef("einsum", _einsum, lambda node, a: np.einsum(node.attr("equation"), *a),
          args=(Arg("equation", "equation"), Arg("xs")), variadic=True, functions=("einsum",),
          usage='einsum() takes an equation string and tensors: einsum("bij,ijk->bk", x, w)'),
    OpDef("transpose", _transpose, lambda node, a: np.transpose(a[0], node.attr("perm")), resolve=_transpose_perm,
          args=(_X, Arg("perm", "ints", what="transpose permutation")), functions=("transpose",)),
    OpDef("reshape", _reshape, _np_reshape, resolve=_reshape_target,
          args=(_X, Arg("shape_to", "ints", what="reshape shape")), functions=("reshape",)),
    *(OpDef(op, _reduce, _np_reduce(f), resolve=_reduce_axes(op), args=(_X,),
            keywords=(Keyword("axis", "axes", None), Keyword("keepdims", "flag", False)), functions=(op,))
      for op, f in {"sum": np.sum, "mean": np.mean}.items()),
]

OPS: dict[str, OpDef] = {d.name: d for d in _DEFS}
if len(OPS) != len(_DEFS):   # pragma: no cover - a developer error
    raise RuntimeError("two step ops with one name in rnnc/cells/ops.py")

# the step language's functions: call name -> op
CALLS: dict[str, str] = {fn: d.name for d in _DEFS for fn in d.functions}
FUNCTIONS: list[str] = sorted(CALLS)
