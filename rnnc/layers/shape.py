"""Time and shape layers (Keras 3 semantics): TimeDistributed, RepeatVector, Flatten, Reshape,
Permute, Cropping1D, ZeroPadding1D, UpSampling1D. One LayerDef each; their ONNX forms are in
rnnc/lower/shape.py.

None of Keras 3's reshaping layers supports masking: an incoming mask is dropped (Keras warns;
rnnc notes it). TimeDistributed passes its input's mask on (Keras: supports_masking) and gives
its layer none (no layer rnnc wraps reads a mask at inference).

A size that a symbolic dim makes unknown is written as the expression that gives it
(`time-2`, `time*4`, `(time*4)/2`): equal expressions are equal sizes."""
from __future__ import annotations

from math import prod
from typing import TYPE_CHECKING

import numpy as np

from ..spec import schema as S
from ..spec.schema import Key
from .base import LAYER_DEFS, InferCtx, Inferred, LayerDef, RefCall, define

if TYPE_CHECKING:   # the IR imports this package: its types only for annotations here
    from ..ir.types import Dim

FORMATS = ("channels_last", "channels_first")


# -- symbolic sizes ------------------------------------------------------------------

def _term(d: "Dim") -> str:
    s = str(d)
    return s if isinstance(d, int) or s.isidentifier() else f"({s})"


def _times(dims: "tuple[Dim, ...] | list[Dim]") -> "Dim":
    """The product of dims: an int when all are fixed, else its expression."""
    if all(isinstance(d, int) for d in dims):
        return prod(dims)
    fixed = prod(d for d in dims if isinstance(d, int))
    terms = [_term(d) for d in dims if not isinstance(d, int)] + ([str(fixed)] if fixed != 1 else [])
    return "*".join(terms)


def _plus(d: "Dim", k: int) -> "Dim":
    if isinstance(d, int):
        return d + k
    if k == 0:
        return d
    return f"{_term(d)}{'+' if k > 0 else '-'}{abs(k)}"


# -- TimeDistributed -------------------------------------------------------------------

def _time_distributed(ctx: InferCtx) -> Inferred:
    # Keras 3 (layers/rnn/time_distributed.py): the layer is built on (batch, *input[2:]) and
    # applied to every time slice; output (batch, time, *layer output[1:]).
    x = ctx.x
    if x.rank < 3:
        raise ctx.fail("input", f"TimeDistributed expects an input of rank 3 or more (batch, time, ...), got {x}")
    inner = ctx.build_wrapped([x.with_dims(x.dims[0], *x.dims[2:])])
    y = inner.outputs.get("output")
    if y is None or y.rank < 1 or y.dims[0] != x.dims[0]:
        found = ", ".join(f"{p} {t}" for p, t in inner.outputs.items())
        raise ctx.fail("layer", f"TimeDistributed needs a layer with one output that keeps the batch axis first, "
                       f"got {inner.kind} with outputs {found}")
    reads = LAYER_DEFS.get(inner.kind)
    if ctx.masks[0] is not None and reads is not None and reads.masking in ("consume", "infer"):
        raise ctx.fail("layer", f"TimeDistributed with a masked input around {inner.kind} is not supported: Keras 3 "
                       f"hands the layer each step's slice of the mask, which rnnc does not reproduce")
    notes = tuple(f"layer ({inner.kind}): {n}" for n in inner.notes)
    return Inferred({"output": y.with_dims(x.dims[0], x.dims[1], *y.dims[1:])}, params=dict(inner.params),
                    notes=notes, wrapped=inner)


def _time_distributed_ref(c: RefCall) -> dict[str, np.ndarray]:
    from ..reference import run_layer  # the reference imports this package: its own import is lazy

    inner = c.layer.wrapped
    assert inner is not None, "a TimeDistributed layer carries its wrapped layer"
    x = c.x
    b, t = x.shape[:2]
    y = run_layer(inner, c.w, {inner.inputs[0]: x.reshape(b * t, *x.shape[2:])})["output"]
    return {"output": y.reshape(b, t, *y.shape[1:])}


TIME_DISTRIBUTED = define(LayerDef(
    "TimeDistributed",
    # `layer` is a nested layer mapping, parsed by the loader (wraps=True)
    keys={"layer": Key(lambda v: (True, v, ""), required=True)},
    infer=_time_distributed, reference=_time_distributed_ref, default_name="time_distributed",
    masking="pass", wraps=True))


# -- RepeatVector ----------------------------------------------------------------------

def _repeat_vector(ctx: InferCtx) -> Inferred:
    ctx.rank(2)
    x = ctx.x
    return Inferred({"output": x.with_dims(x.dims[0], ctx.config["n"], x.dims[1])})


def _repeat_vector_ref(c: RefCall) -> dict[str, np.ndarray]:
    return {"output": np.repeat(c.x[:, None, :], c.config["n"], axis=1)}


define(LayerDef("RepeatVector", keys={"n": Key(S.positive_int, required=True)}, infer=_repeat_vector,
                reference=_repeat_vector_ref, default_name="repeat_vector", masking="drop"))


# -- Flatten ---------------------------------------------------------------------------

def _flatten(ctx: InferCtx) -> Inferred:
    x = ctx.x
    rest = x.dims[1:]
    return Inferred({"output": x.with_dims(x.dims[0], _times(rest) if rest else 1)})


def _flatten_ref(c: RefCall) -> dict[str, np.ndarray]:
    x = c.x
    if c.config["data_format"] == "channels_first" and x.ndim > 2:
        x = np.transpose(x, (0, *range(2, x.ndim), 1))
    return {"output": x.reshape(x.shape[0], -1) if x.ndim > 1 else x.reshape(-1, 1)}


define(LayerDef("Flatten", keys={"data_format": Key(S.enum(*FORMATS), "channels_last")}, infer=_flatten,
                reference=_flatten_ref, default_name="flatten", masking="drop"))


# -- Reshape ---------------------------------------------------------------------------

def _reshape(ctx: InferCtx) -> Inferred:
    x = ctx.x
    target = tuple(ctx.config["target_shape"])
    if any(d == 0 for d in target) or target.count(-1) > 1:
        raise ctx.fail("target_shape", f"expected positive sizes with at most one -1 (the size inferred), "
                       f"got {list(target)}")
    rest = x.dims[1:]
    known = prod(d for d in target if d != -1)
    if all(isinstance(d, int) for d in rest):
        total = prod(rest)
        if -1 in target and total % known == 0:
            target = tuple(total // known if d == -1 else d for d in target)
        if prod(target) != total or -1 in target:
            want = f"{known} values" if -1 not in ctx.config["target_shape"] else f"a multiple of {known} values"
            raise ctx.fail("target_shape", f"cannot reshape {x} ({total} values per example) to "
                           f"{list(ctx.config['target_shape'])} ({want})")
        out = target
    else:   # Keras: a -1 is unknown here; any other size is taken as given (checked at run time)
        whole = _times(rest)
        out = tuple((whole if known == 1 else f"{_term(whole)}/{known}") if d == -1 else d for d in target)
    return Inferred({"output": x.with_dims(x.dims[0], *out)})


def _reshape_ref(c: RefCall) -> dict[str, np.ndarray]:
    return {"output": c.x.reshape(c.x.shape[0], *c.config["target_shape"])}


define(LayerDef("Reshape", keys={"target_shape": Key(S.int_tuple(None, minimum=-1), required=True)}, infer=_reshape,
                reference=_reshape_ref, default_name="reshape", masking="drop"))


# -- Permute ---------------------------------------------------------------------------

def _permute(ctx: InferCtx) -> Inferred:
    dims = tuple(ctx.config["dims"])
    if sorted(dims) != list(range(1, len(dims) + 1)):
        raise ctx.fail("dims", f"expected a permutation of 1..{len(dims)} (the non-batch axes, counted from 1), "
                       f"got {list(dims)}")
    ctx.rank(len(dims) + 1)
    x = ctx.x
    return Inferred({"output": x.with_dims(x.dims[0], *(x.dims[d] for d in dims))})


def _permute_ref(c: RefCall) -> dict[str, np.ndarray]:
    return {"output": np.transpose(c.x, (0, *c.config["dims"]))}


define(LayerDef("Permute", keys={"dims": Key(S.int_tuple(None, minimum=1), required=True)}, infer=_permute,
                reference=_permute_ref, default_name="permute", masking="drop"))


# -- Cropping1D, ZeroPadding1D, UpSampling1D: (batch, steps, features) -----------------------

def _cropping1d(ctx: InferCtx) -> Inferred:
    ctx.rank(3)
    x = ctx.x
    a, b = ctx.config["cropping"]
    t = x.dims[1]
    if isinstance(t, int) and t - a - b <= 0:
        raise ctx.fail("cropping", f"cropping ({a}, {b}) must leave at least one of the {t} steps of {x}")
    return Inferred({"output": x.with_dims(x.dims[0], _plus(t, -(a + b)), x.dims[2])})


def _cropping1d_ref(c: RefCall) -> dict[str, np.ndarray]:
    a, b = c.config["cropping"]
    return {"output": c.x[:, a:c.x.shape[1] - b, :]}


def _zero_padding1d(ctx: InferCtx) -> Inferred:
    ctx.rank(3)
    x = ctx.x
    axis = 2 if ctx.config["data_format"] == "channels_first" else 1
    dims = list(x.dims)
    dims[axis] = _plus(dims[axis], sum(ctx.config["padding"]))
    return Inferred({"output": x.with_dims(*dims)})


def _zero_padding1d_ref(c: RefCall) -> dict[str, np.ndarray]:
    pads = [(0, 0)] * 3
    pads[2 if c.config["data_format"] == "channels_first" else 1] = tuple(c.config["padding"])
    return {"output": np.pad(c.x, pads)}


def _up_sampling1d(ctx: InferCtx) -> Inferred:
    ctx.rank(3)
    x = ctx.x
    return Inferred({"output": x.with_dims(x.dims[0], _times([x.dims[1], ctx.config["size"]]), x.dims[2])})


def _up_sampling1d_ref(c: RefCall) -> dict[str, np.ndarray]:
    return {"output": np.repeat(c.x, c.config["size"], axis=1)}


define(LayerDef("Cropping1D", keys={"cropping": Key(S.int_tuple(2, minimum=0), (1, 1))}, infer=_cropping1d,
                reference=_cropping1d_ref, default_name="cropping1d", masking="drop"))
define(LayerDef("ZeroPadding1D", keys={"padding": Key(S.int_tuple(2, minimum=0), (1, 1)),
                                       "data_format": Key(S.enum(*FORMATS), "channels_last")},
                infer=_zero_padding1d, reference=_zero_padding1d_ref, default_name="zero_padding1d", masking="drop"))
define(LayerDef("UpSampling1D", keys={"size": Key(S.positive_int, 2)}, infer=_up_sampling1d,
                reference=_up_sampling1d_ref, default_name="up_sampling1d", masking="drop"))
