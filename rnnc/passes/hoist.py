"""Hoist the input-only part of custom cells out of the time loop.

A pass over each custom cell's expression graph: every node that does not depend on a state
(`x @ kernel + bias`, a gate's input projection, a slice of the input, a constant folded from
parameters) is marked `hoisted`. The Loop lowering computes hoisted nodes once for all time
steps (the time axis becomes one more leading axis, so `x @ kernel` is a single MatMul over
[T, B, in]) and the body reads them at step t. Built-in cells state their hoistable part
(`project`) directly in rnnc/cells/builtin.py."""
from __future__ import annotations

from dataclasses import replace

from ..cells.lang import state_dependent
from ..ir.graph import Cell, Graph, Layer
from .manager import PassResult


def hoistable(cell: Cell) -> frozenset[int]:
    prog = cell.step_program
    dep = state_dependent(prog)
    return frozenset(n.id for n in prog.nodes if not dep[n.id] and n.op not in ("input", "param", "state"))


class HoistInputProjection:
    name = "hoist-input-projection"

    def run(self, graph: Graph) -> PassResult:
        changed = False

        def visit(layer: Layer) -> Layer:
            nonlocal changed
            subs = tuple(visit(s) for s in layer.sublayers)
            cells = tuple(replace(c, hoisted=hoistable(c)) if c.custom else c for c in layer.cells)
            if cells != layer.cells or subs != layer.sublayers:
                changed = True
                return replace(layer, cells=cells, sublayers=subs)
            return layer

        layers = {name: visit(layer) for name, layer in graph.layers.items()}
        out = replace(graph, layers=layers)
        return PassResult(out, changed)
