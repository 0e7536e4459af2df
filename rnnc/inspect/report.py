"""The inspect report: one JSON-able dict built from an ONNX model alone.

For a model rnnc wrote, the layer table comes from the metadata rnnc stores in it (each
layer's lowering, reason, notes, params, output dims) joined with the nodes found in the
graph under the layer's name prefix. Any other ONNX file gets the generic part only: model
facts, inputs and outputs, op counts and the node table. Both get the CUDA placement.

Fields (format "rnnc.inspect/1"):
  format, from ("model" | "spec"), file, written_by_rnnc,
  model {name, producer, ir_version, opsets, rnnc_version, target},
  inputs / outputs [{name, dtype, shape}], op_counts {op: n} (subgraphs included),
  node_count {main, all}, onnx_params (initializer elements),
  layers [{name, kind, lowering, plan, lowered_as, reason, notes, params, inputs, outputs,
           ops, node_count {main, all}, nodes, placement}],
  where plan is the layer's lowering plan as data (rnnc/ir/plan.py: strategy, requested,
  time_loop, scan_free, native_ops, fused, per_half, masked, unroll_steps, why, recognized,
  candidates [[strategy, ms], ...], cost_source, cost_note), or null for a model written
  before plans were stored,
  nodes: main-graph nodes of no layer (every node for a model rnnc did not write),
  placement [{node, op, layer, in, device, why}], strict_gpu {passes, cpu_nodes, ...},
  and for a model compiled with --quantize / --precision only: precision {mode (int8 | fp16),
  layers {layer: how}, calibration, drift {output: {max_abs, mean_abs, argmax_agree}} or null,
  ...}, and each layer's precision: how it was reduced, or null.
A node is {name, op, outputs [{name, dtype, shape}], subgraphs {attr: [node, ...]}}.
"""
from __future__ import annotations

from collections import Counter
from typing import Any

import onnx

from .placement import predict
from .walk import (
    RNN_OPS,
    Scope,
    all_scopes,
    is_output_rename,
    layer_of,
    op_counts,
    rnnc_metadata,
    scopes,
    subscopes_of,
    tensor_types,
)

FORMAT = "rnnc.inspect/1"


def build(model: onnx.ModelProto, *, file: str | None = None, origin: str = "model"
          ) -> tuple[dict[str, Any], Scope, dict[tuple[int, int], str]]:
    """(report, the model's graph tree, predicted devices keyed by (id(Scope), node index))."""
    root = scopes(model)
    types = tensor_types(model)
    meta = rnnc_metadata(model, file)
    names = {l.get("name") for l in meta["layers"]} if meta else set()

    def owner(n: onnx.NodeProto) -> str | None:
        return layer_of(n, names) if meta else None

    placed = predict(root, owner)
    init_names = {t.name for t in model.graph.initializer}
    report: dict[str, Any] = {
        "format": FORMAT,
        "from": origin,
        "file": file,
        "written_by_rnnc": meta is not None,
        "model": {
            "name": (meta or {}).get("name") or model.graph.name,
            "producer": f"{model.producer_name} {model.producer_version}".strip(),
            "ir_version": model.ir_version,
            "opsets": {o.domain or "ai.onnx": o.version for o in model.opset_import},
            "rnnc_version": (meta or {}).get("_version"),
            "target": (meta or {}).get("_target"),
        },
        "inputs": [_io(v.name, types) for v in model.graph.input if v.name not in init_names],
        "outputs": [_io(v.name, types) for v in model.graph.output],
        "op_counts": dict(op_counts(root).most_common()),
        "node_count": {"main": len(model.graph.node), "all": sum(len(s.graph.node) for s in all_scopes(root))},
        "onnx_params": sum(_size(t) for s in all_scopes(root) for t in s.graph.initializer),
        "layers": [],
        "nodes": [],
        "placement": placed["nodes"],
        "strict_gpu": placed["strict_gpu"],
    }
    if (meta or {}).get("precision"):
        # reduced precision (rnnc/runtime/precision.py): mode, quantized layers, measured drift
        report["precision"] = meta["precision"]
    outputs = {o.name for o in model.graph.output}
    by_layer: dict[str, list[onnx.NodeProto]] = {}
    for n in model.graph.node:
        name = owner(n)
        if name is None or (name == "output" and is_output_rename(n, outputs)):
            report["nodes"].append(node_record(root, n, types))
        else:
            by_layer.setdefault(name, []).append(n)
    if meta:
        for l in meta["layers"]:
            report["layers"].append(layer_record(root, l, by_layer.get(l.get("name"), []), types, placed["nodes"]))
            if "precision" in report:                        # what became int8 / fp16, or None
                rec = report["layers"][-1]
                rec["precision"] = (report["precision"].get("layers") or {}).get(l.get("name"))
                k = rec["ops"].get("DynamicQuantizeLSTM", 0)      # ONNX Runtime's int8 LSTM op
                if k and rec["lowered_as"] == "native":
                    rec["lowered_as"] = "native int8 LSTM (DynamicQuantizeLSTM" + (f" ×{k})" if k > 1 else ")")
    return report, root, placed["devices"]


def _io(name: str, types: dict) -> dict[str, Any]:
    t = types.get(name, {"dtype": "?", "shape": None})
    return {"name": name, "dtype": t["dtype"], "shape": t["shape"]}


def _size(t: onnx.TensorProto) -> int:
    n = 1
    for d in t.dims:
        n *= d
    return n


def node_record(scope: Scope, n: onnx.NodeProto, types: dict) -> dict[str, Any]:
    rec: dict[str, Any] = {"name": n.name, "op": n.op_type,
                           "outputs": [_io(o, types) for o in n.output if o]}
    subs = subscopes_of(scope, n)
    if subs:
        rec["subgraphs"] = {s.attr: [node_record(s, m, types) for m in s.graph.node] for s in subs}
    return rec


def flatten(scope: Scope, nodes: list[onnx.NodeProto], path: tuple[str, ...] = ()
            ) -> list[tuple[onnx.NodeProto, tuple[str, ...]]]:
    """Nodes and everything nested in them, each with its subgraph path (attr names)."""
    out = []
    for n in nodes:
        out.append((n, path))
        for s in subscopes_of(scope, n):
            out += flatten(s, list(s.graph.node), path + (s.attr or "",))
    return out


def layer_record(root: Scope, l: dict, nodes: list[onnx.NodeProto], types: dict,
                 placement: list[dict]) -> dict[str, Any]:
    flat = flatten(root, nodes)
    return {
        "name": l.get("name"), "kind": l.get("kind"), "lowering": l.get("lowering"),
        "plan": l.get("plan"), "lowered_as": lowered_as(l, flat), "reason": l.get("reason", ""), "notes": list(l.get("notes", [])),
        "params": l.get("params", 0), "inputs": list(l.get("inputs", [])), "outputs": dict(l.get("outputs", {})),
        "ops": dict(Counter(n.op_type for n in nodes)),
        "node_count": {"main": len(nodes), "all": len(flat)},
        "nodes": [node_record(root, n, types) for n in nodes],
        "placement": [p for p in placement if p["layer"] == l.get("name")],
    }


def lowered_as(l: dict, flat: list[tuple[onnx.NodeProto, tuple[str, ...]]]) -> str:
    """What the layer became, in words: "native LSTM", "bidirectional GRU op", "Loop (ONNX Scan)",
    "unrolled (20 steps)"; masked native layers add the Loop they take for other masks."""
    lowering = l.get("lowering")
    plan = l.get("plan") or {}
    if lowering == "unused":
        return "nothing (no model output depends on it)"
    if lowering in (None, "plain"):
        return "plain ONNX ops" if flat else "nothing (identity at inference)"
    if lowering == "unroll":
        steps = plan.get("unroll_steps")
        return f"unrolled ({steps} steps)" if steps else "unrolled"
    loops = Counter(n.op_type for n, _ in flat if n.op_type in ("Loop", "Scan"))
    if lowering == "loop":
        n = sum(loops.values())
        text = "Loop" if n == 1 else f"{n} Loops" + (" (one per direction)" if l.get("kind") == "Bidirectional" else "")
        return text + (" (ONNX Scan)" if loops["Scan"] == n else " (ONNX Scan and Loop)" if loops["Scan"] else "")
    fast = [n for n, path in flat if n.op_type in RNN_OPS and "else_branch" not in path]
    bidi = [n for n in fast if any(a.name == "direction" and a.s == b"bidirectional" for a in n.attribute)]
    if bidi:
        text = " + ".join(f"bidirectional {n.op_type} op" for n in bidi)
    else:
        ops = Counter(n.op_type for n in fast)
        text = "native " + " + ".join(op if k == 1 else f"{op} ×{k}" for op, k in ops.items()) if ops else "native"
    if any(n.op_type == "If" for n, _ in flat):
        text += "; Loop when the mask is not right-padded"
    return text
