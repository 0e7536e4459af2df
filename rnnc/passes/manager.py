"""One pass protocol: `run(graph) -> PassResult(graph, changed)`. The manager names the
pass that failed and the passes that ran before it."""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Protocol

from ..errors import RnncError
from ..ir.graph import Cell, Graph, Layer


@dataclass(frozen=True)
class PassResult:
    graph: Graph
    changed: bool


class Pass(Protocol):
    name: str

    def run(self, graph: Graph) -> PassResult: ...


class PassError(RnncError):
    kind = "internal error"


def run_passes(graph: Graph, passes: list[Pass]) -> Graph:
    done: list[str] = []
    for p in passes:
        try:
            graph = p.run(graph).graph
        except RnncError:
            raise
        except Exception as e:  # an internal bug: say where it happened
            raise PassError(f"pass {p.name!r} failed ({type(e).__name__}: {e}); "
                            f"passes run before it: {', '.join(done) or 'none'}") from e
        done.append(p.name)
    return graph


def map_custom_cells(graph: Graph, fn: Callable[[Cell], Cell]) -> PassResult:
    """Apply `fn` to every custom cell of every layer (Bidirectional halves included): the
    shape of the passes that rewrite a cell's step."""
    changed = False

    def visit(layer: Layer) -> Layer:
        nonlocal changed
        subs = tuple(visit(s) for s in layer.sublayers)
        cells = tuple(fn(c) if c.custom else c for c in layer.cells)
        if cells != layer.cells or subs != layer.sublayers:
            changed = True
            return replace(layer, cells=cells, sublayers=subs)
        return layer

    layers = {name: visit(layer) for name, layer in graph.layers.items()}
    return PassResult(replace(graph, layers=layers), changed)
