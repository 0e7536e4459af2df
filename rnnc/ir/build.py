"""Spec → IR: resolve references, infer every tensor's type, propagate masks (as Keras
does) and record each layer's parameters. All problems are collected and raised together."""
from __future__ import annotations

from contextvars import ContextVar
from dataclasses import replace

import numpy as np

from ..cells.activations import ACROSS_AXIS
from ..cells.builtin import CELL_TYPES, CELLS
from ..cells.custom import CellDefError, bind
from ..errors import Problem, SpecError
from ..layers.base import LAYER_DEFS, InferCtx, LayerDef, Refused
from ..layers.conv import out_len, pads_of
from ..spec.model import CellDecl, LayerDecl, Spec
from ..spec.schema import CELL_KEYS, CELL_OF_LAYER, CONV_LSTM_LAYERS, conv_lstm_keys
from ..spec.yamlsrc import format_path
from .graph import Cell, Graph, Layer, Output, Recurrence
from .semantics import (
    ELEMENTWISE_MERGES,
    MERGE_LAYERS,
    bidirectional_zero_output,
    dot_axes,
    merged_mask_rule,
    state_ports,
)
from .types import Dim, Ref, TensorType

# float32 parameters: 8 GB, held in memory while compiling. Over 2 GB the model is written with
# ONNX external data (rnnc/emit/model.py save_atomic); this bound is only the memory's.
MAX_PARAMS = 2_000_000_000
MAX_TENSOR = 500_000_000      # float32 elements of one parameter: 2 GB, the most one protobuf field holds
MAX_VALUE = 100_000_000       # elements of one example's state or step value


class _Fail(Exception):
    """Aborts one layer; the problem is already recorded."""


class _Builder:
    def __init__(self, spec: Spec, *, size_limits: bool = True):
        self.size_limits = size_limits
        self.spec = spec
        self.problems: list[Problem] = []
        self.inputs = {n: TensorType(d.dtype, d.dims) for n, d in spec.inputs.items()}
        self.layers: dict[str, Layer] = {}
        self.failed: set[str] = set()
        self.params = 0
        self.current = ""
        self.equal_dims: list[tuple[Dim, Dim, str]] = []   # checked at run time (rnnc.Session)
        self.cell_notes: list[str] = []    # custom cells' warnings, for the layer being built (its notes)

    # -- errors -----------------------------------------------------------------
    def fail(self, path: tuple, message: str) -> _Fail:
        p = self.spec.source.problem(path, message)
        self.problems.append(p)
        return _Fail()

    # -- references -------------------------------------------------------------
    def resolve(self, text: str, path: tuple) -> list[Ref]:
        """A reference → the tensors it names (several for `layer.states` or a null-merged
        Bidirectional)."""
        if text in self.inputs:
            return [Ref(text, "input")]
        name, _, port = text.partition(".")
        if name in self.failed:
            raise _Fail()
        layer = self.layers.get(name)
        if layer is None:
            known = list(self.inputs) + list(self.layers)
            later = [l.name for l in self.spec.layers if l.name == name]
            hint = (f" Layer {name!r} is defined later: a layer can only use earlier layers."
                    if later else f" Known: {', '.join(known)}.")
            raise self.fail(path, f"unknown reference {text!r}: expected a model input or an earlier layer.{hint}")
        if port in ("", "output"):
            return [Ref(name, p) for p in layer.main_ports]
        if port == "states":
            if not layer.state_ports:
                raise self.fail(path, f"{text!r}: layer {name!r} has no states (set `return_state: true` on it)")
            return [Ref(name, p) for p in layer.state_ports]
        if port in layer.outputs:
            return [Ref(name, port)]
        avail = ", ".join(f"{name}.{p}" for p in (*layer.outputs, *(["states"] if layer.state_ports else [])))
        hint = " (set `return_state: true` on it)" if port.startswith("state") and not layer.state_ports else ""
        raise self.fail(path, f"unknown reference {text!r}: expected one of {avail}{hint}")

    def resolve_all(self, texts: tuple[str, ...], path: tuple) -> list[Ref]:
        refs: list[Ref] = []
        for i, t in enumerate(texts):
            refs += self.resolve(t, path + (i,) if len(texts) > 1 else path)
        return refs

    def type_of(self, r: Ref) -> TensorType:
        return self.inputs[r.layer] if r.port == "input" else self.layers[r.layer].outputs[r.port]

    def mask_of(self, r: Ref) -> Ref | None:
        if r.port == "input":
            return None
        layer = self.layers[r.layer]
        return layer.mask_out if r.port in layer.main_ports else None

    # -- the graph --------------------------------------------------------------
    def build(self) -> Graph:
        prev: list[Ref] | None = None
        if len(self.inputs) == 1:
            prev = [Ref(next(iter(self.inputs)), "input")]
        for decl in self.spec.layers:
            try:
                if decl.inputs is not None:
                    ins = self.resolve_all(decl.inputs, decl.path + ("input",))
                elif prev is None and self.failed:
                    raise _Fail()  # the previous layer failed: already reported
                elif prev is None:
                    raise self.fail(decl.path, "this layer has no `input:` and the model has several inputs: "
                                    f"expected `input:` naming one of {', '.join(self.inputs)}")
                else:
                    ins = prev
                self.current = decl.name        # the spec layer being built (a Bidirectional's halves are in it)
                layer = self.layer(decl, ins)
                if self.size_limits:
                    self.check_sizes(decl, layer)
                self.layers[layer.name] = layer
                prev = [Ref(layer.name, p) for p in layer.main_ports]
            except _Fail:
                self.failed.add(decl.name)
                prev = None
        outputs = self.outputs()
        if self.problems:
            raise SpecError(problems=self.problems)
        return Graph(self.spec.name, self.inputs, self.layers, outputs, file=self.spec.file, seed=self.spec.seed,
                     equal_dims=tuple(self.equal_dims))

    def outputs(self) -> list[Output]:
        decls = self.spec.outputs
        if decls is None:
            if not self.spec.layers:
                return []
            last = self.spec.layers[-1]
            if last.name in self.failed:
                return []
            refs = [Ref(last.name, p) for p in self.layers[last.name].main_ports]
            return [Output(str(r), r) for r in refs]
        out: list[Output] = []
        seen: set[str] = set()
        for d in decls:
            try:
                refs = self.resolve(d.ref, d.path)
            except _Fail:
                continue
            for i, r in enumerate(refs):
                if d.name is None:
                    name = str(r)
                else:
                    name = d.name if len(refs) == 1 else f"{d.name}_{i}"
                if name in seen:
                    self.fail(d.path, f"output {name!r} is listed twice: expected each output once")
                    continue
                if name in self.inputs:
                    self.fail(d.path, f"output {name!r} has the name of a model input: give it its own name, "
                              f"e.g. outputs: {{{name}_out: {d.ref}}}")
                    continue
                seen.add(name)
                out.append(Output(name, r))
        return out

    # -- layers -----------------------------------------------------------------
    def layer(self, decl: LayerDecl, ins: list[Ref], types: list[TensorType] | None = None) -> Layer:
        """Build one layer on `ins` (of `types`, by default the producers' types)."""
        t = decl.type
        types = [self.type_of(r) for r in ins] if types is None else types
        line = self.spec.source.line(decl.path)
        base = dict(name=decl.name, kind=t, config=decl.config, inputs=tuple(ins), path=decl.path, line=line)
        merge = t in MERGE_LAYERS
        explicit = self.explicit_mask(decl, ins, types) if "mask" in decl.config else None
        if t == "RNN":   # one input, or several for a custom cell with `inputs:`
            return self.recurrent(decl, base, ins, types, explicit or self.mask_of(ins[0]))
        if t in LAYER_DEFS:
            masks = None if explicit is None else [explicit, *(self.mask_of(r) for r in ins[1:])]
            return self.defined(LAYER_DEFS[t], decl, base, ins, types, masks=masks)
        if not merge and len(ins) != 1:
            raise self.fail(decl.path + ("input",), f"a {t} layer takes one input, got {len(ins)}")
        if merge and len(ins) < 2:
            raise self.fail(decl.path + ("input",), f"a {t} layer takes a list of at least 2 inputs, got {len(ins)}")
        x = types[0]
        mask = explicit or self.mask_of(ins[0])
        if t == "Embedding":
            if x.dtype not in ("int32", "int64"):
                raise self.fail(decl.path + ("input",), f"Embedding expects integer token ids (int32 or int64), got {x.dtype} {x}")
            out = TensorType("float32", (*x.dims, decl.config["output_dim"]))
            outs = {"output": out}
            mask_out = None
            if decl.config["mask_zero"]:
                outs["mask"] = TensorType("bool", x.dims)
                mask_out = Ref(decl.name, "mask")
            params = {"embeddings": (decl.config["input_dim"], decl.config["output_dim"])}
            return Layer(**base, outputs=outs, params=params, mask_out=mask_out)
        self.expect_float(decl, x, ins[0])
        if t == "Masking":
            if x.rank < 3:
                raise self.fail(decl.path + ("input",), f"Masking expects a (batch, time, features) input, got {x}")
            return Layer(**base, outputs={"output": x, "mask": TensorType("bool", x.dims[:-1])},
                         mask_out=Ref(decl.name, "mask"))
        if t in ("Dropout", "Activation"):
            return Layer(**base, outputs={"output": x}, mask_in=mask, mask_out=mask)
        if t == "Dense":
            feat = self.fixed_last(decl, x, "Dense")
            u = decl.config["units"]
            params = {"kernel": (feat, u), **({"bias": (u,)} if decl.config["use_bias"] else {})}
            return Layer(**base, outputs={"output": x.with_dims(*x.dims[:-1], u)}, params=params,
                         mask_in=mask, mask_out=mask)
        if t == "BatchNormalization":
            axis = decl.config["axis"]
            if not -x.rank <= axis < x.rank or axis in (0, -x.rank):
                raise self.fail(decl.path + ("axis",), f"expected an axis in 1..{x.rank - 1} or -{x.rank - 1}..-1 for input {x}, got {axis}")
            ch = x.dims[axis]
            if not isinstance(ch, int):
                raise self.fail(decl.path + ("axis",), f"BatchNormalization needs a fixed size on axis {axis}, got {ch!r} in {x}")
            params = {k: (ch,) for k in ("gamma", "beta", "moving_mean", "moving_variance")}
            return Layer(**base, outputs={"output": x}, params=params, mask_in=mask, mask_out=mask)
        if merge:
            return self.merge(decl, base, ins, types)
        if t == "Bidirectional":
            return self.bidirectional(decl, base, ins[0], x, mask)
        return self.recurrent(decl, base, ins, types, mask)

    def defined(self, ldef: LayerDef, decl: LayerDecl, base: dict, ins: list[Ref], types: list[TensorType],
                masks: list[Ref | None] | None = None) -> Layer:
        """A layer kind defined by a LayerDef (rnnc/layers/): its shape rule, then Keras's mask
        rule for it. `masks`: the inputs' masks when not the producers' (a wrapped layer)."""
        lo, hi = ldef.inputs
        if not lo <= len(ins) <= (hi if hi is not None else len(ins)):
            want = f"{lo}" if lo == hi else f"at least {lo}" if hi is None else f"{lo} to {hi}"
            raise self.fail(decl.path + ("input",), f"a {ldef.kind} layer takes {want} input(s), got {len(ins)}")
        for i, (r, ty) in enumerate(zip(ins, types)):
            allowed = ldef.dtypes if i == 0 else ldef.other_dtypes
            if ty.dtype not in allowed:
                raise self.fail(decl.path + ("input",), f"{ldef.kind} expects {' or '.join(allowed)} input, got "
                                f"{ty.dtype} from {r}" + (" (integer token ids need an Embedding first)"
                                                          if ty.dtype.startswith("int") else ""))
        masks = [self.mask_of(r) for r in ins] if masks is None else masks

        def fail(key: str | None, message: str) -> _Fail:
            return self.fail(decl.path + ((key,) if key else ()), message)

        def build_wrapped(step: list[TensorType]) -> Layer:
            inner: LayerDecl | None = decl.config.get("layer")
            if inner is None:    # refused by the loader
                raise Refused()
            step_ref = Ref(f"{decl.name}/step", "input")
            inner = replace(inner, name="layer")
            base_in = dict(name="layer", kind=inner.type, config=inner.config, inputs=(step_ref,), path=inner.path,
                           line=self.spec.source.line(inner.path))
            try:
                if inner.type in CONV_LSTM_LAYERS:
                    raise self.fail(inner.path + ("type",), f"{decl.type} around a recurrent layer ({inner.type}) is "
                                    "not supported: the recurrent layer already runs over time")
                if inner.type in LAYER_DEFS:
                    return self.defined(LAYER_DEFS[inner.type], inner, base_in, [step_ref], step, masks=[None])
                return self.layer(inner, [step_ref], types=step)
            except _Fail:
                raise Refused() from None

        ctx = InferCtx(name=decl.name, kind=ldef.kind, config=decl.config, types=types, refs=ins, masks=masks,
                       fail=fail, same_dim=lambda a, b, what: self.same_dim(a, b, decl, what),
                       build_wrapped=build_wrapped if ldef.wraps else None)
        try:
            res = ldef.infer(ctx)
        except Refused:
            raise _Fail() from None
        mask = masks[0]
        notes = res.notes
        mode = ldef.masking
        if mode == "infer":
            mode = {"pass": "pass", "none": "drop", "own": "own"}[res.mask_out]
            if res.consumes_mask and mode == "drop":
                mode = "consume"
        if "mask" in decl.config and not (ldef.masking == "consume" or (ldef.masking == "infer" and res.consumes_mask)):
            raise self.fail(decl.path + ("mask",), f"a {ldef.kind} layer does not read a mask (Keras 3's "
                            f"{ldef.kind} is not called with mask=...): remove `mask:`")
        mask_in = mask_out = None
        if mode == "pass":
            mask_in = mask_out = mask
        elif mode == "consume":
            mask_in = mask
        elif mode == "own":
            mask_in = mask if res.consumes_mask else None
            mask_out = Ref(decl.name, "mask")
        elif mask is not None:   # drop
            notes += (f"incoming mask dropped: Keras 3's {ldef.kind} does not support masking",)
        return Layer(**base, outputs=res.outputs, params=res.params, mask_in=mask_in, mask_out=mask_out,
                     input_masks=tuple(masks) if len(ins) > 1 else (), notes=notes, wrapped=res.wrapped)

    def check_sizes(self, decl: LayerDecl, layer: Layer) -> None:
        """Refuse sizes no model can have before anything is allocated: the weights are held in
        memory (MAX_PARAMS), and a value of one example (a state, a step value) is held per step."""
        total = 0
        for key, shape in layer.params.items():
            n = int(np.prod(shape, dtype=object))
            total += n
            if n > MAX_TENSOR:
                raise self.fail(decl.path, f"parameter {layer.name}/{key} of shape {shape} has {n:,} elements: "
                                f"expected at most {MAX_TENSOR:,} (2 GB of float32, the most one ONNX tensor holds)")
        self.params += total
        if self.params > MAX_PARAMS:
            raise self.fail(decl.path, f"the model reaches {self.params:,} parameters at layer {layer.name!r}: "
                            f"expected at most {MAX_PARAMS:,} in all (8 GB of float32, held in memory while compiling)")
        cells = [c for half in (layer.sublayers or (layer,)) for c in half.cells]
        for c in cells:
            shapes = [s for _, s in c.states] + ([n.shape[1:] for n in c.program.nodes if n.batched]
                                                 if c.custom else [])
            for shape in shapes:
                n = int(np.prod(shape, dtype=object))
                if n > MAX_VALUE:
                    raise self.fail(decl.path, f"a value of shape (batch, {', '.join(map(str, shape))}) in cell "
                                    f"{c.kind!r} has {n:,} elements per example: expected at most {MAX_VALUE:,}")

    def same_dim(self, a: Dim, b: Dim, decl: LayerDecl, what: str) -> bool:
        """Dims that must be equal: two different fixed sizes never are; where one is a name
        (as Keras's None), they must be equal at run time, which the runtime checks."""
        if a == b:
            return True
        if isinstance(a, int) and isinstance(b, int):
            return False
        self.equal_dims.append((a, b, f"layer {decl.name!r} needs {what} equal"))
        return True

    def expect_float(self, decl: LayerDecl, x: TensorType, r: Ref) -> None:
        if x.dtype != "float32":
            raise self.fail(decl.path + ("input",), f"{decl.type} expects float32 input, got {x.dtype} from {r} "
                            "(integer token ids need an Embedding first)")

    def fixed_last(self, decl: LayerDecl, x: TensorType, what: str) -> int:
        if x.rank < 2:
            raise self.fail(decl.path + ("input",), f"{what} expects an input of rank 2 or more, got {x}")
        feat = x.dims[-1]
        if not isinstance(feat, int):
            raise self.fail(decl.path + ("input",), f"{what} needs a fixed feature size (last dim), got {feat!r} in {x}")
        return feat

    MASK_KEY_LAYERS = ("LSTM", "GRU", "SimpleRNN", "RNN", "Bidirectional", "BatchNormalization", *CONV_LSTM_LAYERS)

    def explicit_mask(self, decl: LayerDecl, ins: list[Ref], types: list[TensorType]) -> Ref:
        """`mask: <reference>` (Keras's `layer(x, mask=m)`): the mask the layer gets instead of
        its input's; a bool (batch, time) tensor, a model input or a layer's `.mask`."""
        t, path, text = decl.type, decl.path + ("mask",), decl.config["mask"]
        ldef = LAYER_DEFS.get(t)
        takes = t in self.MASK_KEY_LAYERS or (ldef is not None and ldef.masking in ("consume", "infer")
                                              and ldef.inputs[1] == 1)
        if not takes:
            why = ("it makes its own mask" if t in ("Embedding", "Masking") else
                   "Keras 3 refuses a mask for a merge (it takes the inputs' masks)" if t in MERGE_LAYERS else
                   f"Keras 3's {t} is not called with mask=...; give the mask to the layer that reads it")
            raise self.fail(path, f"a {t} layer does not take `mask:`: {why}")
        name, _, port = text.partition(".")
        if port == "mask" and name in self.layers and "mask" not in self.layers[name].outputs:
            ref = self.layers[name].mask_out   # a layer passing its input's mask on
            if ref is None:
                raise self.fail(path, f"{text!r}: layer {name!r} carries no mask")
        else:
            refs = self.resolve(text, path)
            if len(refs) != 1:
                raise self.fail(path, f"{text!r} names {len(refs)} tensors: expected one bool (batch, time) mask")
            ref = refs[0]
        ty, x = self.type_of(ref), types[0]
        if ty.dtype != "bool" or ty.rank != 2:
            raise self.fail(path, f"{text!r} is {ty.dtype} {ty}: expected a bool (batch, time) mask (a model "
                            "input with dtype: bool, or a layer's `.mask`)")
        if x.rank < 3 or not (self.same_dim(ty.dims[0], x.dims[0], decl, "the batch of its input and mask")
                              and self.same_dim(ty.dims[1], x.dims[1], decl, "the time of its input and mask")):
            raise self.fail(path, f"mask {text!r} of shape {ty} does not fit the input {x}: expected (batch, time) "
                            "of a (batch, time, features) input")
        return ref

    def merge(self, decl: LayerDecl, base: dict, ins: list[Ref], types: list[TensorType]) -> Layer:
        """The merge layers (Keras 3, layers/merging): their output type, and their mask by
        the one rule in rnnc/ir/semantics.py (merged_mask_rule)."""
        t = decl.type
        for r, ty in zip(ins, types):
            self.expect_float(decl, ty, r)
        first = types[0]
        masks = [self.mask_of(r) for r in ins]
        if t in ("Subtract", "Dot") and len(ins) != 2:
            raise self.fail(decl.path + ("input",), f"a {t} layer takes exactly 2 inputs, got {len(ins)}")
        if t == "Dot":
            out = self.dot_type(decl, types)
        elif t in ELEMENTWISE_MERGES:
            out = self.broadcast_type(decl, ins, types, masks)
        else:
            if any(ty.rank != first.rank for ty in types):
                raise self.fail(decl.path + ("input",), f"{t} expects inputs of the same rank, got "
                                f"{', '.join(map(str, types))}")
            axis = decl.config["axis"]
            if not -first.rank <= axis < first.rank or axis % first.rank == 0:
                raise self.fail(decl.path + ("axis",), f"expected an axis in 1..{first.rank - 1} or negative, got {axis}")
            ax = axis % first.rank
            dims: list[Dim] = list(first.dims)
            for ty in types[1:]:
                for i, (a, b) in enumerate(zip(dims, ty.dims)):
                    if i != ax and not self.same_dim(a, b, decl, f"axis {i} of its inputs"):
                        raise self.fail(decl.path + ("input",), f"Concatenate expects equal dims except on axis {axis}, "
                                        f"got {', '.join(map(str, types))}")
            sizes = [ty.dims[ax] for ty in types]
            fixed = [s for s in sizes if isinstance(s, int)]
            dims[ax] = sum(fixed) if len(fixed) == len(sizes) else "+".join(map(str, sizes))
            out = first.with_dims(*dims)
        outs = {"output": out}
        rule = merged_mask_rule(t, [m is not None for m in masks],
                                t != "Concatenate" or decl.config["axis"] % first.rank == first.rank - 1,
                                len(set(masks)) == 1)
        mask_out = None
        notes: tuple[str, ...] = ()
        if rule == "passthrough":
            mask_out = masks[0]
        elif rule is not None:
            outs["mask"] = TensorType("bool", out.dims[:-1])
            mask_out = Ref(decl.name, "mask")
        elif t == "Dot" and any(m is not None for m in masks):
            notes = ("incoming masks not applied and not passed on: Keras 3's Dot ignores them",)
        return Layer(**base, outputs=outs, mask_out=mask_out, input_masks=tuple(masks),
                     mask_merge=rule if rule != "passthrough" else None, notes=notes)

    def broadcast_type(self, decl: LayerDecl, ins: list[Ref], types: list[TensorType],
                       masks: list[Ref | None]) -> TensorType:
        """Keras 3's elementwise merges (Merge.build / call): inputs of lower rank get size-1
        dims inserted at axis 1 until the ranks agree, then a size-1 dim broadcasts against a
        larger one (`_compute_elemwise_op_output_shape`); the batch dims must be equal."""
        t = decl.type
        rank = max(ty.rank for ty in types)
        if any(ty.rank != rank for ty in types) and any(m is not None for m in masks):
            raise self.fail(decl.path + ("input",), f"{t} of inputs of different ranks "
                            f"({', '.join(map(str, types))}) with a mask is not supported: give the inputs the "
                            "same rank (Keras would broadcast each mask against its reshaped input)")
        shaped = [(ty.dims[:1] + (1,) * (rank - ty.rank) + ty.dims[1:]) for ty in types]
        dims: list[Dim] = list(shaped[0])
        for d in shaped[1:]:
            for i, (a, b) in enumerate(zip(dims, d)):
                if i > 0 and (a == 1 or b == 1):
                    dims[i] = b if a == 1 else a
                elif not self.same_dim(a, b, decl, f"axis {i} of its inputs"):
                    raise self.fail(decl.path + ("input",), f"{t} expects inputs of the same shape or with size 1 "
                                    f"where they differ (Keras broadcasts those), got "
                                    f"{', '.join(map(str, types))}: axis {i} is {a} and {b}")
                elif isinstance(b, int):
                    dims[i] = b
        return types[0].with_dims(*dims)

    def dot_type(self, decl: LayerDecl, types: list[TensorType]) -> TensorType:
        """Keras 3's Dot (layers/merging/dot.py batch_dot): the dims of x but the batch and
        axes[0], then those of y but the batch and axes[1]; (batch, 1) when nothing is left."""
        x, y = types
        axes = dot_axes(decl.config["axes"], x.rank, y.rank)
        for ty in types:
            if not 2 <= ty.rank <= 3:
                raise self.fail(decl.path + ("input",), f"Dot takes inputs of rank 2 or 3 ((batch, features) or "
                                f"(batch, time, features)), got {', '.join(map(str, types))}")
        for a, ty in zip(axes, types):
            if not 1 <= a < ty.rank:
                raise self.fail(decl.path + ("axes",), f"expected axes in 1..{ty.rank - 1} or negative for input "
                                f"{ty} (not the batch axis 0), got {decl.config['axes']}")
        if not self.same_dim(x.dims[0], y.dims[0], decl, "the batch of its inputs"):
            raise self.fail(decl.path + ("input",), f"Dot expects inputs of the same batch size, got {x} and {y}")
        if not self.same_dim(x.dims[axes[0]], y.dims[axes[1]], decl, "the sizes of its dot axes"):
            raise self.fail(decl.path + ("axes",), f"Dot axes {decl.config['axes']}: axis {axes[0]} of {x} "
                            f"({x.dims[axes[0]]}) and axis {axes[1]} of {y} ({y.dims[axes[1]]}) differ")
        dims = [x.dims[0], *(d for i, d in enumerate(x.dims) if i not in (0, axes[0])),
                *(d for i, d in enumerate(y.dims) if i not in (0, axes[1]))]
        return x.with_dims(*dims, *([1] if len(dims) == 1 else []))

    # -- recurrent layers ---------------------------------------------------------
    def cells_of(self, decl: LayerDecl, shapes: list[tuple]) -> tuple[Cell, ...]:
        """The layer's cells, each bound to the per-step shapes it receives."""
        if decl.type in CONV_LSTM_LAYERS:
            return (self.conv_lstm_cell(decl, shapes),)
        if decl.type in CELL_OF_LAYER:
            decls = [CellDecl(CELL_OF_LAYER[decl.type], {k: decl.config[k] for k in decl.config
                                                         if k in _cell_keys(CELL_OF_LAYER[decl.type])}, decl.path)]
            stacked = False
        else:
            decls = list(decl.config["cell"])
            stacked = isinstance(self.spec.source.data_at(decl.path + ("cell",)), list)
        cells = []
        for i, cd in enumerate(decls):
            prefix = f"cells/{i}/" if stacked else ""
            if i > 0 and len(shapes) != 1:
                raise self.fail(cd.path, f"cell {i} of a stack takes the previous cell's output, which has "
                                f"{len(shapes)} parts: only the last cell may have several outputs")
            kind = CELL_TYPES.get(cd.type)
            if kind is None:
                cell = self.custom_cell(decl, cd, shapes, prefix)
            else:
                if len(shapes) == 1 and len(shapes[0]) == 1 and not isinstance(shapes[0][0], int):
                    raise self.fail(decl.path + ("input",), f"{decl.type} needs a fixed feature size (last dim), "
                                    f"got {shapes[0][0]!r}")
                if len(shapes) != 1 or len(shapes[0]) != 1:
                    where = "the input" if i == 0 else "the previous cell's output"
                    raise self.fail(decl.path + ("input",) if i == 0 else cd.path,
                                    f"{cd.type} takes one (batch, time, features) input with a fixed feature size, "
                                    f"got per-step shape(s) {', '.join(str(list(s)) for s in shapes)} from {where}")
                cdef = CELLS[kind]
                u = cd.config["units"]
                cell = Cell(kind, u, dict(cd.config), shapes[0][0], tuple((n, (u,)) for n in cdef.state_names), u,
                            cdef.param_shapes(u, shapes[0][0], cd.config), prefix)
            cells.append(cell)
            shapes = list(cell.output_shapes)
        return tuple(cells)

    def conv_lstm_cell(self, decl: LayerDecl, shapes: list[tuple]) -> Cell:
        """ConvLSTM1D/2D/3D's cell (Keras 3's ConvLSTMCell): per step a (spatial..., channels)
        input, all fixed (Keras requires static spatial sizes); states (out_spatial..., filters)
        by the input convolution's arithmetic (the recurrent one keeps them: stride 1, same)."""
        cfg, rank = decl.config, CONV_LSTM_LAYERS[decl.type]
        names = ("steps",) if rank == 1 else ("rows", "cols") if rank == 2 else ("dim1", "dim2", "dim3")
        if len(shapes) != 1 or len(shapes[0]) != rank + 1:
            got = ", ".join(str(["batch", "time", *s]) for s in shapes)
            raise self.fail(decl.path + ("input",), f"{decl.type} expects a (batch, time, {', '.join(names)}, "
                            f"channels) input, got {got}")
        if not all(isinstance(d, int) for d in shapes[0]):
            raise self.fail(decl.path + ("input",), f"{decl.type} needs fixed spatial sizes and channel count "
                            f"(Keras's ConvLSTM layers only support static spatial shapes), got per-step shape "
                            f"{list(shapes[0])}")
        *spatial, cin = shapes[0]
        k, s, d, padding = cfg["kernel_size"], cfg["strides"], cfg["dilation_rate"], cfg["padding"]
        if max(s) > 1 and max(d) > 1:
            raise self.fail(decl.path + ("dilation_rate",), f"strides > 1 cannot be combined with dilation_rate > 1 "
                            f"(as in Keras): got strides={list(s)}, dilation_rate={list(d)}")
        for key in ("activation", "recurrent_activation"):
            if cfg[key] in ACROSS_AXIS:
                raise self.fail(decl.path + (key,), f"{key} {cfg[key]!r} is not supported in {decl.type}: rnnc's "
                                "ConvLSTM applies element-wise activations (its time loop keeps the gates "
                                "channels-first)")
        out = []
        for i, (n, kk, ss, dd) in enumerate(zip(spatial, k, s, d)):
            span = (kk - 1) * dd + 1
            if padding == "valid" and n < span:
                raise self.fail(decl.path + ("input",), f"{decl.type} with padding 'valid' needs at least {span} "
                                f"{names[i]} (the kernel spans {span}), got {n}")
            out.append(out_len(n, kk, ss, dd, padding))
        f = cfg["filters"]
        ccfg = {key: cfg[key] for key in conv_lstm_keys(rank)}
        ccfg["input_pads"] = tuple(pads_of(n, kk, ss, dd, padding) for n, kk, ss, dd in zip(spatial, k, s, d))
        ccfg["recurrent_pads"] = tuple(pads_of(n, kk, 1, 1, "same") for n, kk in zip(out, k))
        state = (*out, f)
        return Cell("ConvLSTM", f, ccfg, cin, (("h", state), ("c", state)), f,
                    CELLS["ConvLSTM"].param_shapes(f, cin, ccfg))

    def custom_cell(self, decl: LayerDecl, cd: CellDecl, shapes: list[tuple], prefix: str) -> Cell:
        try:
            bound = bind(cd.type, self.spec.cells[cd.type], cd.config, [tuple(s) for s in shapes])
        except CellDefError as e:
            path = (cd.path + e.path[1:] if e.path[:1] == ("@cell",) else
                    decl.path + ("input",) if e.path[:1] == ("@input",) else e.path)
            if e.step_pos is None:
                raise self.fail(path, e.message) from None
            raise self.step_error(path, e.message, e.step_pos, f"layer {self.current!r}") from None
        for path, message, pos in bound.warnings:
            src = self.spec.source
            line, col = self.step_location(path, pos) if pos else (src.line(path), None)
            where = f"{src.file}:{line}: " if line else ""
            self.cell_notes.append(f"warning: {where}{format_path(path)}: "
                                   + (f"column {col + 1}: " if col is not None else "") + message)
        out = bound.outputs[0][1]
        return Cell(cd.type, out[0] if len(out) == 1 else 0, dict(bound.attrs), 0, bound.states,
                    out[0] if len(out) == 1 else 0, bound.params, prefix, inputs=bound.inputs, outputs=bound.outputs,
                    program=bound.program, inits=bound.inits)

    def step_error(self, path: tuple, message: str, pos: tuple[int, int], used_by: str) -> _Fail:
        """A step problem, located in the file: line and column of the offending text."""
        src = self.spec.source
        line, col = self.step_location(path, pos)
        self.problems.append(Problem(f"column {col + 1}: {message} (in the step, as used by {used_by})",
                                     file=src.file, line=line, path=format_path(path)))
        return _Fail()

    def step_location(self, path: tuple, pos: tuple[int, int]) -> tuple[int, int]:
        """(line, 0-based column) in the file of a position (line, col) in the step text at `path`."""
        src = self.spec.source
        line0, col0 = src.starts.get(path, (src.line(path) or 1, 0))
        line = line0 + pos[0] - 1
        if pos[0] == 1 and col0:
            return line, col0 + pos[1]
        text = src.text.splitlines()[line - 1] if 0 < line <= len(src.text.splitlines()) else ""
        return line, len(text) - len(text.lstrip()) + pos[1]

    def recurrent(self, decl: LayerDecl, base: dict, refs: list[Ref], types: list[TensorType], mask: Ref | None,
                  *, initial: bool = True) -> Layer:
        cfg = decl.config
        for r, x in zip(refs, types):
            self.expect_float(decl, x, r)
            if x.rank < 3:
                raise self.fail(decl.path + ("input",), f"{decl.type} expects a (batch, time, features) input, "
                                f"got {x} from {r}")
        x = types[0]
        for r, other in zip(refs[1:], types[1:]):
            if other.dims[:2] != x.dims[:2]:
                raise self.fail(decl.path + ("input",), f"the inputs of {decl.name!r} must share batch and time "
                                f"dims: {x} from {refs[0]} and {other} from {r}")
        if cfg.get("stateful"):
            if not isinstance(x.dims[0], int) and STATEFUL_BATCH.get() != "symbolic":
                raise self.fail(decl.path + ("stateful",), f"stateful: true needs a fixed batch size, got {x.dims[0]!r} "
                                "in the input shape: set the input's first dim to an integer (Keras: batch_size=...), "
                                "or compile the serving form (rnnc export triton SPEC, rnnc.serve.compile_serving)")
            if cfg.get("initial_state") is not None:
                raise self.fail(decl.path + ("initial_state",), "initial_state cannot be combined with stateful: true: "
                                "a stateful layer starts from its carried state (set it with Session.states)")
        self.cell_notes = []
        cells = self.cells_of(decl, [t.dims[2:] for t in types])
        batch, time = x.dims[0], x.dims[1]
        outs: dict[str, TensorType] = {}
        shapes = cells[-1].output_shapes
        for k, shape in enumerate(shapes):
            port = "output" if len(shapes) == 1 else f"output_{k}"
            outs[port] = TensorType("float32", (batch, time, *shape) if cfg["return_sequences"] else (batch, *shape))
        ports = _state_ports(cells)
        all_states = tuple((port, (batch, *shape)) for port, (_, shape) in zip(ports, [s for c in cells for s in c.states]))
        if cfg["return_state"]:
            for port, dims in all_states:
                outs[port] = TensorType("float32", dims)
        params: dict[str, tuple[int, ...]] = {}
        for c in cells:
            params.update({c.prefix + k: s for k, s in c.params.items()})
        init: tuple[Ref, ...] = ()
        if initial and cfg.get("initial_state") is not None:
            init = self.initial_states(decl, cfg["initial_state"], all_states)
        notes = tuple(f"{k}={cfg[k]} ignored at inference" for k in ("dropout", "recurrent_dropout")
                      if cfg.get(k)) + tuple(
            f"cell {i}: {k}={c.config[k]} ignored at inference" for i, c in enumerate(cells)
            for k in ("dropout", "recurrent_dropout") if decl.type == "RNN" and c.config.get(k)) + tuple(
            dict.fromkeys(self.cell_notes))
        mask_out = mask if cfg["return_sequences"] else None
        if init and mask is not None and "mask" not in cfg:
            # Keras 3 (Layer.__call__) fills in `mask` only for a call with one tensor argument:
            # a layer called with initial_state runs unmasked, though its output keeps the mask
            # (a mask given explicitly, `mask:`, is applied).
            notes += ("incoming mask not applied: Keras 3 does not pass a mask to a recurrent layer "
                      "called with initial_state",)
            mask = None
        rec = Recurrence(go_backwards=bool(cfg["go_backwards"]), return_sequences=bool(cfg["return_sequences"]),
                         zero_output_for_mask=bool(cfg["zero_output_for_mask"]))
        return Layer(**base, outputs=outs, params=params, initial_state=init, mask_in=mask,
                     mask_out=mask_out, cells=cells, notes=notes, time=time, states=all_states, recurrence=rec)

    def initial_states(self, decl: LayerDecl, texts: tuple[str, ...], states: tuple) -> tuple[Ref, ...]:
        """`initial_state` references, checked against the states (port, dims) they start."""
        path = decl.path + ("initial_state",)
        init = tuple(self.resolve_all(texts, path))
        if len(init) != len(states):
            raise self.fail(path, f"expected {len(states)} initial state tensor(s) "
                            f"({', '.join(p for p, _ in states)}), got {len(init)}")
        for i, (ref, (_, exp)) in enumerate(zip(init, states)):
            ty = self.type_of(ref)
            if ty.dtype != "float32" or ty.rank != len(exp) or ty.dims[1:] != exp[1:] or \
                    not self.same_dim(ty.dims[0], exp[0], decl, f"the batch of initial state {i} and of the input"):
                raise self.fail(path, f"initial state {i} ({ref}): expected float32 {TensorType('float32', exp)}, "
                                f"got {ty.dtype} {ty}")
        return init

    def bidirectional(self, decl: LayerDecl, base: dict, r: Ref, x: TensorType, mask: Ref | None) -> Layer:
        cfg = decl.config
        inner: LayerDecl | None = cfg["layer"]
        if inner is None:
            raise _Fail()
        back_decl: LayerDecl | None = cfg.get("backward_layer")
        if back_decl is None:
            # Keras 3 (layers/rnn/bidirectional.py): the backward half is a copy of the layer
            # with go_backwards set to True (Keras 2 flipped it instead).
            if inner.config["go_backwards"]:
                raise self.fail(inner.path + ("go_backwards",), "a Bidirectional layer with go_backwards: true "
                                "needs a backward_layer with go_backwards: false (the default backward half is "
                                "the layer with go_backwards: true, which would read the same way, as in Keras 3)")
            back_decl = replace(inner, config={**inner.config, "go_backwards": True}, path=inner.path)
        else:
            for k in ("return_sequences", "return_state"):
                if back_decl.config[k] != inner.config[k]:
                    raise self.fail(back_decl.path + (k,), f"backward_layer must have the same {k} as layer "
                                    f"({inner.config[k]}), got {back_decl.config[k]}")
            if back_decl.config["go_backwards"] == inner.config["go_backwards"]:
                raise self.fail(back_decl.path + ("go_backwards",), "backward_layer must have go_backwards opposite "
                                f"to layer's (expected {not inner.config['go_backwards']})")
            if back_decl.config["stateful"] != inner.config["stateful"]:
                raise self.fail(back_decl.path + ("stateful",), f"backward_layer must have the same stateful as "
                                f"layer ({inner.config['stateful']}), got {back_decl.config['stateful']}")
        fwd = self.recurrent(inner, dict(base, name="forward", kind=inner.type, config=inner.config, path=inner.path),
                             [r], [x], mask, initial=False)
        bwd = self.recurrent(back_decl, dict(base, name="backward", kind=back_decl.type, config=back_decl.config,
                                             path=back_decl.path), [r], [x], mask, initial=False)
        # Keras 3: both halves output zeros at masked steps when the sequence is returned, and
        # the backward half's sequence is flipped back to input order
        zero = bidirectional_zero_output(inner.config["return_sequences"])
        fwd = replace(fwd, recurrence=replace(fwd.recurrence, zero_output_for_mask=zero))
        bwd = replace(bwd, recurrence=replace(bwd.recurrence, zero_output_for_mask=zero, reverse_output=True))
        if "output" not in fwd.outputs or "output" not in bwd.outputs:
            raise self.fail(decl.path + ("layer",), "Bidirectional needs a layer with one output per step: "
                            "its cell has several")
        seqs = inner.config["return_sequences"]
        f_out, b_out = fwd.outputs["output"], bwd.outputs["output"]
        mode = cfg["merge_mode"]
        outs: dict[str, TensorType] = {}
        if mode is None:
            outs["forward"], outs["backward"] = f_out, b_out
        elif mode == "concat":
            fu, bu = f_out.dims[-1], b_out.dims[-1]
            assert isinstance(fu, int) and isinstance(bu, int), "recurrent outputs have fixed feature sizes"
            outs["output"] = f_out.with_dims(*f_out.dims[:-1], fu + bu)
        else:
            if f_out.dims[-1] != b_out.dims[-1]:
                raise self.fail(decl.path + ("merge_mode",), f"merge_mode {mode} needs halves of the same size, "
                                f"got {f_out} and {b_out}")
            outs["output"] = f_out
        if inner.config["return_state"]:
            for half, lay in (("forward", fwd), ("backward", bwd)):
                for p in lay.state_ports:
                    outs[f"{half}_{p}"] = lay.outputs[p]
        params = {f"forward/{k}": s for k, s in fwd.params.items()}
        params.update({f"backward/{k}": s for k, s in bwd.params.items()})
        # stateful (Keras 3): each half carries its own states from call to call; the backward
        # half reads each chunk from its end, starting from the states the previous chunk left
        states = tuple((f"{half.name}_{p}", d) for half in (fwd, bwd) for p, d in half.states)
        notes = tuple(dict.fromkeys(fwd.notes + bwd.notes))
        init: tuple[Ref, ...] = ()
        if cfg.get("initial_state") is not None:   # Keras: the forward half's states, then the backward's
            if inner.config["stateful"]:
                raise self.fail(decl.path + ("initial_state",), "initial_state cannot be combined with stateful: "
                                "true: a stateful layer starts from its carried state (set it with Session.states)")
            init = self.initial_states(decl, cfg["initial_state"], states)
            if "mask" in cfg:      # given explicitly: applied (Keras passes it on to both halves)
                pass
            elif mask is not None:   # as for a recurrent layer (Layer.__call__ with two tensor arguments)
                notes += ("incoming mask not applied: Keras 3 does not pass a mask to a layer called with "
                          "initial_state",)
        return Layer(**base, outputs=outs, params=params, initial_state=init,
                     mask_in=None if init and "mask" not in cfg else mask,
                     mask_out=mask if seqs else None, sublayers=(fwd, bwd), notes=notes, time=x.dims[1],
                     states=states)


# The serving form (rnnc/serve/serving.py, docs/spec.md "Stateful layers"): "symbolic" lets a
# stateful layer take a symbolic batch, so that its states are `(batch, ...)` inputs and
# outputs a server batches across sequences; "fixed" (the default) is Keras's rule.
STATEFUL_BATCH: ContextVar[str] = ContextVar("rnnc_stateful_batch", default="fixed")

def _cell_keys(cell_type: str) -> set[str]:
    return set(CELL_KEYS[cell_type])


def _state_ports(cells: tuple[Cell, ...]) -> list[str]:
    return state_ports([[n for n, _ in c.states] for c in cells])


def build_graph(spec: Spec, *, size_limits: bool = True) -> Graph:
    """Spec → typed IR graph. Raises SpecError listing every problem. size_limits=False skips
    the bounds on parameter and value sizes (they bound what compiling holds in memory; `rnnc
    summary` only counts)."""
    return _Builder(spec, size_limits=size_limits).build()
