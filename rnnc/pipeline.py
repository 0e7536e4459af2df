"""compile(): spec → IR → passes → lowering → ONNX, one stage after another."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from .emit import GraphBuilder, assemble, check
from .emit.model import MIN_OPSET
from .errors import RnncError
from .ir import Graph, build_graph
from .ir.verify import verify_graph
from .lower import LowerCtx, lower_graph, supports
from .passes import ChooseLowering, HoistInputProjection, Pass, ReassociateSums, SinkSlices, run_passes
from .spec import Spec, load_spec
from .weights import check_weights, default_weights, read_weights

DEFAULT_OPSET = 21
DEFAULT_IR_VERSION = 10
TARGETS = ("ort", "portable")
CONTROLS = ("auto", "loop", "scan")
# check the IR's invariants after every pass (rnnc/ir/verify.py): a developer switch, on in
# the test suite (tests/conftest.py)
VERIFY_IR = os.environ.get("RNNC_VERIFY_IR") == "1"


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


def pipeline(*, target: str = "ort", control: str = "auto", hoist: bool = True) -> list[Pass]:
    """The passes, in order (each states what must run before it: rnnc/passes/manager.py):
    rewrite custom cells' steps (reassociate-sums, then sink-slices), mark what does not
    depend on the states (hoist-input-projection; left out with hoist=False, so the input
    projection stays in the time loop), then choose each layer's lowering plan."""
    passes: list[Pass] = [ReassociateSums(), SinkSlices()]
    if hoist:
        passes.append(HoistInputProjection())
    passes.append(ChooseLowering(supports=supports, target=target, control=time_loop_op(control)))
    return passes


def prepare(spec: Spec | str | Path, *, weights: str | Path | dict | None = None, target: str = "ort",
            control: str = "auto", hoist: bool = True, verify: bool = False) -> tuple[Graph, dict[str, np.ndarray]]:
    """Load, build and choose lowerings (everything before ONNX); returns the graph and
    weights. verify: check the IR's invariants after each pass (rnnc/ir/verify.py)."""
    if target not in TARGETS:
        raise RnncError(f"unknown target {target!r}: expected one of {', '.join(TARGETS)}")
    passes = pipeline(target=target, control=control, hoist=hoist)
    if not isinstance(spec, Spec):
        spec = load_spec(spec)
    graph = build_graph(spec)
    w = resolve_weights(spec, graph, weights)
    graph = run_passes(graph, passes, verify=verify_graph if verify else None)
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
    loop: time_loop_op). `hoist=False` leaves the hoisting pass out, so the input projection
    stays inside the time loop (for benchmarks)."""
    for name, v in (("opset", opset), ("ir_version", ir_version)):
        if not isinstance(v, int) or isinstance(v, bool):
            raise RnncError(f"{name}: expected an integer, got {v!r}")
    if not MIN_OPSET <= opset <= onnx.defs.onnx_opset_version():
        raise RnncError(f"--opset: expected {MIN_OPSET}..{onnx.defs.onnx_opset_version()}, got {opset}")
    control = time_loop_op(control)
    if not 8 <= ir_version <= onnx.IR_VERSION:
        raise RnncError(f"--ir-version: expected 8..{onnx.IR_VERSION}, got {ir_version}")
    graph, w = prepare(spec, weights=weights, target=target, control=control, hoist=hoist, verify=VERIFY_IR)
    builder = GraphBuilder()
    for name in (*graph.inputs, *(o.name for o in graph.outputs), *(n for io in graph.state_io() for n in io[1:3])):
        builder.reserve(name)
    ctx = LowerCtx(builder, graph, w, target)
    lowered = lower_graph(ctx)
    model = assemble(graph, builder, lowered, opset=opset, ir_version=ir_version, target=target)
    check(model)
    return Compiled(model, graph, w)
