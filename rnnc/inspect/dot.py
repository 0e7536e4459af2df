"""The lowered graph as Graphviz DOT, and its rendering to SVG/PNG.

Nodes are grouped by the layer that emitted them (`subgraph "cluster_<layer>"`), labelled
with what the layer became; Loop/If/Scan subgraphs are nested clusters inside their node's
layer. Colours give the predicted CUDA placement: green cuDNN, red CPU fallback, blue
host-driven control flow, orange shape arithmetic kept on the CPU; a legend (the cluster
"cluster_legend", nodes "legend:*") says so in the picture. Rendering needs the
`dot` program; without it the DOT file is written instead, with a message saying how to
install Graphviz."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import onnx

from ..errors import RnncError
from ..fileio import write_atomic
from .walk import RNN_OPS, Scope, layer_of, show_shape, subscopes_of, tensor_types

FILL = {"cuda": "#c8e6c9", "cpu": "#ffcdd2", "control": "#bbdefb"}
SHAPE_CPU_FILL = "#ffe0b2"
INSTALL = "apt-get install graphviz"
BODY_COLOR = "#1e88e5"
IO_FILL = "#eeeeee"
# (id, label, node attributes): what each colour and shape means, drawn in the legend
LEGEND = [
    ("cuda", "runs on CUDA (cuDNN for LSTM/GRU/RNN)", {"fillcolor": FILL["cuda"]}),
    ("cpu", "falls back to the CPU", {"fillcolor": FILL["cpu"]}),
    ("control", "Loop/If/Scan: steered from the host, body on CUDA", {"fillcolor": FILL["control"]}),
    ("shape", "shape arithmetic ONNX Runtime keeps on the CPU", {"fillcolor": SHAPE_CPU_FILL}),
    ("rnn", "thick border: a recurrent op (LSTM/GRU/RNN)", {"fillcolor": "white", "penwidth": "2"}),
    ("body", "dashed box: a Loop/If/Scan subgraph", {"fillcolor": "white", "style": "dashed,rounded",
                                                      "color": BODY_COLOR}),
    ("io", "model input or output", {"fillcolor": IO_FILL, "shape": "ellipse"}),
]


def q(text: str) -> str:
    """A DOT quoted string (newlines become the \\n escape)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


class _Dot:
    def __init__(self, model: onnx.ModelProto, root: Scope, report: dict[str, Any],
                 devices: dict[tuple[int, int], str]):
        self.model, self.root, self.report, self.devices = model, root, report, devices
        self.types = tensor_types(model)
        # (id(Scope), node index) -> DOT node id. Not id(NodeProto): protobuf hands out a new
        # Python wrapper on every access, so object ids of nodes are not stable.
        self.ids: dict[tuple[int, int], str] = {}
        self.producers: dict[int, dict[str, str]] = {}   # id(Scope) -> tensor -> DOT node id
        self.edges: dict[tuple[str, str], str] = {}
        self.lines: list[str] = []

    def node_id(self, s: Scope, i: int) -> str:
        return self.ids.setdefault((id(s), i), f"n{len(self.ids)}")

    def index(self, s: Scope) -> None:
        """Give every node an id and record which node produces each tensor, per graph."""
        prod = self.producers.setdefault(id(s), {})
        for i, n in enumerate(s.graph.node):
            for y in n.output:
                if y:
                    prod[y] = self.node_id(s, i)
        for c in s.children:
            self.index(c)

    def source(self, s: Scope | None, tensor: str) -> str | None:
        while s is not None:                      # inner graphs see outer tensors
            if tensor in self.producers[id(s)]:
                return self.producers[id(s)][tensor]
            s = s.parent
        return None

    def emit_node(self, s: Scope, i: int, indent: str) -> None:
        n = s.graph.node[i]
        nid = self.node_id(s, i)
        first = next((y for y in n.output if y), None)
        shape = show_shape(self.types[first]["shape"]) if first in self.types else ""
        label = "\n".join(x for x in (n.op_type, n.name, shape) if x)
        dev = self.devices.get((id(s), i))
        if dev == "cpu" and n.op_type not in RNN_OPS:
            fill = SHAPE_CPU_FILL      # shape arithmetic, not a fallback of real work
        else:
            fill = FILL.get(dev or "", "white")
        extra = ", penwidth=2" if n.op_type in RNN_OPS else ""
        self.lines.append(f"{indent}{q(nid)} [label={q(label)}, fillcolor={q(fill)}{extra}];")
        for x in n.input:
            src = self.source(s, x) if x else None
            if src and src != nid:
                self.edges.setdefault((src, nid), x)
        for sub in subscopes_of(s, n):
            cid = f"cluster_{nid}_{sub.attr}"
            self.lines.append(f"{indent}subgraph {q(cid)} {{")
            self.lines.append(f'{indent}  label={q(f"{n.name or n.op_type} · {sub.attr} ({len(sub.graph.node)} nodes)")}; '
                              f'style="dashed,rounded"; color={q(BODY_COLOR)};')
            for k in range(len(sub.graph.node)):
                self.emit_node(sub, k, indent + "  ")
            self.lines.append(f"{indent}}}")
            if sub.graph.node:   # tie the control node to its subgraph
                self.edges.setdefault((nid, self.node_id(sub, 0)), f"@{cid}")

    def legend(self) -> None:
        """A boxed key to the colours and shapes, its entries stacked by invisible edges."""
        self.lines += ['  subgraph "cluster_legend" {',
                       '    label="legend"; style="rounded"; color="#bdbdbd"; fontsize=10;']
        for key, label, extra in LEGEND:
            attrs = ", ".join(f"{k}={q(v)}" for k, v in extra.items())
            self.lines.append(f"    {q('legend:' + key)} [label={q(label)}, {attrs}];")
        for (a, _, _), (b, _, _) in zip(LEGEND, LEGEND[1:]):
            self.lines.append(f"    {q('legend:' + a)} -> {q('legend:' + b)} [style=invis];")
        self.lines.append("  }")

    def build(self) -> str:
        root = self.root
        self.index(root)
        r = self.report
        title = f"{r['model']['name']}: lowered by rnnc" if r["written_by_rnnc"] else r["model"]["name"]
        self.lines += [f"digraph {q(r['model']['name'] or 'model')} {{",
                       f"  graph [rankdir=TB, compound=true, fontname=Helvetica, fontsize=11, labelloc=t, "
                       f"label={q(title)}];",
                       '  node [shape=box, style="rounded,filled", fontname=Helvetica, fontsize=10];',
                       '  edge [color="#555555", arrowsize=0.6];']
        inits = {t.name for t in self.model.graph.initializer}
        prod = self.producers[id(root)]
        for v in r["inputs"]:
            iid = f"input:{v['name']}"
            prod.setdefault(v["name"], iid)
            self.lines.append(f"  {q(iid)} [shape=ellipse, fillcolor={q(IO_FILL)}, "
                              f"label={q(v['name'] + chr(10) + v['dtype'] + ' ' + show_shape(v['shape']))}];")
        names = {l["name"] for l in r["layers"]}
        groups: dict[str | None, list[int]] = {}
        for i, n in enumerate(root.graph.node):
            groups.setdefault(layer_of(n, names) if r["written_by_rnnc"] else None, []).append(i)
        for l in r["layers"]:
            nodes = groups.get(l["name"], [])
            if not nodes:
                continue
            self.lines.append(f"  subgraph {q('cluster_' + l['name'])} {{")
            self.lines.append(f"    label={q(l['name'] + ' (' + l['kind'] + ')' + chr(10) + l['lowered_as'])}; "
                              'style="rounded"; color="#757575";')
            for i in nodes:
                self.emit_node(root, i, "    ")
            self.lines.append("  }")
        for i in groups.get(None, []):
            self.emit_node(root, i, "  ")
        for v in r["outputs"]:
            oid = f"output:{v['name']}"
            self.lines.append(f"  {q(oid)} [shape=ellipse, fillcolor={q(IO_FILL)}, "
                              f"label={q(v['name'] + chr(10) + v['dtype'] + ' ' + show_shape(v['shape']))}];")
            src = prod.get(v["name"]) if v["name"] not in inits else None
            if src:
                self.edges.setdefault((src, oid), v["name"])
        for (a, b), tensor in self.edges.items():
            if tensor.startswith("@"):
                self.lines.append(f"  {q(a)} -> {q(b)} [lhead={q(tensor[1:])}, style=dashed, color={q(BODY_COLOR)}];")
            else:
                self.lines.append(f"  {q(a)} -> {q(b)} [tooltip={q(tensor)}];")
        self.legend()
        self.lines.append("}")
        return "\n".join(self.lines) + "\n"


def to_dot(model: onnx.ModelProto, root: Scope, report: dict[str, Any], devices: dict[tuple[int, int], str]) -> str:
    return _Dot(model, root, report, devices).build()


def render(dot_text: str, out: str | Path, fmt: str) -> tuple[bool, str]:
    """Draw `dot_text` into `out` (fmt svg or png) with Graphviz. Returns (drawn, message).
    Without Graphviz, writes the DOT next to `out` (same name, .dot) and says how to install it."""
    out = Path(out)
    if not out.parent.exists():
        raise RnncError(f"--{fmt} {out}: folder {out.parent} does not exist")
    exe = shutil.which("dot")
    if exe is None:
        dot_file = out.with_suffix(".dot")
        write_atomic({dot_file: dot_text.encode("utf-8")})
        return False, (f"Graphviz is not installed (no `dot` program on PATH), so {out} was not drawn; "
                       f"wrote the graph as {dot_file} instead. Install Graphviz ({INSTALL} on Debian/Ubuntu, "
                       f"brew install graphviz on macOS), then run: dot -T{fmt} {dot_file} -o {out}")
    try:   # the picture comes back on stdout and is written all or nothing
        r = subprocess.run([exe, f"-T{fmt}"], input=dot_text.encode("utf-8"), capture_output=True, timeout=600)
    except subprocess.TimeoutExpired:
        raise RnncError(f"Graphviz took more than 10 minutes to draw {out}; use --format dot and a smaller "
                        "model, or draw it yourself with dot") from None
    if r.returncode != 0:
        err = r.stderr.decode("utf-8", "replace").strip()
        raise RnncError(f"Graphviz could not draw {out}: {err or f'exit code {r.returncode}'}")
    write_atomic({out: r.stdout})
    return True, f"wrote {out}"
