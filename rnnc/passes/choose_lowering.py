"""Choose each layer's lowering: one frozen Plan per layer (rnnc/ir/plan.py).

A layer no model output depends on is `unused`: nothing is emitted for it (Keras leaves it
out of the model too).
auto: the native op where it is exact, else a time loop; `unroll: true` with a fixed time
length unrolls. native: an error that says why when it cannot be exact. loop / unroll: as
asked. The time loop is an ONNX Scan under control "scan" (the default) unless the step reads
no input (nothing to scan: a Loop), and a Loop under control "loop". Every decision the
lowering rules act on is a field of the plan; they do not decide again."""
from __future__ import annotations

from dataclasses import replace
from typing import Callable

from ..errors import LoweringError, Problem
from ..ir.graph import Cell, Graph, Layer
from ..ir.plan import PLAIN, UNUSED, Plan
from ..spec.yamlsrc import format_path
from .manager import PassResult, no_plans

ONNX_OPS = {"LSTM": "LSTM", "GRU": "GRU", "SimpleRNN": "RNN"}
CONTROLS = ("scan", "loop")

# supports(kind, strategy, layer, target) -> None when the lowering rule (kind, strategy) is
# exact for the layer on the target, else why not: the rules' own checks, handed in so that
# the passes stay free of onnx.
Supports = Callable[[str, str, Layer, str], "str | None"]


def fusable(layer: Layer) -> bool:
    """A Bidirectional whose halves are one built-in cell each, of the same kind and config
    but for direction: one ONNX op with direction=bidirectional."""
    fwd, bwd = layer.sublayers
    if len(fwd.cells) != 1 or len(bwd.cells) != 1 or fwd.cells[0].custom or bwd.cells[0].custom:
        return False
    cf, cb = fwd.cells[0], bwd.cells[0]
    rf, rb = fwd.recurrence, bwd.recurrence
    return (rf is not None and rb is not None and not rf.go_backwards and rb.go_backwards
            and cf.kind == cb.kind and cf.units == cb.units
            and {k: v for k, v in cf.config.items() if "dropout" not in k}
            == {k: v for k, v in cb.config.items() if "dropout" not in k})


def time_loop(layer: Layer, control: str) -> tuple[str, bool]:
    """(the ONNX op of the layer's time loop, whether it is a Loop only because the step reads
    no input). A Scan hands the body row t of each scanned tensor, so it needs one: the input
    projection or the mask."""
    first = (layer.sublayers[0] if layer.sublayers else layer).cells[0]
    if control == "loop":
        return "loop", False
    if layer.mask_in is None and not first.reads_input:
        return "loop", True
    return "scan", False


class ChooseLowering:
    name = "choose-lowering"
    # it plans the steps they leave; a recognized custom cell runs as the native op
    after = ("reassociate-sums", "sink-slices", "hoist-input-projection", "recognize-builtins")

    def precondition(self, graph: Graph) -> str | None:
        return no_plans(graph)

    def __init__(self, *, supports: Supports, target: str = "ort", control: str = "scan"):
        if control not in CONTROLS:
            raise ValueError(f"control {control!r}: expected one of {', '.join(CONTROLS)}")
        self.supports, self.target, self.control = supports, target, control

    def run(self, graph: Graph) -> PassResult:
        layers = {}
        problems: list[Problem] = []
        unused = set(graph.unused_layers())
        for layer in graph.layers.values():
            if layer.name in unused:
                layers[layer.name] = replace(layer, plan=UNUSED)
                continue
            if not (layer.cells or layer.sublayers):
                layers[layer.name] = replace(layer, plan=PLAIN)
                continue
            try:
                layers[layer.name] = replace(layer, plan=self.plan(graph, layer))
            except _Refused as e:
                problems.append(Problem(f"{e} (layer {layer.name!r})", file=graph.file, line=layer.line,
                                        path=format_path(layer.path)))
                layers[layer.name] = layer
        if problems:   # every layer's, at once
            raise LoweringError(problems=problems)
        return PassResult(replace(graph, layers=layers), True)

    def plan(self, graph: Graph, layer: Layer) -> Plan:
        kind = "Bidirectional" if layer.sublayers else "recurrent"
        cfg = layer.sublayers[0].config if layer.sublayers else layer.config
        requested, unroll = cfg["lowering"], cfg["unroll"]
        masked = layer.mask_in is not None
        strategy = requested
        if requested == "auto" and unroll:
            strategy = "unroll"
            if not isinstance(layer.time, int):
                raise _Refused(f"unroll: true needs a fixed time length, got {layer.time!r}; fix the time dim in "
                               "`inputs` or drop `unroll`")
        why = "requested" if requested != "auto" or unroll else ""
        if strategy == "auto":
            not_native = self.supports(kind, "native", layer, self.target)
            strategy = "native" if not_native is None else "loop"
            why = not_native or ""
        else:
            cannot = self.supports(kind, strategy, layer, self.target)
            if cannot is not None:
                raise _Refused(f"lowering: {strategy} cannot be exact: {cannot}. Use lowering: auto (it picks an "
                               "exact lowering) or loop")
        loop_op, scan_free = time_loop(layer, self.control)
        if strategy == "unroll":
            return Plan("unroll", requested=requested, masked=masked, unroll_steps=layer.time, why=why)
        if strategy == "loop":
            return Plan("loop", requested=requested, time_loop=loop_op, scan_free=scan_free, masked=masked, why=why)
        halves = layer.sublayers or (layer,)
        rec = "; ".join(dict.fromkeys(c.recognized.summary for half in halves for c in half.cells if c.recognized))
        if layer.sublayers:
            fused = fusable(layer)
            ops = ((ONNX_OPS[layer.sublayers[0].cells[0].kind],) if fused else
                   tuple(onnx_op(c) for half in layer.sublayers for c in half.cells))
            return Plan("native", requested=requested, native_ops=ops, fused=fused, per_half=not fused,
                        masked=masked, time_loop=self.control if masked else None, recognized=rec)
        return Plan("native", requested=requested, native_ops=tuple(onnx_op(c) for c in layer.cells),
                    masked=masked, time_loop=self.control if masked else None, recognized=rec)


def onnx_op(cell: Cell) -> str:
    """The ONNX op of a cell planned native: a built-in's, or the one a custom cell was proved
    to be (rnnc/passes/recognize.py)."""
    return cell.recognized.op if cell.recognized is not None else ONNX_OPS[cell.kind]


class _Refused(Exception):
    """A layer's requested lowering cannot be exact (collected into one LoweringError)."""
