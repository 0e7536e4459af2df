"""Reduced precision: `compile --quantize int8` (the CPU) and `--precision fp16` (ONNX
Runtime's CUDA provider), with the accuracy measured at compile time.

Why here (rnnc/runtime/): every step talks to ONNX Runtime: its quantization tool
(onnxruntime.quantization.quantize_dynamic) for native LSTMs, its float16 converter
(onnxruntime.transformers.float16), and its sessions that run the float32 and reduced models
on the calibration inputs. Only rnnc/runtime/ imports onnxruntime (the linter's TID251), so no
exemption is needed. The int8 matmuls of rnnc's own lowering are emitted in rnnc/lower/int8.py
(onnx only).

int8: native LSTMs (--target ort) become ONNX Runtime's DynamicQuantizeLSTM (quantize_dynamic,
per-channel int8 weights, EnableSubgraph for the masked layers' If); GRU, SimpleRNN, time
loops, custom cells and Dense layers get int8 matmuls in rnnc's lowering. The result is run
against the float32 model on the calibration inputs (an .npz, or random inputs drawn to the
spec's shapes with padded and holed masks) and the drift goes in rnnc's metadata (`precision`,
checked by rnnc/metadata.py); above `max_diff` nothing is returned (an RnncError: exit 2).

fp16: ONNX Runtime's float16 converter (keep_io_types: inputs, outputs and states stay
float32), with recurrent nodes that the CUDA provider would leave to the CPU (whose LSTM/GRU/RNN
kernels are float32 only) kept in float32. The CPU provider rejects a float16 LSTM/GRU/RNN, so
the model is for CUDA only: the CLI asks for `--providers cuda` to write one."""
from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from ..errors import RnncError
from ..metadata import KEY

QUANTIZE = ("int8",)
PRECISIONS = ("fp32", "fp16")
RNN_OPS = ("LSTM", "GRU", "RNN")
CAL_BATCH, CAL_TIME = 8, 16      # random calibration inputs: rows and steps (a symbolic time)


def check_options(*, quantize: str | None, precision: str | None, target: str, max_diff: float | None) -> None:
    if quantize is not None and quantize not in QUANTIZE:
        raise RnncError(f"--quantize: expected one of {', '.join(QUANTIZE)}, got {quantize!r}")
    if precision is not None and precision not in PRECISIONS:
        raise RnncError(f"--precision: expected one of {', '.join(PRECISIONS)}, got {precision!r}")
    if quantize and precision == "fp16":
        raise RnncError("--quantize int8 and --precision fp16 are exclusive: int8 is for the CPU, fp16 for CUDA")
    if precision == "fp16" and target == "portable":
        raise RnncError("--precision fp16 is for ONNX Runtime's CUDA provider: use --target ort")
    if max_diff is not None and (isinstance(max_diff, bool) or not isinstance(max_diff, (int, float))
                                 or not max_diff >= 0):
        raise RnncError(f"--max-diff: expected a non-negative number, got {max_diff!r}")


def finish(compiled: Any, spec: Any, kw: dict[str, Any], *, int8: Any, quantize: str | None, precision: str | None,
           calibrate: Any, max_diff: float | None) -> Any:
    """The reduced-precision model of `compiled` (lowered with int8 matmuls when quantize is
    int8), its drift from float32 measured and stored; refused above max_diff."""
    from ..pipeline import compile_spec

    reduced = precision == "fp16" or quantize == "int8"
    if not reduced:         # calibrate / max_diff alone: nothing to compare with
        if calibrate is not None or max_diff is not None:
            raise RnncError("--calibrate and --max-diff measure a reduced-precision model: add --quantize int8 "
                            "(or --precision fp16)")
        return compiled
    graph = compiled.graph
    names = list(graph.layers)
    if quantize == "int8":
        ref = compile_spec(spec, **kw).model
        model = compiled.model
        layers = {layer: "int8 MatMulInteger (per-channel int8 weights, DynamicQuantizeLinear inputs): "
                         + ", ".join(ws) for layer, ws in int8.layers.items()}
        if kw["target"] == "ort" and _has_op(model.graph, "LSTM"):
            model = _ort_quantize_lstm(model)
            for layer in _layers_with(model.graph, "DynamicQuantizeLSTM", names):
                text = "DynamicQuantizeLSTM (ONNX Runtime's quantize_dynamic, per-channel int8 weights)"
                layers[layer] = text + ("; " + layers[layer] if layer in layers else "")
        _prune_initializers(model.graph)
        onnx.checker.check_model(model, full_check=True)
        info: dict[str, Any] = {"mode": "int8", "layers": layers}
        feeds, source = calibration_feeds(graph, calibrate)
        info["calibration"] = source
        info["drift"] = measure(ref, model, feeds, "cpu")
    else:
        ref = compiled.model
        model, kept = to_fp16(ref)
        info = {"mode": "fp16", "provider": "cuda", "kept_fp32": kept,
                "layers": {layer: "float16 weights and compute" for layer in names
                           if graph.layers[layer].plan is not None and graph.layers[layer].plan.strategy
                           not in ("unused",) and layer not in kept}}
        feeds, source = calibration_feeds(graph, calibrate)
        if _cuda_here():
            info["calibration"] = source + ", on the CUDA provider"
            info["drift"] = measure(ref, model, feeds, "cuda")
        elif cpu_rejects(model) is None:
            # no CUDA here: the CPU provider runs it with float32 casts around its float32-only
            # kernels, which measures the float16 weights and values, not CUDA's float16 kernels
            info["calibration"] = source + ", on the CPU provider (no CUDA here: float16 weights and values, " \
                                           "float32 kernels; the CUDA figure: tools/gpu_check.sh)"
            info["drift"] = measure(ref, model, feeds, "cpu")
        else:
            info["calibration"] = source
            info["drift"] = None
            info["not_measured"] = "no CUDA here and the CPU provider refuses the model: run tools/gpu_check.sh"
    _set_precision(model, info, relist=quantize == "int8")
    worst = worst_diff(info)
    if max_diff is not None and info.get("drift") is None:
        raise RnncError(f"--max-diff {max_diff:g}: the {info['mode']} model's drift cannot be measured here "
                        f"({info.get('not_measured')}): nothing written")
    if max_diff is not None and worst is not None and worst[1] > max_diff:
        raise RnncError(f"--max-diff {max_diff:g}: the {info['mode']} model differs from float32 by up to "
                        f"{worst[1]:.3g} on output {worst[0]!r} ({source}): nothing written. Raise --max-diff, "
                        "calibrate on your own data (--calibrate DATA.npz) or compile without "
                        + ("--quantize" if quantize else "--precision fp16"))
    compiled.model = model
    return compiled


# ---- int8 -----------------------------------------------------------------------------------

def _ort_quantize_lstm(model: onnx.ModelProto) -> onnx.ModelProto:
    """ONNX Runtime's quantize_dynamic on the LSTM nodes only (rnnc's own lowering did the
    rest): DynamicQuantizeLSTM with per-channel int8 W and R, in If branches too."""
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic

    props = {p.key: p.value for p in model.metadata_props}
    log = logging.getLogger()
    level = log.level
    with tempfile.TemporaryDirectory(prefix="rnnc-int8-") as tmp:
        src, dst = Path(tmp) / "float.onnx", Path(tmp) / "int8.onnx"
        onnx.save(model, str(src))
        log.setLevel(logging.ERROR)      # the tool logs a recommendation to pre-process, per call
        try:
            quantize_dynamic(src, dst, op_types_to_quantize=["LSTM"], per_channel=True, weight_type=QuantType.QInt8,
                             extra_options={"EnableSubgraph": True})
        finally:
            log.setLevel(level)
        out = onnx.load(str(dst))
    have = {p.key for p in out.metadata_props}
    for k, v in props.items():           # the tool keeps them; make sure
        if k not in have:
            out.metadata_props.add(key=k, value=v)
    return out


def _graphs(g: onnx.GraphProto):
    yield g
    for n in g.node:
        for a in n.attribute:
            if a.type == onnx.AttributeProto.GRAPH:
                yield from _graphs(a.g)
            for sub in a.graphs:
                yield from _graphs(sub)


def _has_op(g: onnx.GraphProto, op: str) -> bool:
    return any(n.op_type == op for sg in _graphs(g) for n in sg.node)


def _layer_of(node_name: str, names: list[str]) -> str | None:
    best = None
    for l in names:
        if node_name.startswith(l + "/") and (best is None or len(l) > len(best)):
            best = l
    return best


def _layers_with(g: onnx.GraphProto, op: str, names: list[str]) -> list[str]:
    found: list[str] = []
    for top in g.node:
        layer = _layer_of(top.name, names)
        if layer is None or layer in found:
            continue
        sub = onnx.GraphProto()
        sub.node.append(top)
        if _has_op(sub, op):
            found.append(layer)
    return found


def _prune_initializers(g: onnx.GraphProto) -> None:
    """Drop nodes whose outputs nothing reads (the float32 gate-block slices of kernels now
    multiplied in int8), then initializers no node reads (the float32 kernels)."""
    while True:
        used = {i for sg in _graphs(g) for n in sg.node for i in n.input} | \
               {o.name for sg in _graphs(g) for o in sg.output}
        dead = 0
        for sg in _graphs(g):
            live = [n for n in sg.node if any(o in used for o in n.output if o)]
            if len(live) != len(sg.node):
                dead += len(sg.node) - len(live)
                del sg.node[:]
                sg.node.extend(live)
        if not dead:
            break
    for sg in _graphs(g):
        keep = [t for t in sg.initializer if t.name in used]
        if len(keep) != len(sg.initializer):
            del sg.initializer[:]
            sg.initializer.extend(keep)


# ---- fp16 -----------------------------------------------------------------------------------

# ONNX Runtime's CUDA provider has float16 kernels for LSTM, GRU and RNN (cuDNN), but it runs
# them only with the default activations and no clip, and GRU only with linear_before_reset=1
# (rnnc/inspect/placement.py): other recurrent nodes go to the CPU, whose kernels are float32
# only, so they stay float32. Ops on the converter's own block list (ONNX Runtime's
# DEFAULT_OP_BLOCK_LIST: Range, CumSum, Min, Max, TopK, ...) stay float32 too.
DEFAULT_ACTS = {"LSTM": ["Sigmoid", "Tanh", "Tanh"], "GRU": ["Sigmoid", "Tanh"], "RNN": ["Tanh"]}


def _cpu_bound_rnn(n: onnx.NodeProto) -> bool:
    if n.op_type not in RNN_OPS:
        return False
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
    acts = [a.decode() if isinstance(a, bytes) else a for a in attrs.get("activations", [])]
    per_dir = DEFAULT_ACTS[n.op_type]
    if acts and acts not in (per_dir, per_dir * 2):
        return True
    if "clip" in attrs or attrs.get("input_forget", 0):
        return True
    return n.op_type == "GRU" and attrs.get("linear_before_reset", 0) == 0


def to_fp16(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str]]:
    """(the float16 model, the names of recurrent nodes kept float32)."""
    from onnxruntime.transformers import float16

    kept = [n.name for g in _graphs(model.graph) for n in g.node if _cpu_bound_rnn(n)]
    out = float16.convert_float_to_float16(onnx.ModelProto.FromString(model.SerializeToString()), keep_io_types=True,
                                           op_block_list=list(float16.DEFAULT_OP_BLOCK_LIST), node_block_list=kept)
    for g in _graphs(out.graph):
        _toposort(g)   # the converter can leave an input's Cast after its readers (onnxruntime 1.31)
    onnx.checker.check_model(out, full_check=True)
    return out, kept


def _reads(n: onnx.NodeProto) -> set[str]:
    """The names a node reads, its subgraphs' outer-scope reads included."""
    names = {i for i in n.input if i}
    for a in n.attribute:
        for sub in ([a.g] if a.type == onnx.AttributeProto.GRAPH else []) + list(a.graphs):
            for sg in _graphs(sub):
                names |= {i for m in sg.node for i in m.input if i}
    return names


def _toposort(g: onnx.GraphProto) -> None:
    """Order g's nodes so that each comes after the nodes whose outputs it reads (stable)."""
    made = {o: i for i, n in enumerate(g.node) for o in n.output if o}
    deps = [{made[x] for x in _reads(n) if x in made and made[x] != i} for i, n in enumerate(g.node)]
    order: list[int] = []
    done: set[int] = set()
    pending = list(range(len(g.node)))
    while pending:
        rest = [i for i in pending if not deps[i] <= done]
        ready = [i for i in pending if deps[i] <= done]
        if not ready:           # a cycle: leave the order alone, onnx.checker will say what is wrong
            return
        order += ready
        done |= set(ready)
        pending = rest
    nodes = [g.node[i] for i in order]
    del g.node[:]
    g.node.extend(nodes)


_PROBE = """
import sys
import onnxruntime as ort
o = ort.SessionOptions()
o.log_severity_level = 4
try:
    ort.InferenceSession(sys.argv[1], o, providers=["CPUExecutionProvider"])
except Exception as e:
    print(" ".join(str(e).split())[:300])
    sys.exit(3)
"""


def cpu_rejects(model: onnx.ModelProto) -> str | None:
    """Why ONNX Runtime's CPU provider refuses the model, or None when it loads it. Asked in a
    child process: onnxruntime 1.31 crashes (SIGSEGV) loading some float16 LSTM models on the
    CPU instead of raising an error."""
    import subprocess
    import sys

    with tempfile.TemporaryDirectory(prefix="rnnc-fp16-") as tmp:
        path = Path(tmp) / "model.onnx"
        onnx.save(model, str(path))
        r = subprocess.run([sys.executable, "-c", _PROBE, str(path)], capture_output=True, text=True, timeout=600)
    if r.returncode == 0:
        return None
    if r.returncode == 3:
        return r.stdout.strip() or "ONNX Runtime refused it"
    return f"ONNX Runtime crashed loading it (exit {r.returncode})"


def _cuda_here() -> bool:
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return False
    from .session import Session

    try:
        return Session(onnx.helper.make_model(onnx.helper.make_graph([], "probe", [], [])), providers="cuda") \
            .provider == "CUDAExecutionProvider"
    except Exception:  # noqa: BLE001 - CUDA listed but cannot start (no GPU, libraries missing)
        return False


# ---- measuring ------------------------------------------------------------------------------

def calibration_feeds(graph: Any, calibrate: Any) -> tuple[dict[str, np.ndarray], str]:
    """(inputs, where they came from): an .npz / dict keyed by the model's input names, or
    random inputs drawn to the spec's shapes with masked rows (importers/verify.random_feeds)."""
    if calibrate is None:
        from ..importers.verify import random_feeds

        feeds, sizes = random_feeds(graph, batch=CAL_BATCH, time=CAL_TIME, seed=0)
        dims = ", ".join(f"{k}={v}" for k, v in sizes.items())
        return feeds, f"random inputs, seed 0{', ' + dims if dims else ''}, with padded and holed masks"
    if isinstance(calibrate, dict):
        data, where = dict(calibrate), "calibration inputs"
    else:
        path = Path(calibrate)
        if not path.is_file():
            raise RnncError(f"--calibrate {path}: file not found")
        try:
            with np.load(path, allow_pickle=False) as z:
                data = {k: z[k] for k in z.files}
        except (OSError, ValueError) as e:
            raise RnncError(f"--calibrate {path}: not an .npz of arrays ({e})") from None
        where = f"--calibrate {path}"
    missing = [n for n in graph.inputs if n not in data]
    extra = sorted(set(data) - set(graph.inputs))
    if missing or extra:
        raise RnncError(f"{where}: expected arrays named after the model's inputs ({', '.join(graph.inputs)})"
                        + (f"; missing {', '.join(missing)}" if missing else "")
                        + (f"; unknown {', '.join(extra)}" if extra else ""))
    rows = next((int(a.shape[0]) for a in data.values() if np.ndim(a)), 0)
    return {n: np.asarray(data[n]) for n in graph.inputs}, f"{where} ({rows} rows)"


def measure(ref: onnx.ModelProto, model: onnx.ModelProto, feeds: dict[str, np.ndarray], provider: str
            ) -> dict[str, dict[str, Any]]:
    """Per output: max and mean absolute difference from the float32 model, and for outputs
    whose last dim is above 1 (class scores and the like) the share of rows whose argmax agrees."""
    from .session import Session

    want = Session(ref, providers=provider).run(feeds)
    got = Session(model, providers=provider).run(feeds)
    out: dict[str, dict[str, Any]] = {}
    for name, w in want.items():
        g = np.asarray(got[name], dtype=np.float64)
        w = np.asarray(w, dtype=np.float64)
        d = np.abs(g - w)
        d[np.isnan(d)] = np.inf          # a NaN where float32 has a number: an unbounded difference
        rec: dict[str, Any] = {"max_abs": float(d.max()) if d.size else 0.0,
                               "mean_abs": float(d.mean()) if d.size else 0.0, "argmax_agree": None}
        if w.ndim >= 2 and w.shape[-1] > 1 and w.size:
            rec["argmax_agree"] = float(np.mean(g.argmax(-1) == w.argmax(-1)))
        out[name] = rec
    return out


def worst_diff(info: dict[str, Any]) -> tuple[str, float] | None:
    drift = info.get("drift")
    if not drift:
        return None
    name = max(drift, key=lambda k: drift[k]["max_abs"])
    return name, drift[name]["max_abs"]


def _set_precision(model: onnx.ModelProto, info: dict[str, Any], *, relist: bool = False) -> None:
    """Store `info` in rnnc's metadata; relist: each layer's main-graph op types again (the
    quantization tool and the pruning changed them)."""
    for p in model.metadata_props:
        if p.key == KEY:
            meta = json.loads(p.value)
            meta["precision"] = info
            if relist:
                names = [l["name"] for l in meta.get("layers", [])]
                ops: dict[str, list[str]] = {n: [] for n in names}
                for n in model.graph.node:
                    layer = _layer_of(n.name, names)
                    if layer is not None:
                        ops[layer].append(n.op_type)
                for l in meta.get("layers", []):
                    if l.get("nodes") is not None:
                        l["nodes"] = ops[l["name"]]
            p.value = json.dumps(meta)
            return


def precision_of(model: onnx.ModelProto) -> dict[str, Any] | None:
    for p in model.metadata_props:
        if p.key == KEY:
            return json.loads(p.value).get("precision")
    return None


def summary_lines(model: onnx.ModelProto) -> list[str]:
    """What `compile` prints about the reduced precision (from the model's metadata)."""
    info = precision_of(model)
    if not info:
        return []
    out = [f"precision: {info['mode']}" + (" (for ONNX Runtime's CUDA provider)" if info["mode"] == "fp16" else "")]
    out += [f"  {layer}: {how}" for layer, how in info.get("layers", {}).items()]
    if info.get("kept_fp32"):
        out.append(f"  kept float32 (the CUDA provider runs them on the CPU): {', '.join(info['kept_fp32'])}")
    out += drift_lines(info)
    return out


def drift_lines(info: dict[str, Any]) -> list[str]:
    if info.get("drift") is None:
        return [f"  drift from float32: not measured ({info.get('not_measured', 'unknown')})"]
    out = [f"  drift from float32 on {info.get('calibration', 'calibration inputs')}:"]
    for name, d in info["drift"].items():
        text = f"    {name}: max |diff| {d['max_abs']:.3g}, mean |diff| {d['mean_abs']:.3g}"
        if d.get("argmax_agree") is not None:
            text += f", argmax agrees on {100 * d['argmax_agree']:.1f}% of rows"
        out.append(text)
    return out
