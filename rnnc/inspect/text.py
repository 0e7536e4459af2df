"""The report as text: a header, one row per layer (what it became, why, its nodes, output
shapes and params), the CUDA placement of recurrent and control-flow nodes, and what
--strict-gpu would say. Models rnnc did not write get the generic node table instead.

Every line fits WIDTH columns: a table's widest columns wrap within themselves, and the
other lines (reasons, notes, placement) wrap with a hanging indent."""
from __future__ import annotations

import textwrap
from typing import Any

from .walk import show_shape

MAX_OPS = 48      # characters of the op summary column before it is cut
MAX_NODES = 200   # rows of the generic node table
MAX_SHAPE_NODES = 6
DEVICE = {"cuda": "CUDA", "cpu": "CPU", "control": "host+CUDA"}
WIDTH = 100       # columns of every line
GAP = 2           # spaces between table columns


def ops_summary(ops: dict[str, int]) -> str:
    """{"Transpose": 2, "LSTM": 1} -> "Transpose×2, LSTM", cut to MAX_OPS characters."""
    text = ", ".join(op if k == 1 else f"{op}×{k}" for op, k in ops.items()) or "-"
    return text if len(text) <= MAX_OPS else text[:MAX_OPS - 1].rsplit(", ", 1)[0] + ", …"


def _wrap(text: str, width: int, indent: str = "", hang: str = "") -> list[str]:
    return textwrap.wrap(text, width, initial_indent=indent, subsequent_indent=hang, break_long_words=True,
                         break_on_hyphens=False) or [indent.rstrip()]


def _wrap_cell(text: str, width: int) -> list[str]:
    """A table cell on several lines: broken after each "; " first, then at spaces."""
    pieces = text.split("; ")
    return [x for i, piece in enumerate(pieces)
            for x in _wrap(piece + (";" if i < len(pieces) - 1 else ""), width)]


def _natural(head: list[str], rows: list[list[str]]) -> int:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(head)]
    return sum(widths) + GAP * (len(widths) - 1)


def _table(head: list[str], rows: list[list[str]], right: set[int] = frozenset(),
           shrink: tuple[tuple[int, int], ...] = ()) -> tuple[str, list[list[str]]]:
    """(heading line, each row's lines). Wider than WIDTH: the `shrink` columns ((column,
    its narrowest width), ...), in order, give up width, and their cells wrap onto more lines."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(head)]
    over = sum(widths) + GAP * (len(widths) - 1) - WIDTH
    for i, narrowest in shrink:
        if over <= 0:
            break
        cut = min(over, widths[i] - max(narrowest, len(head[i])))
        if cut > 0:
            widths[i] -= cut
            over -= cut

    def lines(cells: list[str]) -> list[str]:
        parts = [[c] if len(c) <= w else _wrap_cell(c, w) for c, w in zip(cells, widths)]
        out = []
        for k in range(max(map(len, parts))):
            row = [p[k] if k < len(p) else "" for p in parts]
            out.append((" " * GAP).join(c.rjust(w) if i in right else c.ljust(w)
                                        for i, (c, w) in enumerate(zip(row, widths))).rstrip())
        return out
    return lines(head)[0], [lines(r) for r in rows]


def fit(lines: list[str]) -> list[str]:
    """Lines longer than WIDTH wrapped, continued 4 columns further in than they start."""
    out = []
    for line in lines:
        if len(line) <= WIDTH:
            out.append(line)
            continue
        lead = line[:len(line) - len(line.lstrip())]
        out += _wrap(line.strip(), WIDTH, lead, lead + "    ")
    return out


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
    if r.get("precision"):
        out += _precision(r)
        out.append("")
    out += _placement(r)
    return "\n".join(fit(out))


def _precision(r: dict[str, Any]) -> list[str]:
    """The reduced precision: each quantized layer, and the drift measured at compile time."""
    p = r["precision"]
    head = {"int8": "Precision: int8 (compile --quantize int8, for the CPU)",
            "fp16": "Precision: float16 (compile --precision fp16, for ONNX Runtime's CUDA provider)"}
    out = [head.get(p.get("mode"), f"Precision: {p.get('mode')}")]
    out += [f"  {layer}: {how}" for layer, how in (p.get("layers") or {}).items()]
    if p.get("kept_fp32"):
        out.append(f"  kept float32 (run on the CPU by the CUDA provider): {', '.join(p['kept_fp32'])}")
    drift = p.get("drift")
    if drift is None:
        out.append(f"  drift from float32: not measured ({p.get('not_measured') or 'unknown'})")
        return out
    out.append(f"  drift from float32, measured at compile time on {p.get('calibration') or 'calibration inputs'}:")
    for name, d in drift.items():
        text = f"    {name}: max |diff| {d['max_abs']:.3g}, mean |diff| {d['mean_abs']:.3g}"
        if d.get("argmax_agree") is not None:
            text += f", argmax agrees on {100 * d['argmax_agree']:.1f}% of rows"
        out.append(text)
    return out


def _layers(r: dict[str, Any]) -> list[str]:
    rows, details = [], []
    label = "quantized" if (r.get("precision") or {}).get("mode") == "int8" else "precision"
    for l in r["layers"]:
        shapes = "; ".join(f"{p} {show_shape(d)}" if p != "output" else show_shape(d)
                           for p, d in l["outputs"].items() if p != "mask") or "-"
        n = l["node_count"]
        nodes = f"{n['main']}" + (f" (+{n['all'] - n['main']} nested)" if n["all"] > n["main"] else "")
        rows.append([f"{l['name']} ({l['kind']})", l["lowered_as"], shapes, f"{l['params']:,}", nodes,
                     ops_summary(l["ops"])])
        details.append([f"why: {l['reason']}"] * bool(l["reason"]) + [f"note: {x}" for x in l["notes"]]
                       + [f"{label}: {l.get('precision')}"] * bool(l.get("precision"))
                       + [f"cost: {c}" for c in [cost_text(l.get("plan"))] if c])
    heading = ["Layer (type)", "Lowered as", "Output shape", "Params", "Nodes", "ONNX ops"]
    if _natural(heading, rows) > WIDTH:   # too wide: each layer's ops go on a line of their own
        heading.pop()
        for row, extra in zip(rows, details):
            extra.insert(0, f"ops: {row.pop()}")
    pieces = max((len(x) for r in rows for x in r[1].split("; ")), default=0) + 1   # "Lowered as" after its "; "
    head, lines = _table(heading, rows, {3}, shrink=((1, pieces), (4, 12), (0, 16), (2, 14), (1, 24), (4, 8)))
    out = [head, "─" * len(head)]
    for row, extra in zip(lines, details):
        out += row
        for x in extra:      # the reason and notes wrap under their heading ("why: ", "note: ")
            out += _wrap(x, WIDTH, "    ", "    " + " " * (x.index(": ") + 2))
    if r["nodes"]:
        out.append(f"model outputs: {', '.join(n['name'] for n in r['nodes'])} (Identity renames)")
    return out


def cost_text(plan: dict[str, Any] | None) -> str:
    """A plan's candidates and their modeled or measured times (rnnc/ir/plan.py), or ""."""
    if not (plan or {}).get("candidates"):
        return ""
    times = ", ".join(f"{c} {t:.2f} ms" + (" (chosen)" if c == plan.get("strategy") else "")
                      for c, t in plan["candidates"])
    note = f" at {plan['cost_note']}" if plan.get("cost_note") else ""
    return f"{plan.get('cost_source')}{note}: {times}"


def _generic(r: dict[str, Any]) -> list[str]:
    out = ["op counts (subgraphs included): " + ", ".join(f"{op} {k}" for op, k in r["op_counts"].items()), ""]
    rows = []
    for n in r["nodes"][:MAX_NODES]:
        outs = ", ".join(f"{o['name']} {show_shape(o['shape'])}" for o in n["outputs"])
        sub = ", ".join(f"{k}: {len(v)} nodes" for k, v in n.get("subgraphs", {}).items())
        rows.append([n["name"] or "(unnamed)", n["op"], outs + (f"  [{sub}]" if sub else "")])
    head, lines = _table(["Node", "Op", "Outputs"], rows, shrink=((2, 24), (0, 16), (1, 12)))
    out += [head, "─" * len(head)] + [x for row in lines for x in row]
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
