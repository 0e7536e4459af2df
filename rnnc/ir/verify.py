"""The IR's invariants, checked between passes (the tests run every pass with it).

A broken invariant is a bug in rnnc, never the user's: InternalError. What is checked:
references point at a model input or a port of an earlier layer, masks are bool, recurrent
layers and halves carry their Recurrence, merges their input masks, custom cells' steps are
well formed (arguments before their node, outputs and next states in range, hoisted nodes
free of the states), and a layer's plan fits the layer."""
from __future__ import annotations

from ..cells.lang import state_dependent
from ..errors import InternalError
from .graph import Cell, Graph, Layer
from .types import Ref


def verify_graph(graph: Graph) -> None:
    problems: list[str] = []
    seen: dict[str, Layer] = {}

    def ref_ok(r: Ref | None, what: str, owner: str, *, mask: bool = False) -> None:
        if r is None:
            return
        if r.port == "input":
            t = graph.inputs.get(r.layer)
        else:
            src = seen.get(r.layer)
            t = src.outputs.get(r.port) if src is not None else None
        if t is None:
            problems.append(f"layer {owner!r}: {what} {r} names no model input or port of an earlier layer")
        elif mask and t.dtype != "bool":
            problems.append(f"layer {owner!r}: {what} {r} is {t.dtype}, not a bool mask")

    for name, layer in graph.layers.items():
        if name != layer.name:
            problems.append(f"layer {layer.name!r} is listed as {name!r}")
        for r in layer.inputs:
            ref_ok(r, "input", name)
        for r in layer.initial_state:
            ref_ok(r, "initial state", name)
        ref_ok(layer.mask_in, "mask", name, mask=True)
        for r in layer.input_masks:
            ref_ok(r, "input mask", name, mask=True)
        if layer.mask_out is not None and layer.mask_out.layer != name:
            ref_ok(layer.mask_out, "passed-through mask", name, mask=True)
        elif layer.mask_out is not None and layer.mask_out.port not in layer.outputs:
            problems.append(f"layer {name!r}: its mask port {layer.mask_out.port!r} is not among its outputs")
        if layer.mask_merge is not None and (layer.mask_merge not in ("or", "concat") or "mask" not in layer.outputs
                                             or len(layer.input_masks) != len(layer.inputs)):
            problems.append(f"layer {name!r}: merge mask rule {layer.mask_merge!r} without its inputs' masks "
                            "or its mask output")
        for half in layer.sublayers or ((layer,) if layer.cells else ()):
            if half.recurrence is None:
                problems.append(f"layer {name!r}: recurrent part {half.name!r} has no Recurrence")
            for i, c in enumerate(half.cells):
                problems += [f"layer {name!r}, cell {i} ({c.kind}): {p}" for p in _cell_problems(c)]
        problems += [f"layer {name!r}: {p}" for p in _plan_problems(layer)]
        seen[name] = layer
    for o in graph.outputs:
        ref_ok(o.ref, f"model output {o.name!r}", "<outputs>")
    if problems:
        raise InternalError("the IR is inconsistent: " + "; ".join(problems))


def _cell_problems(c: Cell) -> list[str]:
    if not c.custom:
        return ["a built-in cell with hoisted step nodes"] if c.hoisted else []
    out = []
    prog = c.step_program
    ids = {n.id for n in prog.nodes}
    for k, n in enumerate(prog.nodes):
        if n.id != k:
            out.append(f"step node {k} has id {n.id}")
        late = [a for a in n.args if not (isinstance(a, int) and 0 <= a < k)]
        if late:
            out.append(f"step node {k} ({n.op}) reads {late}, not earlier nodes")
    for what, refs in (("output", prog.outputs), ("next state", prog.next_states)):
        bad = [i for i in refs if i not in ids]
        if bad:
            out.append(f"{what} ids {bad} name no step node")
    if len(prog.next_states) != len(prog.states):
        out.append(f"{len(prog.states)} states but {len(prog.next_states)} next states")
    if c.hoisted:
        dep = state_dependent(prog)
        bad = sorted(i for i in c.hoisted if i not in ids or dep[i])
        if bad:
            out.append(f"hoisted nodes {bad} do not exist or read a state")
    if c.project_hoisted:
        out.append("a custom cell marked as a built-in projection")
    return out


def _plan_problems(layer: Layer) -> list[str]:
    p = layer.plan
    if p is None or p.strategy == "unused":
        return []
    recurrent = bool(layer.cells or layer.sublayers)
    if recurrent == (p.strategy == "plain"):
        return [f"plan {p.strategy} for a {'recurrent' if recurrent else 'plain'} layer"]
    out = []
    if recurrent and p.masked != (layer.mask_in is not None):
        out.append(f"plan says masked={p.masked}, the layer {'has' if layer.mask_in else 'has no'} mask")
    if p.strategy == "native":
        cells = [c for half in (layer.sublayers or (layer,)) for c in half.cells]
        if any(c.custom and c.recognized is None for c in cells):
            out.append("a native plan for a custom cell not recognized as an ONNX op")
        want = 1 if p.fused else len(cells)
        if len(p.native_ops) != want:
            out.append(f"a native plan with {len(p.native_ops)} ops for {want}")
        if (p.fused or p.per_half) and not layer.sublayers:
            out.append("a Bidirectional plan for a layer without halves")
    if p.strategy == "unroll" and p.unroll_steps != layer.time:
        out.append(f"unroll_steps {p.unroll_steps} for time {layer.time!r}")
    return out
