"""The report as text: a header, one row per layer (what it became, why, its nodes, output
shapes and params), the CUDA placement of recurrent and control-flow nodes, and what
--strict-gpu would say. Models rnnc did not write get the generic node table instead."""
from __future__ import annotations

from typing import Any

from .walk import show_shape

MAX_OPS = 48      # characters of the op summary column before it is cut
MAX_NODES = 200   # rows of the generic node table
MAX_SHAPE_NODES = 6
DEVICE = {"cuda": "CUDA", "cpu": "CPU", "control": "host+CUDA"}


def ops_summary(ops: dict[str, int]) -> str:
    """{"Transpose": 2, "LSTM": 1} -> "Transpose×2, LSTM", cut to MAX_OPS characters."""
    text = ", ".join(op if k == 1 else f"{op}×{k}" for op, k in ops.items()) or "-"
    return text if len(text) <= MAX_OPS else text[:MAX_OPS - 1].rsplit(", ", 1)[0] + ", …"


def _table(head: list[str], rows: list[list[str]], right: set[int] = frozenset()) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(head)]

    def line(cells: list[str]) -> str:
        return "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()
    return [line(head)] + [line(r) for r in rows]


def _io_lines(r: dict[str, Any]) -> list[str]:
    out = []
    for label in ("inputs", "outputs"):
        items = ", ".join(f"{v['name']} {v['dtype']} {show_shape(v['shape'])}" for v in r[label]) or "-"
        out.append(f"{label + ':':9}{items}")
    return out


def render(r: dict[str, Any]) -> str:
    m = r["model"]
    opsets = ", ".join(f"{d} {v}" for d, v in m["opsets"].items())
    out: list[str] = []
    if r["written_by_rnnc"]:
        where = "spec, compiled in memory (nothing written)" if r["from"] == "spec" else "compiled"
        params = sum(l["params"] for l in r["layers"])
        out.append(f'Model "{m["name"]}": {where} by rnnc {m["rnnc_version"]}, target {m["target"]}; '
                   f"ONNX IR {m['ir_version']}, opset {opsets}; {len(r['layers'])} layers, {params:,} params, "
                   f"{r['node_count']['all']} nodes ({r['node_count']['main']} in the main graph)")
    else:
        out.append(f'ONNX model "{m["name"]}" (no rnnc metadata: generic view); producer {m["producer"] or "-"}; '
                   f"IR {m['ir_version']}, opsets {opsets}; {r['node_count']['all']} nodes "
                   f"({r['node_count']['main']} in the main graph), {r['onnx_params']:,} initializer elements")
    out += _io_lines(r)
    out.append("")
    if r["written_by_rnnc"]:
        out += _layers(r)
    else:
        out += _generic(r)
    out.append("")
    out += _placement(r)
    return "\n".join(out)


def _layers(r: dict[str, Any]) -> list[str]:
    rows, details = [], []
    for l in r["layers"]:
        shapes = "; ".join(f"{p} {show_shape(d)}" if p != "output" else show_shape(d)
                           for p, d in l["outputs"].items() if p != "mask") or "-"
        n = l["node_count"]
        nodes = f"{n['main']}" + (f" (+{n['all'] - n['main']} nested)" if n["all"] > n["main"] else "")
        rows.append([f"{l['name']} ({l['kind']})", l["lowered_as"], shapes, f"{l['params']:,}", nodes,
                     ops_summary(l["ops"])])
        details.append([f"why: {l['reason']}"] * bool(l["reason"]) + [f"note: {x}" for x in l["notes"]])
    lines = _table(["Layer (type)", "Lowered as", "Output shape", "Params", "Nodes", "ONNX ops"], rows, {3})
    out = [lines[0], "─" * len(lines[0])]
    for row, extra in zip(lines[1:], details):
        out.append(row)
        out += [f"    {x}" for x in extra]
    if r["nodes"]:
        out.append(f"model outputs: {', '.join(n['name'] for n in r['nodes'])} (Identity renames)")
    return out


def _generic(r: dict[str, Any]) -> list[str]:
    out = ["op counts (subgraphs included): " + ", ".join(f"{op} {k}" for op, k in r["op_counts"].items()), ""]
    rows = []
    for n in r["nodes"][:MAX_NODES]:
        outs = ", ".join(f"{o['name']} {show_shape(o['shape'])}" for o in n["outputs"])
        sub = ", ".join(f"{k}: {len(v)} nodes" for k, v in n.get("subgraphs", {}).items())
        rows.append([n["name"] or "(unnamed)", n["op"], outs + (f"  [{sub}]" if sub else "")])
    lines = _table(["Node", "Op", "Outputs"], rows)
    out += [lines[0], "─" * len(lines[0])] + lines[1:]
    if len(r["nodes"]) > MAX_NODES:
        out.append(f"… {len(r['nodes']) - MAX_NODES} more nodes (--format json lists them all)")
    return out


def _placement(r: dict[str, Any]) -> list[str]:
    out = ["Placement on ONNX Runtime's CUDA provider (predicted from the model):"]
    if not r["placement"]:
        out.append("  no recurrent or control-flow nodes")
    for p in r["placement"]:
        where = f" [in {' > '.join(p['in'])}]" if p["in"] else ""
        out.append(f"  {p['node']} ({p['op']}): {DEVICE[p['device']]}: {p['why']}{where}")
    s = r["strict_gpu"]
    if s["passes"]:
        out.append("--strict-gpu: passes (no main-graph node is predicted on the CPU)")
    else:
        out.append(f"--strict-gpu: would fail where CUDA is present: {len(s['cpu_nodes'])} main-graph node(s) "
                   "on the CPU:")
        shape = [c for c in s["cpu_nodes"] if c["op"] not in ("LSTM", "GRU", "RNN")]
        out += [f"  {c['node']} ({c['op']}): {c['why']}" for c in s["cpu_nodes"] if c not in shape]
        if shape:
            names = ", ".join(c["node"] for c in shape[:MAX_SHAPE_NODES])
            more = f", … {len(shape) - MAX_SHAPE_NODES} more" if len(shape) > MAX_SHAPE_NODES else ""
            out.append(f"  {len(shape)} shape-arithmetic node(s) fed by Shape, which ONNX Runtime keeps on the CPU "
                       f"on purpose: {names}{more}")
    if s["subgraph_cpu_nodes"]:
        out.append(f"  and {s['subgraph_cpu_nodes']} node(s) inside Loop/If bodies on the CPU (not checked by "
                   "--strict-gpu)")
    return out
