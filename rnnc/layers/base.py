"""One definition per layer kind: the place a layer is added.

A `LayerDef` holds everything about a layer kind that is not ONNX: its spec keys (Keras 3's
names and defaults), how many inputs it takes, its shape rule and parameters (`infer`), what
it does with an incoming mask (Keras's rules), its NumPy meaning (`reference`, the test
oracle) and how the Keras importer maps its config. The ONNX lowering of the kind is
registered in rnnc/lower/ (`@register(kind, "plain")`); `rnnc.lower` checks at import time
that every defined kind has one. Adding a layer is one LayerDef and one lowering rule.

The loader, the IR builder, the reference, the summary and the Keras importer consult the
table (`LAYER_DEFS`) for every kind they do not know themselves."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..spec import schema as S

if TYPE_CHECKING:   # the IR imports this module (ir/build.py): its types only for annotations here
    from ..ir.graph import Layer
    from ..ir.types import Dim, Ref, TensorType

MASKING = ("pass", "consume", "drop", "infer")


class Refused(Exception):
    """Raised by InferCtx.fail: the problem is recorded; the layer is not built."""


@dataclass(frozen=True)
class Inferred:
    """What a layer's shape rule found.

    outputs   port -> type, "output" first (ports other than "output" and "mask" are extra
              outputs, such as attention scores).
    params    parameter name -> shape, in Keras's variable order (the order of the layer's
              arrays in a .keras weights file).
    notes     shown by compile/check/inspect (e.g. "identity at inference").
    mask_out  only for LayerDef.masking == "infer": "pass" (the input's mask goes on), "none",
              or "own" (the layer computes a mask: its "mask" output port).
    consumes_mask  only for masking == "infer": the layer reads its input's mask.
    wrapped   a wrapper's layer, as InferCtx.build_wrapped built it."""

    outputs: dict[str, TensorType]
    params: dict[str, tuple[int, ...]] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    mask_out: str = "pass"
    consumes_mask: bool = False
    wrapped: "Layer | None" = None


class InferCtx:
    """What a shape rule sees: the layer's config, its inputs' types and masks, and a way to
    refuse with a located error (`fail(key, message)`)."""

    def __init__(self, *, name: str, kind: str, config: dict[str, Any], types: list[TensorType],
                 refs: list[Ref], masks: list[Ref | None], fail: Callable[[str | None, str], Refused],
                 same_dim: Callable[[Dim, Dim, str], bool],
                 build_wrapped: Callable[[list[TensorType]], "Layer"] | None = None):
        self.name, self.kind, self.config = name, kind, config
        self.types, self.refs, self.masks = types, refs, masks
        self._fail, self._same_dim, self._build_wrapped = fail, same_dim, build_wrapped

    def build_wrapped(self, types: list[TensorType]) -> "Layer":
        """A wrapper's layer (config["layer"]), built as a layer named "layer" whose input is
        the model input `<wrapper>/step` of type `types` (one step's input): any layer kind,
        with its own shape rule, parameters and notes. Raises Refused if it fails."""
        if self._build_wrapped is None:
            raise TypeError(f"{self.kind} does not wrap a layer")
        return self._build_wrapped(types)

    @property
    def x(self) -> TensorType:
        return self.types[0]

    def fail(self, key: str | None, message: str) -> Refused:
        """A problem at `key` of the layer (None: the layer; "input": its input)."""
        return self._fail(key, message)

    def same_dim(self, a: Dim, b: Dim, what: str) -> bool:
        """Two dims that must be equal: False when they are different sizes; a symbolic one
        is checked at run time."""
        return self._same_dim(a, b, what)

    def fixed(self, dim: Dim, what: str) -> int:
        if not isinstance(dim, int):
            raise self.fail("input", f"{self.kind} needs a fixed {what}, got {dim!r} in {self.x}")
        return dim

    def rank(self, *ranks: int) -> None:
        if self.x.rank not in ranks:
            want = " or ".join(str(r) for r in ranks)
            raise self.fail("input", f"{self.kind} expects an input of rank {want}, got {self.x}")


@dataclass(frozen=True)
class RefCall:
    """What a reference function gets: the layer, its weights (float64, keys without the
    layer prefix), its inputs (float64 for float inputs) and their masks (bool or None)."""

    layer: "Layer"
    w: dict[str, np.ndarray]
    xs: list[np.ndarray]
    masks: list[np.ndarray | None]

    @property
    def x(self) -> np.ndarray:
        return self.xs[0]

    @property
    def config(self) -> dict[str, Any]:
        return self.layer.config


@dataclass(frozen=True)
class LayerDef:
    """A layer kind (see the module docstring).

    masking   Keras's rule for an incoming mask: "pass" (supports_masking: the output carries
              the input's mask), "consume" (the layer reads the mask and its output has none,
              e.g. a masked mean), "drop" (Keras 3 drops it with a warning; rnnc drops it and
              says so in the layer's notes), "infer" (the shape rule decides: Inferred.mask_out).
    inputs    (least, most) inputs; most None: any number.
    dtypes    the input dtypes accepted (first input; others must be float32).
    keras_ignore   Keras config keys that mean nothing at inference (seed, noise_shape, ...).
    keras_check    extra checks on a Keras config: a list of what is not supported.
    wraps     the layer wraps another (TimeDistributed): its `layer` key is a nested layer.
    initializers   parameter name (its last part: "query/kernel" -> "kernel") -> Keras's
              default initializer (rnnc/weights/init.py names), for a spec without weights;
              a name not listed takes the common default (kernels glorot_uniform, biases and
              betas zeros, gammas ones).
    other_dtypes   the dtypes accepted for the inputs after the first (an attention mask may
              be bool)."""

    kind: str
    keys: dict[str, S.Key]
    infer: Callable[[InferCtx], Inferred]
    reference: Callable[[RefCall], dict[str, np.ndarray]]
    default_name: str
    masking: str = "pass"
    inputs: tuple[int, int | None] = (1, 1)
    dtypes: tuple[str, ...] = ("float32",)
    keras_ignore: frozenset[str] = frozenset()
    keras_check: Callable[[dict[str, Any]], list[str]] | None = None
    wraps: bool = False
    initializers: dict[str, str] = field(default_factory=dict)
    other_dtypes: tuple[str, ...] = ("float32",)

    def __post_init__(self) -> None:
        if self.masking not in MASKING:
            raise ValueError(f"{self.kind}: masking {self.masking!r} is not one of {', '.join(MASKING)}")


LAYER_DEFS: dict[str, LayerDef] = {}


def define(d: LayerDef) -> LayerDef:
    """Add a layer kind to the vocabulary (once)."""
    if d.kind in LAYER_DEFS or d.kind in S.LAYER_KEYS:
        raise ValueError(f"layer kind {d.kind!r} is defined twice")
    LAYER_DEFS[d.kind] = d
    S.register_layer(d.kind, d.keys, d.default_name)
    return d
