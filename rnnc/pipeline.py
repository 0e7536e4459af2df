"""compile(): spec → IR → passes → lowering → ONNX, one stage after another."""
from __future__ import annotations

import os
from collections.abc import Callable
from contextvars import ContextVar
from io import BytesIO
from pathlib import Path

import numpy as np
import onnx

from .emit import GraphBuilder, assemble, check
from .emit.model import MIN_OPSET, materialize, structure, write_model
from .emit.peephole import cancel_transpose_pairs
from .errors import RnncError
from .ir import Graph, build_graph
from .ir.verify import verify_graph
from .lower import LowerCtx, lower_graph, supports
from .lower.int8 import Int8, supports_int8
from .passes import (
    ChooseLowering,
    HoistInputProjection,
    MergeProducts,
    Pass,
    ReassociateSums,
    RecognizeBuiltins,
    SinkSlices,
    run_passes,
)
from .spec import Spec, load_spec
from .weights import check_weights, default_weights, read_weights

DEFAULT_OPSET = 21
DEFAULT_IR_VERSION = 10
TARGETS = ("ort", "portable")
CONTROLS = ("auto", "loop", "scan")
PROVIDERS = ("cpu", "cuda")     # where the model is meant to run: the cost model's provider
COSTS = ("model", "native")     # lowering: auto by the cost model, or the native op wherever exact
# check the IR's invariants after every pass (rnnc/ir/verify.py): a developer switch, on in
# the test suite (tests/conftest.py)
VERIFY_IR = os.environ.get("RNNC_VERIFY_IR") == "1"


class Compiled:
    """A compiled model: `model` (the onnx.ModelProto), `graph` (rnnc's IR, with each layer's
    lowering plan) and `weights` (the arrays it was compiled with).

    The model's large tensors are held as the arrays they came from until the whole ModelProto
    is asked for (`model`), so a model compiled and saved holds its weights once: `save` writes
    them straight from the arrays, and `structure` is the graph without them (what `inspect`
    reads). The arrays are shared with `weights` (and with a weights dict the caller passed in):
    change them after compiling and the model written changes too."""

    def __init__(self, model: onnx.ModelProto, graph: Graph, weights: dict[str, np.ndarray],
                 arrays: dict[str, np.ndarray] | None = None):
        self._model = model
        self._arrays = dict(arrays or {})
        self.graph = graph
        self.weights = weights

    @property
    def model(self) -> onnx.ModelProto:
        """The whole model (made once, on first use, from the held arrays)."""
        if self._arrays:
            materialize(self._model, self._arrays)
            self._arrays = {}
        return self._model

    @model.setter
    def model(self, model: onnx.ModelProto) -> None:
        self._model, self._arrays = model, {}

    @property
    def structure(self) -> onnx.ModelProto:
        """The model with its large tensors' types and dims and none of their data: everything
        but the weights, for reading the graph (it does not run)."""
        return structure(self._model, self._arrays) if self._arrays else self._model

    def serialize(self) -> bytes:
        """The model's bytes (model.SerializeToString()), made from the held arrays without
        building the whole ModelProto first."""
        if not self._arrays:
            return self._model.SerializeToString()
        buf = BytesIO()
        write_model(buf, self._model, self._arrays)
        return buf.getvalue()

    def save(self, path: str | Path, *, external_data: bool | None = None, limit: int | None = None) -> list[Path]:
        """Write the model to `path` (.onnx) all or nothing; returns the files written. Above
        2 GB (or `limit` bytes), or with external_data=True, the tensors go to `<path>.data`
        beside it (ONNX external data): run the saved path (rnnc.Session(path))."""
        from .emit import save_atomic

        if Path(path).suffix != ".onnx":
            raise RnncError(f"save {path}: expected a file name ending in .onnx")
        return save_atomic(self._model, path, external_data=external_data, limit=limit, arrays=self._arrays)


def time_loop_op(control: str) -> str:
    """The ONNX op of a time loop: auto is Scan (measured faster on ONNX Runtime than a Loop,
    the reference form: tools/bench.py)."""
    if control not in CONTROLS:
        raise RnncError(f"control: expected one of {', '.join(CONTROLS)}, got {control!r}")
    return "scan" if control == "auto" else control


def pipeline(*, target: str = "ort", control: str = "auto", hoist: bool = True,
             quantize: str | None = None, provider: str = "cpu", cost: "str | None" = None,
             overrides: dict | None = None) -> list[Pass]:
    """The passes, in order (each states what must run before it: rnnc/passes/manager.py):
    rewrite custom cells' steps (reassociate-sums, merge-products: the products of one left
    operand become one over concatenated weights, left out with quantize="int8", whose
    matmuls take a kernel param as it is; then sink-slices, which may split a merged product
    back by its wide column slices, so it comes after merge-products), mark what does not
    depend on the states (hoist-input-projection; left out with hoist=False, so the input
    projection stays in the time loop), prove which custom cells are an ONNX LSTM, GRU or RNN
    (recognize-builtins: it reads the final step, rewrites nothing), then choose each layer's
    lowering plan. quantize="int8": GRU/RNN (and LSTM on portable) take the time loop, whose
    matmuls can be int8 (rnnc/lower/int8.py supports_int8). provider / cost / overrides: how
    `lowering: auto` picks among the exact candidates (rnnc/passes/choose_lowering.py: the
    cost model for the provider the model targets, cost="native" for the native op wherever
    exact, or --tune's choices)."""
    passes: list[Pass] = [ReassociateSums()]
    if quantize != "int8":      # int8 multiplies kernel params (rnnc/lower/int8.py), not their Concat
        passes.append(MergeProducts())
    # on the CPU provider a Gemm fuses with the activation after it: a product per gate run
    passes.append(SinkSlices(gemm_activations=provider == "cpu"))
    if hoist:
        passes.append(HoistInputProjection())
    passes.append(RecognizeBuiltins())
    sup = supports_int8(supports) if quantize == "int8" else supports
    if provider not in PROVIDERS:
        raise RnncError(f"provider: expected one of {', '.join(PROVIDERS)}, got {provider!r}")
    where = "cost"
    if cost is None:    # RNNC_LOWERING_COST=native: auto is the native op wherever exact (tests of that lowering)
        cost, where = os.environ.get("RNNC_LOWERING_COST") or "model", "the environment's RNNC_LOWERING_COST"
    if isinstance(cost, str) and cost not in COSTS:     # else a CostModel (rnnc/passes/cost_model.py)
        raise RnncError(f"{where}: expected one of {', '.join(COSTS)}, got {cost!r}")
    passes.append(ChooseLowering(supports=sup, target=target, control=time_loop_op(control), provider=provider,
                                 cost=cost, overrides=overrides))
    return passes


def prepare(spec: Spec | str | Path, *, weights: str | Path | dict | None = None, target: str = "ort",
            control: str = "auto", hoist: bool = True, verify: bool = False,
            ignore_extra: bool = False, quantize: str | None = None, provider: str = "cpu", cost: "str | None" = None,
            overrides: dict | None = None, counting: bool = False) -> tuple[Graph, dict[str, np.ndarray]]:
    """Load, build and choose lowerings (everything before ONNX); returns the graph and
    weights. verify: check the IR's invariants after each pass (rnnc/ir/verify.py).
    ignore_extra: skip weights the spec has no parameter for (weights/io.py check_weights).
    counting (rnnc summary): no size limits, and no default weights drawn when none are given
    (given weights are still checked); the weights returned are then {}."""
    if target not in TARGETS:
        raise RnncError(f"unknown target {target!r}: expected one of {', '.join(TARGETS)}")
    passes = pipeline(target=target, control=control, hoist=hoist, quantize=quantize, provider=provider, cost=cost,
                      overrides=overrides)
    if not isinstance(spec, Spec):
        spec = load_spec(spec)
    graph = build_graph(spec, size_limits=not counting)
    if counting and weights is None and not spec.weights:
        w: dict[str, np.ndarray] = {}
    else:
        w = resolve_weights(spec, graph, weights, ignore_extra=ignore_extra)
    graph = run_passes(graph, passes, verify=verify_graph if verify else None)
    return graph, w


def resolve_weights(spec: Spec, graph: Graph, weights: str | Path | dict | None, *,
                    ignore_extra: bool = False) -> dict[str, np.ndarray]:
    if isinstance(weights, dict):
        return check_weights(graph, weights, "<weights>", ignore_extra=ignore_extra)
    if weights is not None and not isinstance(weights, (str, Path)):
        raise RnncError(f"weights: expected a file path or a dict of arrays, got {type(weights).__name__}")
    path = weights
    if path is None and spec.weights:
        path = Path(spec.file).parent / spec.weights
    if path is None:
        return default_weights(graph, spec.seed)
    return check_weights(graph, read_weights(path), str(path), ignore_extra=ignore_extra)


# Long compiles say where they are: a function of the stage's name, set by the caller (the CLI
# prints the stages of a compile that takes longer than a couple of seconds)
PROGRESS: ContextVar[Callable[[str], None] | None] = ContextVar("rnnc_progress", default=None)


def stage(name: str) -> None:
    report = PROGRESS.get()
    if report is not None:
        report(name)


def compile_spec(spec: Spec | str | Path, *, weights: str | Path | dict | None = None, opset: int = DEFAULT_OPSET,
                 ir_version: int = DEFAULT_IR_VERSION, target: str = "ort", hoist: bool = True,
                 control: str = "auto", ignore_extra: bool = False, quantize: str | None = None,
                 precision: str | None = None, calibrate: str | Path | dict | None = None,
                 max_diff: float | None = None, provider: str = "cpu", cost: "str | None" = None,
                 overrides: dict | None = None, tune: bool = False, tune_dims: dict | None = None) -> Compiled:
    """Compile a spec to an ONNX model. `control` is the ONNX op of a time loop (auto, scan or
    loop: time_loop_op). `hoist=False` leaves the hoisting pass out, so the input projection
    stays inside the time loop (for benchmarks). `ignore_extra`: weights the spec has no
    parameter for are skipped (an encoder spec from a seq2seq's weights).
    Reduced precision (rnnc/runtime/precision.py; README "Reduced precision"): quantize="int8"
    (CPU), precision="fp16" (ONNX Runtime's CUDA provider); the drift from float32 is measured
    on `calibrate` (an .npz or a dict of inputs; default: random inputs with masks) and a model
    whose largest difference is above `max_diff` is refused.
    Lowering choice (README "Lowerings"): `lowering: auto` takes the fastest exact candidate by
    the cost model for `provider` ("cpu" or "cuda": where the model is meant to run);
    cost="native" makes it the native op wherever exact; tune=True measures the candidates on
    this machine at the spec's shapes (symbolic dims from `tune_dims`, else batch 32, time 50)
    and keeps the fastest (rnnc/runtime/tune.py); `overrides` are its choices."""
    if tune:
        from .runtime.tune import tune as measure  # lazy: only runtime/ imports onnxruntime

        if not isinstance(spec, Spec):
            spec = load_spec(spec)
        kw = dict(weights=weights, opset=opset, ir_version=ir_version, target=target, hoist=hoist, control=control,
                  ignore_extra=ignore_extra, quantize=quantize, precision=precision, calibrate=calibrate,
                  max_diff=max_diff, provider=provider, cost=cost if cost is not None and not isinstance(cost, str) else "model")
        return measure(lambda overrides: compile_spec(spec, overrides=overrides, **kw), dims=tune_dims,
                       provider=provider)
    reduced = None
    if quantize is not None or precision is not None or calibrate is not None or max_diff is not None:
        from .runtime import precision as reduced  # lazy: only runtime/ imports onnxruntime

        reduced.check_options(quantize=quantize, precision=precision, target=target, max_diff=max_diff)
    for name, v in (("opset", opset), ("ir_version", ir_version)):
        if not isinstance(v, int) or isinstance(v, bool):
            raise RnncError(f"{name}: expected an integer, got {v!r}")
    max_opset, max_ir, by = onnx.defs.onnx_opset_version(), onnx.IR_VERSION, f"onnx {onnx.__version__}"
    if target == "ort" and (opset > DEFAULT_OPSET or ir_version > DEFAULT_IR_VERSION):
        # the range ONNX Runtime loads (it can be narrower than onnx's), asked only above the
        # defaults, which every supported ONNX Runtime loads; lazy: only runtime/ imports onnxruntime
        from .runtime.versions import describe, ort_max_versions
        (max_opset, max_ir), by = ort_max_versions(), describe()
    if not MIN_OPSET <= opset <= max_opset:
        raise RnncError(f"--opset: expected {MIN_OPSET}..{max_opset} (the newest opset {by} supports), got {opset}")
    control = time_loop_op(control)
    if not 8 <= ir_version <= max_ir:
        raise RnncError(f"--ir-version: expected 8..{max_ir} (the newest IR version {by} supports), got {ir_version}")
    stage("reading the spec and the weights, running the passes")
    graph, w = prepare(spec, weights=weights, target=target, control=control, hoist=hoist, verify=VERIFY_IR,
                       ignore_extra=ignore_extra, quantize=quantize, provider=provider, cost=cost, overrides=overrides)
    builder = GraphBuilder()
    for name in (*graph.inputs, *(o.name for o in graph.outputs), *(n for io in graph.state_io() for n in io[1:3])):
        builder.reserve(name)
    ctx = LowerCtx(builder, graph, w, target, int8=Int8() if quantize == "int8" else None)
    stage("lowering to ONNX")
    lowered = cancel_transpose_pairs(graph, builder, lower_graph(ctx))   # rnnc/emit/peephole.py
    model = assemble(graph, builder, lowered, opset=opset, ir_version=ir_version, target=target)
    stage("checking the model (onnx.checker)")
    check(model, builder.arrays)
    if reduced is None:
        return Compiled(model, graph, w, builder.arrays)
    stage("measuring the reduced-precision model against float32")
    kw = dict(weights=weights, opset=opset, ir_version=ir_version, target=target, hoist=hoist, control=control,
              ignore_extra=ignore_extra, provider=provider, cost=cost, overrides=overrides)
    return reduced.finish(Compiled(model, graph, w, builder.arrays), spec, kw, int8=ctx.int8, quantize=quantize,
                          precision=precision, calibrate=calibrate, max_diff=max_diff)
