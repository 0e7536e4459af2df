"""IR → ONNX nodes: lowering rules keyed by (layer kind, strategy)."""
from . import layers as _layers  # noqa: F401  (registers the rules)
from . import recurrent as _recurrent  # noqa: F401
from .context import LowerCtx
from .registry import register, rule, strategies

__all__ = ["LowerCtx", "register", "rule", "strategies", "lower_graph", "supports"]


def supports(kind: str, strategy: str, layer, target: str) -> str | None:
    """None when rule (kind, strategy) lowers `layer` exactly for `target`, else why not."""
    return rule(kind, strategy).supports(layer, target)


def rule_kind(layer) -> str:
    if layer.sublayers:
        return "Bidirectional"
    if layer.cells:
        return "recurrent"
    return layer.kind


def lower_graph(ctx: LowerCtx) -> dict[str, dict]:
    """Lower every layer in order; returns per-layer facts for the model's metadata."""
    from ..ir.types import Ref

    facts: dict[str, dict] = {}
    for name in ctx.graph.inputs:
        ctx.env[Ref(name, "input")] = name
    for layer in ctx.graph.layers.values():
        start = len(ctx.b.nodes)
        with ctx.b.layer_scope(layer.name):
            outs = rule(rule_kind(layer), layer.lowering or "plain").lower(ctx, layer)
        for port, tensor in outs.items():
            ctx.env[Ref(layer.name, port)] = tensor
        nodes = ctx.b.nodes[start:]
        facts[layer.name] = {"nodes": [n.op_type for n in nodes]}
    return facts
