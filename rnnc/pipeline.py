"""compile(): spec → IR → passes → lowering → ONNX, one stage after another."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from .errors import RnncError
from .ir import Graph, build_graph
from .passes import ChooseLowering, HoistInputProjection, ReassociateSums, SinkSlices, run_passes
from .spec import Spec, load_spec
from .weights import check_weights, default_weights, read_weights

DEFAULT_OPSET = 21
DEFAULT_IR_VERSION = 10
TARGETS = ("ort", "portable")
CONTROLS = ("auto", "loop", "scan")


@dataclass
class Compiled:
    model: onnx.ModelProto
    graph: Graph
    weights: dict[str, np.ndarray]


def time_loop_op(control: str) -> str:
    """The ONNX op of a time loop: auto is Scan (measured faster on ONNX Runtime than a Loop,
    the reference form: tools/bench.py)."""
    if control not in CONTROLS:
        raise RnncError(f"control: expected one of {', '.join(CONTROLS)}, got {control!r}")
    return "scan" if control == "auto" else control


def prepare(spec: Spec | str | Path, *, weights: str | Path | dict | None = None, target: str = "ort",
            control: str = "auto") -> tuple[Graph, dict[str, np.ndarray]]:
    """Load, build and choose lowerings (everything before ONNX); returns the graph and weights."""
    if target not in TARGETS:
        raise RnncError(f"unknown target {target!r}: expected one of {', '.join(TARGETS)}")
    control = time_loop_op(control)
    if not isinstance(spec, Spec):
        spec = load_spec(spec)
    graph = build_graph(spec)
    w = resolve_weights(spec, graph, weights)
    from .lower import supports
    from .lower.recurrent import fusable

    graph = run_passes(graph, [ReassociateSums(), SinkSlices(), HoistInputProjection(),
                               ChooseLowering(supports=supports, fusable=fusable, target=target, control=control)])
    return graph, w


def resolve_weights(spec: Spec, graph: Graph, weights: str | Path | dict | None) -> dict[str, np.ndarray]:
    if isinstance(weights, dict):
        return check_weights(graph, weights, "<weights>")
    if weights is not None and not isinstance(weights, (str, Path)):
        raise RnncError(f"weights: expected a file path or a dict of arrays, got {type(weights).__name__}")
    path = weights
    if path is None and spec.weights:
        path = Path(spec.file).parent / spec.weights
    if path is None:
        return default_weights(graph, spec.seed)
    return check_weights(graph, read_weights(path), str(path))


def compile_spec(spec: Spec | str | Path, *, weights: str | Path | dict | None = None, opset: int = DEFAULT_OPSET,
                 ir_version: int = DEFAULT_IR_VERSION, target: str = "ort", hoist: bool = True,
                 control: str = "auto") -> Compiled:
    """Compile a spec to an ONNX model. `control` is the ONNX op of a time loop (auto, scan or
    loop: time_loop_op). `hoist=False` keeps the input projection inside the time loop (for
    benchmarks)."""
    from .emit import GraphBuilder, assemble, check
    from .emit.model import MIN_OPSET
    from .lower import LowerCtx, lower_graph

    for name, v in (("opset", opset), ("ir_version", ir_version)):
        if not isinstance(v, int) or isinstance(v, bool):
            raise RnncError(f"{name}: expected an integer, got {v!r}")
    if not MIN_OPSET <= opset <= onnx.defs.onnx_opset_version():
        raise RnncError(f"--opset: expected {MIN_OPSET}..{onnx.defs.onnx_opset_version()}, got {opset}")
    control = time_loop_op(control)
    if not 8 <= ir_version <= onnx.IR_VERSION:
        raise RnncError(f"--ir-version: expected 8..{onnx.IR_VERSION}, got {ir_version}")
    graph, w = prepare(spec, weights=weights, target=target, control=control)
    builder = GraphBuilder()
    for name in (*graph.inputs, *(o.name for o in graph.outputs), *(n for io in graph.state_io() for n in io[1:3])):
        builder.reserve(name)
    ctx = LowerCtx(builder, graph, w, target, hoist=hoist, control=control)
    facts = lower_graph(ctx)
    model = assemble(graph, builder, ctx.env, facts, opset=opset, ir_version=ir_version, target=target,
                     state_outputs=ctx.state_outputs)
    check(model)
    return Compiled(model, graph, w)
