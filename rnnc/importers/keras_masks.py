"""Masks: the one Keras recorded for each recurrent layer against the one rnnc derives.

Keras 3 writes the mask it passes to a layer (`mask=` in the layer's inbound node) as a
chain of keras.ops nodes: `Masking(v)` on x is `Any(NotEqual(x, v), axis=-1)`,
`Embedding(mask_zero=True)` on t is `NotEqual(t, 0)`, and merge layers combine masks with
`LogicalOr` (Concatenate through ExpandDims / OnesLike / Any); a mask given to a layer
explicitly (`layer(x, mask=m)`, m a bool model input) is that input. Both sides are reduced to the
same form, a set of atoms OR-ed together (None: no mask), and compared."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import Problem
from ..ir.graph import Graph
from ..ir.types import Ref
from .keras_config import RECURRENT
from .keras_config import tensors as _tensors

Tensor = tuple[str, int, int]
ALL = "all-true"


class _Unsupported(Exception):
    pass


def _one(v: Any) -> Tensor:
    ts = _tensors(v)
    if len(ts) != 1:
        raise _Unsupported("an operation with several tensor arguments")
    return ts[0]


class _KerasMasks:
    def __init__(self, ops: dict[str, tuple[str, dict, dict]], inputs: tuple[str, ...] = ()):
        self.ops, self.inputs = ops, inputs

    def op(self, t: Tensor) -> tuple[str, dict, list]:
        if t[0] not in self.ops:
            raise _Unsupported(f"a mask taken from {t[0]!r} (not computed by Masking, Embedding or a merge)")
        cls, cfg, node = self.ops[t[0]]
        return cls, cfg, node.get("args") or []

    def canon(self, t: Tensor) -> frozenset | str:
        if t[0] in self.inputs:    # a bool model input given as the mask (`layer(x, mask=m)`)
            return frozenset({("input", (t[0], 0, 0), 0.0)})
        cls, cfg, args = self.op(t)
        if cls == "ConvertToTensor" and args:      # Attention's compute_mask passes the query's mask on
            return self.canon(_one(args[0]))
        if cls == "NotEqual" and len(args) == 2 and isinstance(args[1], (int, float)):
            return frozenset({("ne", _one(args[0]), float(args[1]))})
        if cls == "LogicalOr" and len(args) == 2:
            return _or(self.canon(_one(args[0])), self.canon(_one(args[1])))
        if cls == "Any" and cfg.get("axis", -1) == -1 and not cfg.get("keepdims", False):
            inner = _one(args[0])
            icls, _, iargs = self.op(inner)
            if icls == "NotEqual" and len(iargs) == 2 and isinstance(iargs[1], (int, float)):
                return frozenset({("any_ne", _one(iargs[0]), float(iargs[1]))})
            if icls == "Concatenate":
                out: frozenset | str = frozenset()
                for part in _tensors(iargs[0]):
                    out = _or(out, self.part(part))
                return out
        raise _Unsupported(f"operation {cls}")

    def part(self, t: Tensor) -> frozenset | str:
        """One input of Concatenate's mask: ExpandDims(m), LogicalOr(ExpandDims(m), ZerosLike) or OnesLike."""
        cls, _, args = self.op(t)
        if cls == "OnesLike":
            return ALL
        if cls == "ExpandDims":
            return self.canon(_one(args[0]))
        if cls == "LogicalOr" and len(args) == 2:
            a, b = (self.op(_one(x)) for x in args)
            if a[0] == "ExpandDims" and b[0] == "ZerosLike":
                return self.canon(_one(a[2][0]))
        raise _Unsupported(f"operation {cls} in a Concatenate mask")


def _or(a: frozenset | str, b: frozenset | str) -> frozenset | str:
    if isinstance(a, str) or isinstance(b, str):   # ALL, the only string form
        return ALL
    return a | b


def _rnnc(sources: dict[str, Tensor], graph: Graph, ref: Ref | None) -> Any:
    """The mask the IR gives a layer, in the same form. The IR decided how each merge makes
    its mask (Layer.mask_merge over Layer.input_masks: rnnc/ir/semantics.py); here it is only
    written out: an unmasked input of a "concat" merge counts as all true. `sources`: the
    Keras tensor each layer reads."""
    if ref is None:
        return None
    if ref.port == "input":     # a bool model input (the spec's `mask:` key)
        return frozenset({("input", (ref.layer, 0, 0), 0.0)})
    layer = graph.layers[ref.layer]
    src = sources.get(layer.name)
    if layer.kind == "Masking":
        return frozenset({("any_ne", src, float(layer.config["mask_value"]))})
    if layer.kind == "Embedding":
        return frozenset({("ne", src, 0.0)})
    if layer.mask_merge is not None:
        out: frozenset | str = frozenset()
        for m in (_rnnc(sources, graph, r) for r in layer.input_masks):
            out = _or(out, ALL if m is None else m if isinstance(m, (frozenset, str)) else frozenset({m}))
        return None if out == ALL else out
    return ("from", ref.layer)


def describe(m: Any) -> str:
    if m is None or m == ALL:
        return "no mask"
    if isinstance(m, tuple):
        return f"the mask output of {m[1]!r}"
    parts = []
    for kind, t, v in sorted(m, key=str):
        if kind == "input":
            parts.append(f"model input {t[0]!r}")
            continue
        parts.append(f"{t[0]}[{t[2]}] != {v:g}" + (" (any feature)" if kind == "any_ne" else ""))
    return "the mask " + " OR ".join(parts)


@dataclass(frozen=True)
class MaskFacts:
    """What the check needs from a Keras model's config (rnnc/importers/keras_file.py):
    file     the .keras file, for the problems;
    layers   (name, spec type) of each imported layer;
    nodes    each Keras layer's inbound node (its `kwargs` hold the mask Keras passed);
    ops      each keras.ops node: (class, config, inbound node);
    where    each layer's locator in the config;
    sources  the Keras tensor each layer reads;
    inputs   the model's inputs."""

    file: str
    layers: tuple[tuple[str, str], ...]
    nodes: dict[str, dict]
    ops: dict[str, tuple[str, dict, dict]]
    where: dict[str, str]
    sources: dict[str, Tensor]
    inputs: tuple[str, ...] = ()   # the model's inputs (a mask may be one)


def check_masks(facts: MaskFacts, graph: Graph) -> list[Problem]:
    """A problem for each recurrent layer whose mask in Keras differs from rnnc's."""
    problems = []
    km = _KerasMasks(facts.ops, facts.inputs)
    for name, kind in facts.layers:
        if kind not in (*RECURRENT, "Bidirectional") or name not in facts.nodes:
            continue
        tensor = (facts.nodes[name].get("kwargs") or {}).get("mask")
        try:
            ts = _tensors(tensor)
            keras = km.canon(ts[0]) if ts else None
        except _Unsupported as e:
            problems.append(Problem(f"the mask Keras passes to this layer uses {e}, which rnnc does not reproduce",
                                    file=facts.file, path=facts.where[name]))
            continue
        keras = None if keras == ALL or keras == frozenset() else keras
        ours = _rnnc(facts.sources, graph, graph.layers[name].mask_in)
        if keras != ours:
            problems.append(Problem(f"Keras passes this layer {describe(keras)}, rnnc would use "
                                    f"{describe(ours)}: the results would differ", file=facts.file,
                                    path=facts.where[name]))
    return problems
