"""IR → ONNX nodes: lowering rules keyed by (layer kind, strategy); each layer's strategy and
every choice within it come from its plan (rnnc/ir/plan.py)."""
from __future__ import annotations

from ..emit.model import LoweredGraph
from ..errors import InternalError
from ..ir.graph import Layer
from ..ir.types import Ref
from ..layers import LAYER_DEFS

# the rule modules, imported for their @register side effects
from . import activation, attention, conv, layers, normalization, recurrent, shape  # noqa: F401
from .context import LowerCtx, Lowered
from .registry import has_rule, register, rule

__all__ = ["LowerCtx", "Lowered", "LoweredGraph", "register", "rule", "lower_graph", "supports"]


def _check_rules() -> None:
    """Every layer kind defined in rnnc/layers/ has its ONNX lowering here (a developer error
    otherwise: this runs when rnnc.lower is imported)."""
    missing = [k for k in LAYER_DEFS if not has_rule(k, "plain")]
    if missing:
        raise RuntimeError(f"layer kinds without a lowering rule (register one with @register(kind, 'plain') in "
                           f"rnnc/lower/): {', '.join(missing)}")


_check_rules()


def supports(kind: str, strategy: str, layer: Layer, target: str) -> str | None:
    """None when rule (kind, strategy) lowers `layer` exactly for `target`, else why not."""
    return rule(kind, strategy).supports(layer, target)


def rule_kind(layer: Layer) -> str:
    if layer.sublayers:
        return "Bidirectional"
    if layer.cells:
        return "recurrent"
    return layer.kind


def lower_graph(ctx: LowerCtx) -> LoweredGraph:
    """Lower every layer in order, as its plan says (layers no output needs are skipped)."""
    nodes: dict[str, list[str]] = {}
    state_outputs: dict[str, str] = {}
    for name in ctx.graph.inputs:
        ctx.env[Ref(name, "input")] = name
    for layer in ctx.graph.layers.values():
        if layer.plan is None:
            raise InternalError(f"layer {layer.name!r} has no lowering plan: run the choose-lowering pass first")
        if layer.plan.strategy == "unused":
            nodes[layer.name] = []
            continue
        start = len(ctx.b.nodes)
        with ctx.b.layer_scope(layer.name):
            out = rule(rule_kind(layer), layer.plan.strategy).lower(ctx, layer)
        out = out if isinstance(out, Lowered) else Lowered(out)
        io = layer.state_io()
        if len(out.final_states) != len(io):
            raise InternalError(f"layer {layer.name!r}: its rule returned {len(out.final_states)} final states "
                             f"for {len(io)} carried states")
        for port, tensor in out.ports.items():
            ctx.env[Ref(layer.name, port)] = tensor
        for (_, _, name_out, _), tensor in zip(io, out.final_states):
            state_outputs[name_out] = tensor
        nodes[layer.name] = [n.op_type for n in ctx.b.nodes[start:]]
    return LoweredGraph(dict(ctx.env), nodes, state_outputs)
