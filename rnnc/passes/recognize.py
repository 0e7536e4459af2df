"""Recognize built-in forms in custom cells: prove a step equal to an ONNX LSTM, GRU or RNN.

A pass over each custom cell's expression graph (the step the lowering would emit). It
interprets the step symbolically: every batched [B, n] value becomes a canonical polynomial
(`Poly`) over factors, each monomial an elementwise product of factors times a coefficient that
is a function of the params only (`WExpr`):

    Src        a step input or a state's previous value (x, h, c)
    Proj       m @ W, m a monomial (x @ W, h @ U, (r * h) @ U), W a WExpr
    Fn         an elementwise nonlinearity of a Poly: the ONNX activation it is (Sigmoid, Tanh,
               Relu, LeakyRelu(a), ThresholdedRelu(a), HardSigmoid(a, b), Elu(a), Softsign,
               ScaledTanh, Affine; with `clip` when its argument is clip(v, -t, t)), or a
               function ONNX's recurrent ops lack (exp, gelu, softplus, ...)

Sums merge monomials, products distribute, `@` distributes into Proj factors (a concatenation
[x, h] @ W too), column slices and splits move into the weights (`W[:, a:b]`) and into the
arguments of elementwise functions, and scalars fold. So the form does not depend on names, on
the order of terms, on how gates are split or their kernels concatenated. The pass then proves
the step equal to the ONNX op's equations by guessing the gates from the form and checking the
identity on it: LSTM `c' = f c + i g` (or `(1 - i) c + i g`: input_forget), `h' = o act_h(c')`,
with peepholes `p * c` (i, f) and `p * c'` (o); GRU `h' = z h + (1 - z) hh` with the reset gate
before (`(r h) @ U`) or after (`r (h @ U + b)`: linear_before_reset) the product; RNN
`h' = act(x W + h U + b)`. Each gate's pre-activation must be linear in x and h (plus the
peephole); one recurrent activation serves the gates (ONNX's f), `clip` must be the same on
every gate and absent on LSTM's act_h(c') (ONNX Runtime clips the gates' inputs only). The
weights ONNX's op takes (W, R, B = [Wb, Rb], P) are recovered as WExprs of the cell's params
in ONNX gate order (`Recognized.weights`), evaluated by the native lowering
(rnnc/lower/native.py). A cell the pass cannot prove gets `not_recognized`: why, in one line.
The reference interpreter (rnnc/reference.py) never uses any of this: it runs the equations."""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Union

import numpy as np

from ..cells.lang import Node, Program, reads_inputs
from ..cells.ops import OPS
from ..ir.graph import Cell, Graph
from .manager import PassResult, map_custom_cells, no_plans

# ---- weight expressions: functions of the cell's params -------------------------------------


@dataclass(frozen=True)
class WExpr:
    """A value computed from the cell's params only. op: param (attrs: name), const (value),
    zeros, eye, node (a step node over params: evaluated by the op table), add, mul, matmul,
    rowscale (a[:, None] * b), slice (columns lo:hi of the last axis), concat (axis), T (2-D
    transpose), bcast (to shape), recip."""

    op: str
    args: tuple["WExpr", ...] = ()
    attrs: tuple[Any, ...] = ()
    shape: tuple[int, ...] = ()

    def value(self, w: dict[str, np.ndarray]) -> np.ndarray:
        a = [x.value(w) for x in self.args]
        op = self.op
        if op == "param":
            return np.asarray(w[self.attrs[0]], dtype=np.float64)
        if op == "const":
            return np.float64(self.attrs[0])
        if op == "zeros":
            return np.zeros(self.shape)
        if op == "eye":
            return np.eye(self.shape[0])
        if op == "node":
            return np.asarray(OPS[self.attrs[0].op].numpy(self.attrs[0], a), dtype=np.float64)
        if op == "add":
            return a[0] + a[1]
        if op == "mul":
            return a[0] * a[1]
        if op == "matmul":
            return a[0] @ a[1]
        if op == "rowscale":
            return np.reshape(a[0], (-1, 1)) * a[1]
        if op == "slice":
            return a[0][..., self.attrs[0]:self.attrs[1]]
        if op == "concat":
            return np.concatenate(a, axis=self.attrs[0])
        if op == "T":
            return a[0].T
        if op == "bcast":
            return np.broadcast_to(a[0], self.shape).copy()
        if op == "recip":
            return 1.0 / a[0]
        raise ValueError(f"unknown weight op {op!r}")   # pragma: no cover

    def describe(self) -> str:
        op, a = self.op, [x.describe() for x in self.args]
        if op == "param":
            return self.attrs[0]
        if op == "const":
            return f"{self.attrs[0]:g}"
        if op in ("zeros", "eye"):
            return f"{op}{list(self.shape)}"
        if op == "node":
            n = self.attrs[0]
            if n.op == "getitem":
                return a[0] + "[" + ", ".join(":" if s[0] == "all" else f"{s[1]}:{s[2]}" if s[0] == "slice"
                                              else str(s[1]) for s in n.attr("index")) + "]"
            return f"{n.op}({', '.join(a)})"
        if op == "add":
            return f"({a[0]} + {a[1]})"
        if op in ("mul", "rowscale"):
            return f"{a[0]} * {a[1]}"
        if op == "matmul":
            return f"{a[0]} @ {a[1]}"
        if op == "slice":
            return f"{a[0]}[..., {self.attrs[0]}:{self.attrs[1]}]"
        if op == "concat":
            return "[" + " | ".join(a) + "]"
        if op == "T":
            return f"{a[0]}ᵀ"
        if op == "bcast":
            return a[0]
        return f"1/{a[0]}"


def const(v: float) -> WExpr:
    return WExpr("const", attrs=(float(v),))


ONE, ZERO = const(1.0), const(0.0)


def const_value(e: WExpr | None) -> float | None:
    return e.attrs[0] if e is not None and e.op == "const" else None


def _split_const(e: WExpr) -> tuple[float, WExpr | None]:
    """e as (scalar, core): const k -> (k, None); mul(const k, x) -> (k, x); x -> (1, x)."""
    if e.op == "const":
        return e.attrs[0], None
    if e.op == "mul" and e.args[0].op == "const":
        return e.args[0].attrs[0], e.args[1]
    return 1.0, e


def _bshape(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(np.broadcast_shapes(a, b))


def wmul(a: WExpr, b: WExpr) -> WExpr:
    ka, xa = _split_const(a)
    kb, xb = _split_const(b)
    k = ka * kb
    if xa is None or xb is None:
        core = xa if xb is None else xb
    else:
        x1, x2 = sorted((xa, xb), key=repr)
        core = WExpr("mul", (x1, x2), shape=_bshape(x1.shape, x2.shape))
    if core is None:
        return const(k)
    if k == 0.0:
        return WExpr("zeros", shape=core.shape)
    return core if k == 1.0 else WExpr("mul", (const(k), core), shape=core.shape)


def wadd(a: WExpr, b: WExpr) -> WExpr:
    if a.op == "zeros" and _bshape(a.shape, b.shape) == b.shape or const_value(a) == 0.0:
        return b
    if b.op == "zeros" and _bshape(a.shape, b.shape) == a.shape or const_value(b) == 0.0:
        return a
    if a.op == "const" and b.op == "const":
        return const(a.attrs[0] + b.attrs[0])
    return WExpr("add", (a, b), shape=_bshape(a.shape, b.shape))


def wcols(e: WExpr, lo: int, hi: int, width: int) -> WExpr:
    """Columns lo:hi of e (e broadcasts along a last axis of `width`)."""
    if not e.shape or e.shape[-1] == 1 and width != 1:
        return e
    if e.op == "slice":
        return wcols(e.args[0], e.attrs[0] + lo, e.attrs[0] + hi, e.args[0].shape[-1])
    if e.op == "zeros":
        return WExpr("zeros", shape=(*e.shape[:-1], hi - lo))
    if (lo, hi) == (0, e.shape[-1]):
        return e
    return WExpr("slice", (e,), (lo, hi), (*e.shape[:-1], hi - lo))


def wmatmul(a: WExpr, b: WExpr) -> WExpr:
    out = (*a.shape[:-1], b.shape[-1])
    if a.op == "zeros" or b.op == "zeros":
        return WExpr("zeros", shape=out)
    if a.op == "eye":
        return b
    return WExpr("matmul", (a, b), shape=out)


def wbcast(e: WExpr, shape: tuple[int, ...]) -> WExpr:
    return e if e.shape == shape else WExpr("bcast", (e,), shape=shape)


def wconcat(parts: list[WExpr], axis: int) -> WExpr:
    shape = list(parts[0].shape)
    shape[axis] = sum(p.shape[axis] for p in parts)
    return WExpr("concat", tuple(parts), (axis,), tuple(shape))


# ---- the symbolic step: polynomials over factors ----------------------------------------------


class NotForm(Exception):
    """The step leaves the forms the pass can reason about (the message says how)."""


@dataclass(frozen=True)
class Src:
    name: str
    kind: str           # "input" | "state"
    width: int


@dataclass(frozen=True)
class Proj:
    mono: tuple          # the monomial multiplied: a tuple of factors
    w: WExpr             # [k, n]


@dataclass(frozen=True)
class Fn:
    name: str                    # an ONNX activation name, or the function ONNX lacks (lower case)
    arg: "Poly"
    alpha: float | None = None
    beta: float | None = None
    clip: float | None = None

    @property
    def onnx(self) -> bool:
        return self.name[:1].isupper() and self.name != "Clip"


Factor = Union[Src, Proj, Fn]
Mono = tuple


def _key(f: Any) -> str:
    return repr(f)


@dataclass(frozen=True)
class Poly:
    width: int
    terms: tuple[tuple[Mono, WExpr], ...]      # sorted by monomial; coefficient () or (width,)

    @staticmethod
    def make(width: int, d: dict[Mono, WExpr]) -> "Poly":
        items = [(m, c) for m, c in d.items() if not (const_value(c) == 0.0 or c.op == "zeros")]
        return Poly(width, tuple(sorted(items, key=lambda t: _key(t[0]))))

    def as_dict(self) -> dict[Mono, WExpr]:
        return dict(self.terms)


def mono(*fs: Any) -> Mono:
    return tuple(sorted(fs, key=_key))


def p_const(width: int, c: WExpr) -> Poly:
    if len(c.shape) > 1 or c.shape and c.shape[0] not in (1, width):
        raise NotForm(f"adds a parameter of shape {list(c.shape)} to a [batch, {width}] value")
    return Poly.make(width, {(): c})


def p_add(a: Poly, b: Poly) -> Poly:
    if a.width != b.width:
        raise NotForm(f"adds values of widths {a.width} and {b.width}")
    d = a.as_dict()
    for m, c in b.terms:
        d[m] = wadd(d[m], c) if m in d else c
    return Poly.make(a.width, d)


def p_scale(a: Poly, c: WExpr) -> Poly:
    if len(c.shape) > 1 or c.shape and c.shape[0] not in (1, a.width):
        raise NotForm(f"multiplies a [batch, {a.width}] value by a parameter of shape {list(c.shape)}")
    return Poly.make(a.width, {m: wmul(k, c) for m, k in a.terms})


def p_mul(a: Poly, b: Poly) -> Poly:
    if a.width != b.width:
        raise NotForm(f"multiplies values of widths {a.width} and {b.width}")
    d: dict[Mono, WExpr] = {}
    for m1, c1 in a.terms:
        for m2, c2 in b.terms:
            m = mono(*m1, *m2)
            c = wmul(c1, c2)
            d[m] = wadd(d[m], c) if m in d else c
    return Poly.make(a.width, d)


def p_cols(a: Poly, lo: int, hi: int) -> Poly:
    def fac(f: Any) -> Any:
        if isinstance(f, Src):
            raise NotForm(f"slices `{f.name}` itself")
        if isinstance(f, Proj):
            return Proj(f.mono, wcols(f.w, lo, hi, a.width))
        return replace(f, arg=p_cols(f.arg, lo, hi))
    return Poly.make(hi - lo, {mono(*map(fac, m)): wcols(c, lo, hi, a.width) for m, c in a.terms})


def p_matmul(a: Poly, w: WExpr) -> Poly:
    if len(w.shape) != 2 or w.shape[0] != a.width:
        raise NotForm(f"multiplies a [batch, {a.width}] value by a matrix of shape {list(w.shape)}")
    n = w.shape[1]
    out = Poly(n, ())
    for m, c in a.terms:
        if m == ():
            v = wbcast(c, (a.width,)) if c.shape != (a.width,) else c
            out = p_add(out, p_const(n, wmatmul(v, w)))
            continue
        if len(m) == 1 and isinstance(m[0], Proj):
            inner, scaled = m[0].mono, _colscale(m[0].w, c)
            out = p_add(out, Poly.make(n, {(Proj(inner, wmatmul(scaled, w)),): ONE}))
            continue
        out = p_add(out, Poly.make(n, {(Proj(m, _rowscale(c, w)),): ONE}))
    return out


def _colscale(w: WExpr, c: WExpr) -> WExpr:
    return wmul(w, c)       # c: () or (n,), broadcast along w's columns


def _rowscale(c: WExpr, w: WExpr) -> WExpr:
    if not c.shape or c.shape == (1,):
        return wmul(c, w)
    return WExpr("rowscale", (c, w), shape=w.shape)


def p_concat(parts: list[Poly]) -> Poly:
    """Concatenation along the last axis: of values linear in the sources (x @ W + b, x, h):
    the weights are concatenated, a part that lacks a term gets zeros."""
    width = sum(p.width for p in parts)
    lin: dict[Mono, list[WExpr | None]] = {}
    consts: list[WExpr | None] = [None] * len(parts)
    for k, p in enumerate(parts):
        for m, c in p.terms:
            if m == ():
                consts[k] = wbcast(c, (p.width,))
            elif len(m) == 1 and isinstance(m[0], (Proj, Src)):
                f = m[0]
                inner, w = ((f,), WExpr("eye", shape=(f.width, f.width))) if isinstance(f, Src) else (f.mono, f.w)
                lin.setdefault(inner, [None] * len(parts))[k] = _colscale(w, c)
            else:
                raise NotForm("concatenates values that are not linear in the inputs and states")
    d: dict[Mono, WExpr] = {}
    for inner, ws in lin.items():
        rows = next(w for w in ws if w is not None).shape[0]
        d[(Proj(inner, wconcat([w if w is not None else WExpr("zeros", shape=(rows, p.width))
                                 for w, p in zip(ws, parts)], 1)),)] = ONE
    if any(c is not None for c in consts):
        d[()] = wconcat([c if c is not None else WExpr("zeros", shape=(p.width,)) for c, p in zip(consts, parts)], 0)
    return Poly.make(width, d)


def single_fn(p: Poly) -> tuple[Fn, float] | None:
    """p = k * F for one factor F and a scalar k."""
    if len(p.terms) == 1:
        m, c = p.terms[0]
        if len(m) == 1 and isinstance(m[0], Fn) and c.op == "const":
            return m[0], c.attrs[0]
    return None


def ratio(a: Poly, b: Poly) -> float | None:
    """The scalar k with a == k * b, if there is one."""
    if a.width != b.width or [m for m, _ in a.terms] != [m for m, _ in b.terms] or not a.terms:
        return None
    ks = set()
    for (_, ca), (_, cb) in zip(a.terms, b.terms):
        ka, xa = _split_const(ca)
        kb, xb = _split_const(cb)
        if xa != xb or kb == 0.0:
            return None
        ks.add(ka / kb)
    return ks.pop() if len(ks) == 1 else None


def is_zero(v: Any) -> bool:
    return (isinstance(v, Poly) and not v.terms) or (isinstance(v, WExpr) and (const_value(v) == 0.0 or v.op == "zeros"))


# Keras activation -> the Fn it is (None: the identity); the rest are functions ONNX's ops lack
_ACTS = {"tanh": ("Tanh", None, None), "sigmoid": ("Sigmoid", None, None), "relu": ("Relu", None, None),
         "hard_sigmoid": ("HardSigmoid", 1.0 / 6.0, 0.5), "elu": ("Elu", 1.0, None),
         "softsign": ("Softsign", None, None)}


@dataclass(frozen=True)
class _Split:
    value: Any
    sizes: tuple[int, ...]


@dataclass(frozen=True)
class _Cond:
    op: str
    a: Any
    b: Any


def _fn(name: str, v: Poly, alpha: float | None = None, beta: float | None = None) -> Poly:
    clip = None
    sf = single_fn(v)
    if sf is not None and sf[0].name == "Clip" and sf[1] == 1.0:
        clip, v = sf[0].alpha, sf[0].arg
    return Poly.make(v.width, {(Fn(name, v, alpha, beta, clip),): ONE})


def interpret(prog: Program) -> list[Any]:
    """The symbolic value of every node (a NotForm where the step leaves the forms)."""
    env: list[Any] = []
    for n in prog.nodes:
        try:
            args = [env[a] for a in n.args]
            bad = next((a for a in args if isinstance(a, NotForm)), None)
            env.append(bad if bad is not None else _node(n, args))
        except NotForm as e:
            env.append(e)
    return env


def _poly(v: Any, width: int) -> Poly:
    return v if isinstance(v, Poly) else p_const(width, v)


def _node(n: Node, a: list[Any]) -> Any:
    op = n.op
    if op in ("input", "state"):
        if len(n.shape) != 2:
            raise NotForm(f"`{n.attr('name')}` has per-step shape {list(n.shape[1:])}, not a vector")
        return Poly.make(n.shape[1], {(Src(n.attr("name"), op, n.shape[1]),): ONE})
    if op == "param":
        return WExpr("param", attrs=(n.attr("name"),), shape=n.shape)
    if op == "const":
        return const(n.attr("value"))
    polys = [x for x in a if isinstance(x, Poly)]
    if not polys and all(isinstance(x, WExpr) for x in a):
        if op in ("add", "mul", "neg", "sub"):
            if op == "neg":
                return wmul(const(-1.0), a[0])
            return wadd(a[0], a[1]) if op == "add" else wmul(a[0], a[1]) if op == "mul" else \
                wadd(a[0], wmul(const(-1.0), a[1]))
        return WExpr("node", tuple(a), (n,), n.shape)
    width = n.shape[-1] if n.shape else 1
    if op == "add":
        return p_add(_poly(a[0], width), _poly(a[1], width))
    if op == "sub":
        return p_add(_poly(a[0], width), p_scale(_poly(a[1], width), const(-1.0)))
    if op == "neg":
        return p_scale(a[0], const(-1.0))
    if op == "mul":
        if isinstance(a[0], Poly) and isinstance(a[1], Poly):
            return p_mul(a[0], a[1])
        p, c = (a[0], a[1]) if isinstance(a[0], Poly) else (a[1], a[0])
        return p_scale(p, c)
    if op == "div":
        if isinstance(a[1], Poly):
            raise NotForm("divides by a value computed in the step")
        k = const_value(a[1])
        return p_scale(a[0], const(1.0 / k) if k is not None else WExpr("recip", (a[1],), shape=a[1].shape))
    if op in ("matmul", "gemm"):
        if not isinstance(a[0], Poly) or not isinstance(a[1], WExpr) or len(n.shape) != 2:
            raise NotForm("multiplies by a matrix computed in the step")
        out = p_matmul(a[0], a[1])
        return p_add(out, _poly(a[2], out.width)) if op == "gemm" else out
    if op == "getitem":
        idx = n.attr("index")
        if isinstance(a[0], Poly) and len(idx) == 2 and idx[0] == ("all",) and (
                idx[1] == ("all",) or idx[1][0] == "slice" and idx[1][3] == 1):
            return a[0] if idx[1] == ("all",) else p_cols(a[0], idx[1][1], idx[1][2])
        raise NotForm("indexes a step value other than by a column slice")
    if op == "split":
        if n.attr("axis") != 1:
            raise NotForm("splits a step value along an axis other than the last")
        return _Split(a[0], n.attr("sizes"))
    if op == "pick":
        s = a[0]
        lo = sum(s.sizes[:n.attr("index")])
        return p_cols(s.value, lo, lo + s.sizes[n.attr("index")])
    if op == "concat":
        if n.attr("axis") != 1 or not all(isinstance(x, Poly) for x in a):
            raise NotForm("concatenates step values with parameters or along an inner axis")
        return p_concat(a)
    if op == "act":
        name = n.attr("name")
        if name == "linear":
            return a[0]
        if name in _ACTS:
            return _fn(*_ACTS[name][:1], a[0], *_ACTS[name][1:])
        return _fn(name, a[0])
    if op == "clip":
        lo, hi = n.attr("lo"), n.attr("hi")
        if lo == -hi:
            return Poly.make(a[0].width, {(Fn("Clip", a[0], hi),): ONE})
        if (lo, hi) == (0.0, 1.0):
            return _fn("HardSigmoid", a[0], 1.0, 0.0)
        return _fn("clip", a[0])
    if op in ("exp", "log", "sqrt", "abs"):
        return _fn(op, a[0])
    if op in ("greater", "less", "greater_equal", "less_equal"):
        return _Cond(op, a[0], a[1])
    if op == "maximum":
        return _maximum(a[0], a[1], width)
    if op == "where":
        return _where(a[0], a[1], a[2], width)
    raise NotForm(f"uses {op}, which the ONNX recurrent ops do not compute")


def _maximum(a: Any, b: Any, width: int) -> Poly:
    if is_zero(b) and isinstance(a, Poly):
        return _fn("Relu", a)
    if is_zero(a) and isinstance(b, Poly):
        return _fn("Relu", b)
    if isinstance(a, Poly) and isinstance(b, Poly):
        for p, q in ((a, b), (b, a)):
            k = ratio(q, p)
            if k is not None and 0.0 <= k < 1.0:
                return _fn("LeakyRelu", p, k) if k else _fn("Relu", p)
    return _fn("maximum", _poly(a, width))


def _where(cond: Any, a: Any, b: Any, width: int) -> Poly:
    if isinstance(cond, _Cond) and cond.op in ("greater", "less"):
        p, t = (cond.a, cond.b) if cond.op == "greater" else (cond.b, cond.a)
        k = const_value(t) if isinstance(t, WExpr) else None
        if isinstance(p, Poly) and k is not None and a == p:
            if is_zero(b):
                return _fn("ThresholdedRelu", p, k) if k else _fn("Relu", p)
            if k == 0.0 and isinstance(b, Poly):
                r = ratio(b, p)
                if r is not None:
                    return _fn("LeakyRelu", p, r)
                d = b.as_dict()
                e = Poly.make(width, {(Fn("exp", p),): ONE})
                alpha = const_value(d.get(()))
                if alpha is not None and len(d) == 2 and ratio(Poly.make(width, {e.terms[0][0]: d.get(e.terms[0][0],
                                                                                                  ZERO)}), e) == -alpha:
                    return _fn("Elu", p, -alpha)
    return _fn("where", _poly(a, width))


# ---- the proof: the ONNX op's equations on the form -----------------------------------------


class Refuse(Exception):
    pass


@dataclass(frozen=True)
class Gate:
    act: tuple[str, float | None, float | None]
    clip: float | None
    pre: Poly


ACT_ARITY = {"Affine": 2, "LeakyRelu": 1, "ThresholdedRelu": 1, "ScaledTanh": 2, "HardSigmoid": 2, "Elu": 1}
ONNX_DEFAULTS = {"LSTM": ("Sigmoid", "Tanh", "Tanh"), "GRU": ("Sigmoid", "Tanh"), "RNN": ("Tanh",)}


def _act(name: str, alpha: float | None, beta: float | None) -> tuple[str, float | None, float | None]:
    n = ACT_ARITY.get(name, 0)
    return (name, alpha if n >= 1 else None, beta if n >= 2 else None)


def scaled(act: tuple, k: float) -> tuple | None:
    """k * act(x) as one ONNX activation, or None."""
    name, a, b = act
    if k == 1.0:
        return act
    if name == "Tanh":
        return ("ScaledTanh", k, 1.0)
    if name == "ScaledTanh":
        return ("ScaledTanh", k * a, b)
    if name == "Affine":
        return ("Affine", k * a, k * b)
    return None


def linear(p: Poly) -> bool:
    return all(m == () or len(m) == 1 and isinstance(m[0], (Src, Proj)) for m, _ in p.terms)


def as_gate(p: Poly, what: str) -> Gate:
    if p.terms and linear(p):
        return Gate(("Affine", 1.0, 0.0), None, p)
    sf = single_fn(p)
    if sf is None:
        raise Refuse(f"the {what} is not one activation of a sum")
    f, k = sf
    if f.name == "softplus":
        raise Refuse(f"the {what} uses softplus, kept off ONNX's recurrent ops (ONNX Runtime's overflows above 88)")
    if not f.onnx:
        raise Refuse(f"the {what} uses {f.name}, which no ONNX recurrent activation computes")
    act = scaled(_act(f.name, f.alpha, f.beta), k)
    if act is None:
        raise Refuse(f"the {what} is {k:g} * {f.name}, which no ONNX activation computes")
    return Gate(act, f.clip, f.arg)


@dataclass(frozen=True)
class Linear:
    w: WExpr | None        # [in, u]
    r: WExpr | None        # [u, u]
    b: WExpr | None        # [u]
    rest: Poly             # the other terms


def linear_parts(p: Poly, x: Src, h: Src, what: str) -> Linear:
    u = p.width
    w = r = b = None
    rest: dict[Mono, WExpr] = {}
    for m, c in p.terms:
        if m == ():
            b = wbcast(c, (u,))
        elif len(m) == 1 and isinstance(m[0], Proj) and m[0].mono in ((x,), (h,)):
            term = _colscale(m[0].w, c)
            if m[0].mono == (x,):
                w = term if w is None else wadd(w, term)
            else:
                r = term if r is None else wadd(r, term)
        elif len(m) == 1 and m[0] in (x, h) and m[0].width == u:
            term = wmul(WExpr("eye", shape=(u, u)), c)
            if m[0] == x:
                w = term if w is None else wadd(w, term)
            else:
                r = term if r is None else wadd(r, term)
        else:
            rest[m] = c
    return Linear(w, r, b, Poly.make(u, rest))


def _describe_rest(p: Poly) -> str:
    m = p.terms[0][0]

    def fac(f: Any) -> str:
        if isinstance(f, Src):
            return f.name
        if isinstance(f, Proj):
            return "(" + " * ".join(map(fac, f.mono)) + ") @ W"
        return f"{f.name}(...)"
    return " * ".join(map(fac, m)) or "a constant"


@dataclass(frozen=True)
class Recognized:
    """A custom cell proved equal to an ONNX op. weights: (name, WExpr of the cell's params)
    for W [G*u, in], R [G*u, u], B [2*G*u] and P [3*u] in ONNX's layout and gate order (B and P
    only where the step has them). state_order: per ONNX state (H, then C), the index of the
    cell's state. activations: ONNX's `activations` (name, alpha, beta), f g h order."""

    op: str
    activations: tuple[tuple[str, float | None, float | None], ...]
    weights: tuple[tuple[str, WExpr], ...]
    state_order: tuple[int, ...]
    clip: float | None = None
    input_forget: bool = False
    linear_before_reset: int | None = None
    layout: str = ""

    @property
    def default_activations(self) -> bool:
        names = tuple(a[0] for a in self.activations)
        return names == ONNX_DEFAULTS[self.op] or (self.op == "RNN" and self.activations == (("Affine", 1.0, 0.0),))

    @property
    def summary(self) -> str:
        parts = []
        if not all(n == d for (n, _, _), d in zip(self.activations, ONNX_DEFAULTS[self.op])):
            parts.append("activations " + ", ".join(
                n + (f"({', '.join(f'{v:g}' for v in (a, b) if v is not None)})" if a is not None else "")
                for n, a, b in self.activations))
        if any(k == "P" for k, _ in self.weights):
            parts.append("peepholes")
        if self.input_forget:
            parts.append("input_forget")
        if self.clip is not None:
            parts.append(f"clip {self.clip:g}")
        if self.linear_before_reset is not None:
            parts.append(f"linear_before_reset={self.linear_before_reset}")
        if not any(k == "B" for k, _ in self.weights):
            parts.append("no bias")
        return f"recognized as ONNX {self.op}" + (f" ({', '.join(parts)})" if parts else "")

    def arrays(self, w: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {k: e.value(w) for k, e in self.weights}


def _gates(gates: list[Linear | None], u: int, n_in: int, peep: list[WExpr | None] | None = None,
           rbias: list[WExpr | None] | None = None) -> tuple[tuple[str, WExpr], ...]:
    def cat(parts: list[WExpr | None], shape: tuple[int, ...], axis: int) -> WExpr:
        return wconcat([p if p is not None else WExpr("zeros", shape=shape) for p in parts], axis)
    ls = [g if g is not None else Linear(None, None, None, Poly(u, ())) for g in gates]
    W = WExpr("T", (cat([g.w for g in ls], (n_in, u), 1),), shape=(len(ls) * u, n_in))
    R = WExpr("T", (cat([g.r for g in ls], (u, u), 1),), shape=(len(ls) * u, u))
    out = [("W", W), ("R", R)]
    rb = rbias or [None] * len(ls)
    if any(g.b is not None for g in ls) or any(x is not None for x in rb):
        out.append(("B", cat([g.b for g in ls] + rb, (u,), 0)))
    if peep is not None and any(p is not None for p in peep):
        out.append(("P", cat([wbcast(p, (u,)) if p is not None else None for p in peep], (u,), 0)))
    return tuple(out)


def _same(acts: list[Gate], what: str, op: str) -> tuple:
    if len({g.act for g in acts}) > 1:
        raise Refuse(f"not {op}: the {what} use different activations ({', '.join(g.act[0] for g in acts)}); "
                     "ONNX's op has one for them")
    return acts[0].act


def _clip(gates: list[Gate], op: str) -> float | None:
    clips = {g.clip for g in gates}
    if len(clips) > 1:
        raise Refuse(f"not {op}: some gates are clipped and others not (ONNX's clip applies to every gate)")
    return clips.pop()


def _divide(p: Poly, f: Fn, k: float) -> Poly | None:
    """p / (k * f), when every monomial of p holds f once."""
    d: dict[Mono, WExpr] = {}
    for m, c in p.terms:
        if list(m).count(f) != 1:
            return None
        rest = list(m)
        rest.remove(f)
        d[mono(*rest)] = wmul(const(1.0 / k), c)
    return Poly.make(p.width, d)


def _with(p: Poly, s: Src) -> tuple[Poly, Poly]:
    """p = s * A + Rest: (A, Rest), s a bare factor."""
    a: dict[Mono, WExpr] = {}
    rest: dict[Mono, WExpr] = {}
    for m, c in p.terms:
        if s in m:
            if list(m).count(s) > 1:
                raise Refuse(f"uses `{s.name}` squared")
            r = list(m)
            r.remove(s)
            a[mono(*r)] = c
        else:
            rest[m] = c
    return Poly.make(p.width, a), Poly.make(p.width, rest)


def _fns(p: Poly) -> list[Fn]:
    seen: list[Fn] = []
    for m, _ in p.terms[:1]:
        for f in m:
            if isinstance(f, Fn) and f not in seen:
                seen.append(f)
    return seen


def _lstm(x: Src, h: Src, c: Src, Hn: Poly, Cn: Poly, n_in: int) -> dict[str, Any]:
    u = h.width
    Fp, R = _with(Cn, c)
    if not Fp.terms:
        raise Refuse("not an LSTM: the new c does not carry the old c through a forget gate")
    fconst = Fp.as_dict().get(())
    cifg = const_value(fconst) == 1.0 and len(Fp.terms) > 1
    if cifg:
        Ip = p_add(p_const(u, ONE), p_scale(Fp, const(-1.0)))
        I = as_gate(Ip, "input gate")
        F = None
        sf = single_fn(Ip)
        cands = [sf] if sf else []
    else:
        F = as_gate(Fp, "forget gate")
        cands = []
        k = 1.0 if F.act[0] != "ScaledTanh" else F.act[1]
        for f in _fns(R):
            cands.append((f, k))
    errors = []
    for f, k in cands:
        Gp = _divide(R, f, k)
        if Gp is None or not Gp.terms:
            continue
        try:
            I = as_gate(Poly.make(u, {(f,): const(k)}), "input gate")
            G = as_gate(Gp, "cell gate")
            if p_mul(Poly.make(u, {(f,): const(k)}), Gp) != R:
                continue
            return _lstm_rest(x, h, c, Hn, Cn, n_in, I, F, G, cifg)
        except Refuse as e:
            errors.append(str(e) if str(e).startswith("not ") else f"not an LSTM: {e}")
    # the candidate taken for the input gate that shares the forget gate's activation says most
    errors.sort(key=lambda e: "different activations" in e)
    raise Refuse(errors[0] if errors else
                 "not an LSTM: the new c is not f * c + i * g (the input gate times the cell gate)")


def _lstm_rest(x: Src, h: Src, c: Src, Hn: Poly, Cn: Poly, n_in: int, I: Gate, F: Gate | None, G: Gate,
               cifg: bool) -> dict[str, Any]:
    u = h.width
    fact = _same([I] + ([F] if F else []), "input and forget gates", "an LSTM")
    # h' = o * act_h(c'): act_h's factor is the one whose argument is the new c
    found = None
    for f in _fns(Hn):
        if f.arg == Cn:
            found = (f, (f.name, f.alpha, f.beta))
    if found is not None:
        hf, hact = found
        if hf.clip is not None:
            raise Refuse("not an LSTM: act_h(c') is clipped (ONNX's clip applies to the gates only)")
        Op = _divide(Hn, hf, 1.0)
    else:
        hf, hact, Op = None, ("Affine", 1.0, 0.0), None
        for f in _fns(Hn):
            k = 1.0 if fact[0] != "ScaledTanh" else fact[1]
            cand = Poly.make(u, {(f,): const(k)})
            if p_mul(cand, Cn) == Hn:
                Op = cand
    if Op is None:
        for f in _fns(Hn):
            if single_fn(f.arg) is not None and single_fn(f.arg)[0].arg == Cn:
                raise Refuse(f"not an LSTM: h applies {f.name} to {single_fn(f.arg)[0].name}(c'), "
                             "ONNX's h is o * act(c')")
        raise Refuse("not an LSTM: h is not o * act(new c)")
    O = as_gate(Op, "output gate")
    if O.act != fact:
        # move a scale of o into act_h: o * act_h = (k o') * act_h = o' * (k act_h)
        sf = single_fn(Op)
        if sf is not None and sf[1] != 1.0:
            base = scaled(_act(sf[0].name, sf[0].alpha, sf[0].beta), 1.0)
            kh = scaled(hact, sf[1])
            if base == fact and kh is not None:
                O, hact = Gate(fact, O.clip, O.pre), kh
    if O.act != fact:
        raise Refuse(f"not an LSTM: the output gate uses {O.act[0]}, the input and forget gates {fact[0]}")
    gates = [I, O] + ([F] if F else []) + [G]
    clip = _clip(gates, "an LSTM")
    li = linear_parts(I.pre, x, h, "input gate")
    lo = linear_parts(O.pre, x, h, "output gate")
    lg = linear_parts(G.pre, x, h, "cell gate")
    lf = linear_parts(F.pre, x, h, "forget gate") if F else None

    def peep(lin: Linear, what: str, state: Poly | Src) -> tuple[Linear, WExpr | None]:
        if not lin.rest.terms:
            return lin, None
        if isinstance(state, Src):
            d = lin.rest.as_dict()
            if list(d) == [(state,)]:
                return replace(lin, rest=Poly(u, ())), d[(state,)]
        else:
            pd, cd = lin.rest.as_dict(), state.as_dict()
            if set(pd) == set(cd):
                ps = set()
                for m, cc in cd.items():
                    k, core = _split_const(cc)
                    if core is not None or k == 0.0:
                        break
                    ps.add(wmul(const(1.0 / k), pd[m]))
                else:
                    if len(ps) == 1:
                        return replace(lin, rest=Poly(u, ())), ps.pop()
        if what == "output gate" and _with(lin.rest, c)[0].terms and not isinstance(state, Src):
            raise Refuse("not an LSTM: the output gate reads the old c (ONNX's output peephole reads the new c)")
        raise Refuse(f"not an LSTM: the {what} also depends on {_describe_rest(lin.rest)}, not only on "
                     f"x @ W + h @ R + b{' + p * c' if what != 'cell gate' else ''}")
    # a peephole of the new c in the input or forget gate cannot happen (c' needs them)
    li, pi = peep(li, "input gate", c)
    if lf is not None:
        lf, pf = peep(lf, "forget gate", c)
    else:
        pf = None
    lo, po = peep(lo, "output gate", Cn)
    if lg.rest.terms:
        raise Refuse(f"not an LSTM: the cell gate also depends on {_describe_rest(lg.rest)}, not only on "
                     "x @ W + h @ R + b")
    acts = (fact, G.act, hact)
    return dict(op="LSTM", acts=acts, weights=_gates([li, lo, lf, lg], u, n_in, [pi, po, pf]), clip=clip,
                input_forget=cifg)


def _gru(x: Src, h: Src, Hn: Poly, n_in: int) -> dict[str, Any]:
    u = h.width
    Zp, R = _with(Hn, h)
    sf = single_fn(Zp)
    if not Zp.terms or sf is None:
        raise Refuse("not a GRU: the new h is not z * h + (1 - z) * hh for an update gate z")
    Z = as_gate(Zp, "update gate")
    zf, zk = sf
    HHp = Poly.make(u, {m: cc for m, cc in R.terms if zf not in m})
    if not HHp.terms or p_add(HHp, p_scale(p_mul(Zp, HHp), const(-1.0))) != R:
        raise Refuse("not a GRU: the new h is not z * h + (1 - z) * hh (the candidate is not weighted by 1 - z)")
    HH = as_gate(HHp, "candidate")
    lz = linear_parts(Z.pre, x, h, "update gate")
    if lz.rest.terms:
        raise Refuse(f"not a GRU: the update gate also depends on {_describe_rest(lz.rest)}")
    lh = linear_parts(HH.pre, x, h, "candidate")
    rf: Fn | None = None
    lbr: set[int] = set()
    rh: WExpr | None = None
    rbh: WExpr | None = None
    k = 1.0 if Z.act[0] != "ScaledTanh" else Z.act[1]
    for m, cc in lh.rest.terms:
        fs = [f for f in m if isinstance(f, Fn)]
        if len(m) == 1 and isinstance(m[0], Proj) and len(m[0].mono) == 2 and h in m[0].mono:
            f = next((g for g in m[0].mono if g != h), None)
            term, mode = wmul(const(1.0 / k), _colscale(m[0].w, cc)), 0
        elif len(m) == 2 and len(fs) == 1 and any(isinstance(g, Proj) and g.mono == (h,) for g in m):
            f, p = fs[0], next(g for g in m if isinstance(g, Proj))
            term, mode = wmul(const(1.0 / k), _colscale(p.w, cc)), 1
        elif len(m) == 1 and isinstance(m[0], Fn):
            f, term, mode = m[0], wbcast(wmul(const(1.0 / k), cc), (u,)), 2
        else:
            raise Refuse(f"not a GRU: the candidate also depends on {_describe_rest(lh.rest)}, not only on "
                         "x @ W + (r * h) @ R or r * (h @ R + b)")
        if not isinstance(f, Fn) or (rf is not None and f != rf):
            raise Refuse("not a GRU: the candidate gates h with more than one reset gate")
        rf = f
        if mode == 2:
            rbh = term if rbh is None else wadd(rbh, term)
            lbr.add(1)
        else:
            rh = term if rh is None else wadd(rh, term)
            lbr.add(mode)
    if len(lbr) > 1:
        raise Refuse("not a GRU: the reset gate is applied both before and after the recurrent product")
    if lh.r is not None:
        raise Refuse("not a GRU: the candidate reads h without the reset gate")
    if rf is not None:
        Rg = as_gate(Poly.make(u, {(rf,): const(k)}), "reset gate")
        lr = linear_parts(Rg.pre, x, h, "reset gate")
        if lr.rest.terms:
            raise Refuse(f"not a GRU: the reset gate also depends on {_describe_rest(lr.rest)}")
        gates = [Z, Rg, HH]
        fact = _same([Z, Rg], "update and reset gates", "a GRU")
    else:
        lr, gates, fact = None, [Z, HH], Z.act
    clip = _clip(gates, "a GRU")
    mode = lbr.pop() if lbr else 0
    lh = replace(lh, r=rh, rest=Poly(u, ()))
    rbias = [None, None, rbh] if mode == 1 else None
    return dict(op="GRU", acts=(fact, HH.act), weights=_gates([lz, lr, lh], u, n_in, rbias=rbias), clip=clip,
                linear_before_reset=mode)


def _rnn(x: Src, h: Src, Hn: Poly, n_in: int) -> dict[str, Any]:
    G = as_gate(Hn, "new h")
    lin = linear_parts(G.pre, x, h, "new h")
    if lin.rest.terms:
        raise Refuse(f"the pre-activation also depends on {_describe_rest(lin.rest)}, not only on x @ W + h @ U + b")
    return dict(op="RNN", acts=(G.act,), weights=_gates([lin], h.width, n_in), clip=G.clip)


def recognize(cell: Cell) -> Recognized | str:
    """The ONNX op the custom cell's step is, or why it is none (one line)."""
    prog = cell.step_program
    if len(prog.inputs) != 1:
        return f"the cell takes {len(prog.inputs)} inputs; ONNX's LSTM, GRU and RNN take one"
    if len(prog.states) not in (1, 2):
        return f"the cell has {len(prog.states)} states; ONNX's LSTM has two (h, c), its GRU and RNN one"
    if len(prog.outputs) != 1:
        return f"the cell has {len(prog.outputs)} outputs; ONNX's ops give one (h)"
    if not reads_inputs(prog):
        return "the step does not read its input (ONNX's ops read x at every step)"
    env = interpret(prog)
    units = {prog.nodes[i].shape[1:] for _, i in prog.states}
    xin = prog.nodes[prog.inputs[0][1]]
    if len(units) != 1 or len(next(iter(units))) != 1 or len(xin.shape) != 2:
        return "the states and the input must be vectors, the states of one size (units)"
    n_in = xin.shape[1]
    nexts = [env[i] for i in prog.next_states]
    bad = next((v for v in nexts if isinstance(v, NotForm)), None)
    if bad is not None:
        return f"the step {bad}"
    if not all(isinstance(v, Poly) for v in nexts):
        return "a state's next value is computed from the params only"
    x = Src(prog.inputs[0][0], "input", n_in)
    srcs = [Src(name, "state", prog.nodes[i].shape[1]) for name, i in prog.states]
    out = prog.outputs[0]
    try:
        if len(srcs) == 2:
            tried = []
            for hi, ci in ((0, 1), (1, 0)):
                if prog.next_states[hi] != out and env[out] != nexts[hi]:
                    continue
                try:
                    got = _lstm(x, srcs[hi], srcs[ci], nexts[hi], nexts[ci], n_in)
                    got["order"] = (hi, ci)
                    break
                except Refuse as e:
                    tried.append(str(e))
            else:
                return tried[0] if tried else "not an LSTM: the output is not the new h"
        else:
            if prog.next_states[0] != out and env[out] != nexts[0]:
                return "the output is not the new state h (ONNX's ops output h)"
            h, Hn = srcs[0], nexts[0]
            if _with(Hn, h)[0].terms:
                got = _gru(x, h, Hn, n_in)
            else:
                try:
                    got = _rnn(x, h, Hn, n_in)
                except Refuse as e:
                    raise Refuse(f"not an RNN: {e}") from None
            got["order"] = (0,)
    except Refuse as e:
        return str(e)
    rec = Recognized(got["op"], tuple(got["acts"]), got["weights"], got["order"], got.get("clip"),
                     got.get("input_forget", False), got.get("linear_before_reset"))
    layout = "; ".join(f"{k} = {e.describe()}" for k, e in rec.weights)
    return replace(rec, layout=layout)


class RecognizeBuiltins:
    """Marks each custom cell with the ONNX op it is proved to be (`Cell.recognized`), or why
    it is none (`Cell.not_recognized`); choose-lowering then plans it native."""

    name = "recognize-builtins"
    after = ("reassociate-sums", "merge-products", "sink-slices")   # it reads the step they leave

    def precondition(self, graph: Graph) -> str | None:
        return no_plans(graph)

    def run(self, graph: Graph) -> PassResult:
        def mark(c: Cell) -> Cell:
            r = recognize(c)
            if isinstance(r, str):
                return replace(c, recognized=None, not_recognized=r)
            return replace(c, recognized=r, not_recognized="")
        return map_custom_cells(graph, mark)
