"""Choose each layer's lowering: one frozen Plan per layer (rnnc/ir/plan.py).

A layer no model output depends on is `unused`: nothing is emitted for it (Keras leaves it
out of the model too).
auto: the fastest exact candidate (native op, time loop, and unroll where the time length is
fixed, up to UNROLL_MAX_STEPS) by the cost model for the provider the model targets
(rnnc/passes/cost_model.py; on CUDA, and where the model cannot cost a layer: the native op
where it is exact, else a time loop), or as `compile --tune` measured them (`overrides`); the
plan records the candidates and their times. Only exact candidates are considered (the
lowering rules' `supports`). `unroll: true` with a fixed time length unrolls. native: an error
that says why when it cannot be exact. loop / unroll: as asked. The time loop is an ONNX Scan under control "scan" (the default) unless the step reads
no input (nothing to scan: a Loop), and a Loop under control "loop". Every decision the
lowering rules act on is a field of the plan; they do not decide again."""
from __future__ import annotations

from dataclasses import replace
from typing import Callable

from ..errors import LoweringError, Problem
from ..ir.graph import Cell, Graph, Layer
from ..ir.plan import PLAIN, UNUSED, Plan
from ..spec.yamlsrc import format_path
from .cost_model import UNROLL_MAX_STEPS, CostModel, pick
from .manager import PassResult, no_plans

ONNX_OPS = {"LSTM": "LSTM", "GRU": "GRU", "SimpleRNN": "RNN"}
CONTROLS = ("scan", "loop")

# supports(kind, strategy, layer, target) -> None when the lowering rule (kind, strategy) is
# exact for the layer on the target, else why not: the rules' own checks, handed in so that
# the passes stay free of onnx.
Supports = Callable[[str, str, Layer, str], "str | None"]
# compile --tune's choices: layer -> (strategy, ((candidate, ms), ...), cost_source, cost_note)
Override = tuple[str, tuple[tuple[str, float], ...], str, str]
COSTS = ("model", "native")   # cost="native": auto is the native op wherever exact (no cost model)


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

    def __init__(self, *, supports: Supports, target: str = "ort", control: str = "scan", provider: str = "cpu",
                 cost: "str | CostModel" = "model", overrides: dict[str, Override] | None = None):
        """cost: "model" (the measured table for `provider`), "native" (the native op wherever
        exact), or a CostModel (a fixed table: tests)."""
        if control not in CONTROLS:
            raise ValueError(f"control {control!r}: expected one of {', '.join(CONTROLS)}")
        if not isinstance(cost, CostModel) and cost not in COSTS:
            raise ValueError(f"cost {cost!r}: expected one of {', '.join(COSTS)}")
        self.supports, self.target, self.control = supports, target, control
        self.model = cost if isinstance(cost, CostModel) else CostModel(provider=provider) if cost == "model" else None
        self.overrides = dict(overrides or {})

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
        cost: dict = {}
        if strategy == "auto":
            strategy, why, cost = self.by_cost(kind, layer)
        else:
            cannot = self.supports(kind, strategy, layer, self.target)
            if cannot is not None:
                raise _Refused(f"lowering: {strategy} cannot be exact: {cannot}. Use lowering: auto (it picks an "
                               "exact lowering) or loop")
        loop_op, scan_free = time_loop(layer, self.control)
        if strategy == "unroll":
            return Plan("unroll", requested=requested, masked=masked, unroll_steps=layer.time, why=why, **cost)
        if strategy == "loop":
            return Plan("loop", requested=requested, time_loop=loop_op, scan_free=scan_free, masked=masked, why=why,
                        **cost)
        halves = layer.sublayers or (layer,)
        rec = "; ".join(dict.fromkeys(c.recognized.summary for half in halves for c in half.cells if c.recognized))
        if layer.sublayers:
            fused = fusable(layer)
            ops = ((ONNX_OPS[layer.sublayers[0].cells[0].kind],) if fused else
                   tuple(onnx_op(c) for half in layer.sublayers for c in half.cells))
            return Plan("native", requested=requested, native_ops=ops, fused=fused, per_half=not fused,
                        masked=masked, time_loop=self.control if masked else None, recognized=rec, **cost)
        return Plan("native", requested=requested, native_ops=tuple(onnx_op(c) for c in layer.cells),
                    masked=masked, time_loop=self.control if masked else None, recognized=rec, **cost)

    def by_cost(self, kind: str, layer: Layer) -> tuple[str, str, dict]:
        """`lowering: auto`: (strategy, why, the plan's cost fields). The exact candidates, then
        compile --tune's measured choice, or the cost model's, or native where exact."""
        not_native = self.supports(kind, "native", layer, self.target)
        cands = ["native"] * (not_native is None) + ["loop"]
        if (isinstance(layer.time, int) and layer.time <= UNROLL_MAX_STEPS
                and self.supports(kind, "unroll", layer, self.target) is None):
            cands.append("unroll")
        if layer.name in self.overrides:
            strategy, times, source, note = self.overrides[layer.name]
            if strategy not in cands:
                raise _Refused(f"--tune chose {strategy}, which is not an exact candidate ({', '.join(cands)})")
            cost = dict(candidates=times, cost_source=source, cost_note=note) if times else {}
            what = "measured faster (--tune)" if source == "tuned" else "requested by the tuner"
        else:
            est = self.model.estimate(layer, tuple(cands)) if self.model is not None and len(cands) > 1 else None
            if est is None:       # no model: the native op where exact, else the time loop
                return cands[0], not_native or "", {}
            times_ms, shape = est
            strategy = pick(times_ms)
            cost = dict(candidates=tuple(times_ms.items()), cost_source="model",
                        cost_note=f"{shape}; {self.model.source}")
            times = cost["candidates"]
            what = "modeled faster"
        if strategy == "native":
            return strategy, "", cost
        if not_native is not None:
            return strategy, not_native, cost
        t = dict(times)
        ratio = f" ({t[strategy] / t['native']:.2f}× the native op's time)" if t.get("native") else ""
        return strategy, f"{what} than the exact native op{ratio}", cost


def onnx_op(cell: Cell) -> str:
    """The ONNX op of a cell planned native: a built-in's, or the one a custom cell was proved
    to be (rnnc/passes/recognize.py)."""
    return cell.recognized.op if cell.recognized is not None else ONNX_OPS[cell.kind]


class _Refused(Exception):
    """A layer's requested lowering cannot be exact (collected into one LoweringError)."""
