"""Choose each layer's lowering and record why (shown by `inspect`).

auto: the native op where it is exact, else the Loop; `unroll: true` with a fixed time
length unrolls. native: an error that says why when it cannot be exact. loop / unroll:
as asked."""
from __future__ import annotations

from dataclasses import replace
from typing import Callable

from ..errors import LoweringError, Problem
from ..ir.graph import Graph, Layer
from ..spec.yamlsrc import format_path
from .manager import PassResult

ONNX_OPS = {"LSTM": "LSTM", "GRU": "GRU", "SimpleRNN": "RNN"}


class ChooseLowering:
    name = "choose-lowering"

    def __init__(self, *, supports: Callable[[str, str, Layer, str], str | None],
                 fusable: Callable[[Layer], bool], target: str = "ort", control: str = "scan"):
        # supports(kind, strategy, layer, target) -> None or why not: the lowering rules'
        # own checks, handed in so that passes stay free of onnx. control: the ONNX op of
        # a time loop (scan or loop).
        self.supports, self.fusable, self.target, self.control = supports, fusable, target, control

    def run(self, graph: Graph) -> PassResult:
        layers = {}
        problems: list[Problem] = []
        for layer in graph.layers.values():
            if not (layer.cells or layer.sublayers):
                layers[layer.name] = replace(layer, lowering="plain", reason="")
                continue
            kind = "Bidirectional" if layer.sublayers else "recurrent"
            cfg = layer.sublayers[0].config if layer.sublayers else layer.config
            requested, unroll = cfg["lowering"], cfg["unroll"]
            def fail(message: str) -> None:
                problems.append(Problem(f"{message} (layer {layer.name!r})", file=graph.file, line=layer.line,
                                        path=format_path(layer.path)))
                layers[layer.name] = layer

            if requested == "auto" and unroll:
                requested = "unroll"
                if not isinstance(layer.time, int):
                    fail(f"unroll: true needs a fixed time length, got {layer.time!r}; fix the time dim in `inputs` "
                         "or drop `unroll`")
                    continue
            if requested == "auto":
                why = self.supports(kind, "native", layer, self.target)
                if why is None:
                    layers[layer.name] = replace(layer, lowering="native", reason=self._native_reason(layer))
                else:
                    layers[layer.name] = replace(layer, lowering="loop", reason=f"Loop: {why}{self._control(layer)}")
                continue
            why = self.supports(kind, requested, layer, self.target)
            if why is not None:
                fail(f"lowering: {requested} cannot be exact: {why}. Use lowering: auto (it picks an exact lowering) "
                     "or loop")
                continue
            reason = (self._native_reason(layer) if requested == "native" else f"Loop: requested{self._control(layer)}"
                      if requested == "loop" else f"unroll: requested, time = {layer.time}")
            layers[layer.name] = replace(layer, lowering=requested, reason=reason)
        if problems:   # every layer's, at once
            raise LoweringError(problems=problems)
        out = replace(graph, layers=layers)
        return PassResult(out, True)

    def _control(self, layer: Layer) -> str:
        first = (layer.sublayers[0] if layer.sublayers else layer).cells[0]
        if layer.mask_in is None and not first.reads_input:    # the decision of rnnc/lower/loop.py
            return "; as ONNX Loop (the step reads no input for a Scan to scan)" if self.control == "scan" else ""
        if self.control == "scan":
            return "; as ONNX Scan (faster than Loop on ONNX Runtime)"
        return ""

    def _native_reason(self, layer: Layer) -> str:
        if layer.sublayers:
            op = ONNX_OPS[layer.sublayers[0].cells[0].kind] if len(layer.sublayers[0].cells) == 1 else "ops"
            text = (f"native: one ONNX {op} op, direction=bidirectional" if self.fusable(layer)
                    else "native: one ONNX op per half")
        else:
            ops = [ONNX_OPS[c.kind] for c in layer.cells]
            text = f"native: ONNX {ops[0]} op" if len(ops) == 1 else f"native: {len(ops)} stacked ONNX ops ({', '.join(ops)})"
        if layer.mask_in is not None:
            text += ("; mask: right-padded batches run it with sequence_lens, others the exact Loop "
                     "(checked per batch at run time)")
        return text
