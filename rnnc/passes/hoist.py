"""Hoist the input-only part of custom cells out of the time loop.

A pass over each custom cell's expression graph: every node that does not depend on a state
(`x @ kernel + bias`, a gate's input projection, a slice of the input, a constant folded from
parameters) is marked `hoisted`. The Loop lowering computes hoisted nodes once for all time
steps (the time axis becomes one more leading axis, so `x @ kernel` is a single MatMul over
[T, B, in]) and the body reads them at step t. Built-in cells state their hoistable part
(`project`) directly in rnnc/cells/builtin.py; the pass marks it hoisted
(`Cell.project_hoisted`)."""
from __future__ import annotations

from dataclasses import replace

from ..cells.lang import state_dependent
from ..ir.graph import Cell, Graph
from .manager import PassResult, map_cells, no_plans, not_hoisted


def hoistable(cell: Cell) -> frozenset[int]:
    prog = cell.step_program
    dep = state_dependent(prog)
    return frozenset(n.id for n in prog.nodes if not dep[n.id] and n.op not in ("input", "param", "state"))


class HoistInputProjection:
    """Left out of the pipeline (compile_spec(hoist=False), for benchmarks), every cell's
    input projection stays inside the time loop."""

    name = "hoist-input-projection"
    after = ("reassociate-sums", "merge-products", "sink-slices")   # it marks node ids of the step they leave

    def precondition(self, graph: Graph) -> str | None:
        return no_plans(graph) or not_hoisted(graph)

    def run(self, graph: Graph) -> PassResult:
        return map_cells(graph, lambda c: replace(c, hoisted=hoistable(c)) if c.custom
                         else replace(c, project_hoisted=True))
