"""Keras-like model summary of an IR graph: layer (type), output shape, params and, for
functional models, what each layer is connected to."""
from __future__ import annotations

import numpy as np

from .graph import Graph, Layer

NON_TRAINABLE = ("moving_mean", "moving_variance")


def _shape(layer: Layer) -> list[str]:
    ports = [p for p in layer.outputs if p != "mask"]
    return [str(layer.outputs[p]) for p in ports]


def _cell_rows(layer: Layer, indent: str) -> list[list[str]]:
    if len(layer.cells) < 2:
        return []
    rows = []
    for i, c in enumerate(layer.cells):
        n = sum(int(np.prod(s)) for s in c.params.values())
        kind = c.kind if c.custom else f"{c.kind}Cell"
        rows.append([f"{indent}cell {i} ({kind})", "(batch, " + ", ".join(map(str, c.output_shapes[0])) + ")",
                     f"{n:,}", ""])
    return rows


def _parts(layer: Layer) -> list[list[str]]:
    """Sub-rows: a Bidirectional's halves, and the cells of a stack."""
    if layer.sublayers:
        rows = []
        for half in layer.sublayers:
            rows.append([f"  {half.name} ({half.kind})", str(half.outputs["output"]), f"{half.param_count():,}", ""])
            rows += _cell_rows(half, "    ")
        return rows
    return _cell_rows(layer, "  ")


def _functional(graph: Graph) -> bool:
    names = list(graph.inputs) + list(graph.layers)
    prev = names[0] if len(graph.inputs) == 1 else None
    for layer in graph.layers.values():
        srcs = [r.layer for r in layer.inputs] + [r.layer for r in layer.initial_state]
        if len(srcs) != 1 or srcs[0] != prev or any(r.port not in ("output", "input") for r in layer.inputs):
            return True
        prev = layer.name
    return len(graph.inputs) > 1


def summary(graph: Graph) -> str:
    functional = _functional(graph)
    rows: list[list[str]] = []
    for name, t in graph.inputs.items():
        if functional:
            rows.append([f"{name} (InputLayer)", str(t), "0", "-"])
    for layer in graph.layers.values():
        shapes = _shape(layer)
        conn = ", ".join(str(r) for r in (*layer.inputs, *layer.initial_state))
        rows.append([f"{layer.name} ({layer.kind})", shapes[0], f"{layer.param_count():,}", conn])
        for extra in shapes[1:]:
            rows.append(["", extra, "", ""])
        rows += _parts(layer)
    head = ["Layer (type)", "Output Shape", "Param #"] + (["Connected to"] if functional else [])
    rows = [r[:len(head)] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if i != 2 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    rule = "─" * (sum(widths) + 2 * (len(widths) - 1))
    total = graph.param_count()
    frozen = sum(int(np.prod(s)) for l in graph.layers.values()
                 for k, s in l.params.items() if k.rsplit("/", 1)[-1] in NON_TRAINABLE)
    out = [f'Model: "{graph.name}"', rule, line(head), rule]
    out += [line(r) for r in rows]
    out += [rule, f"Total params: {total:,}", f"Trainable params: {total - frozen:,}",
            f"Non-trainable params: {frozen:,}"]
    return "\n".join(out)
