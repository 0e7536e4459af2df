"""One pass protocol: `run(graph) -> PassResult(graph, changed)`. The manager names the
pass that failed and the passes that ran before it."""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Protocol

from ..errors import InternalError, RnncError
from ..ir.graph import Cell, Graph, Layer


@dataclass(frozen=True)
class PassResult:
    graph: Graph
    changed: bool


class Pass(Protocol):
    """A pass over the IR. `after`: the passes that, when the pipeline has them, must run
    before this one (checked when the pipeline is put together). `precondition(graph)`: why
    the graph is not ready for the pass, or None."""

    name: str
    after: tuple[str, ...]

    def precondition(self, graph: Graph) -> str | None: ...

    def run(self, graph: Graph) -> PassResult: ...


class PassError(InternalError):
    kind = "internal error"


def check_order(passes: list[Pass]) -> None:
    """Each pass once, and after the passes it names in `after` (an InternalError if not:
    the pipeline is rnnc's, never the user's)."""
    names = [p.name for p in passes]
    for i, p in enumerate(passes):
        if p.name in names[:i]:
            raise PassError(f"pass {p.name!r} is in the pipeline twice: {', '.join(names)}")
        late = [a for a in getattr(p, "after", ()) if a in names[i + 1:]]
        if late:
            raise PassError(f"pass {p.name!r} must run after {', '.join(late)}: pipeline {', '.join(names)}")


def run_passes(graph: Graph, passes: list[Pass], *, verify: Callable[[Graph], None] | None = None) -> Graph:
    """Run the passes in order. `verify(graph)` (the tests pass rnnc.ir.verify.verify_graph)
    checks the IR before the first pass and after each one."""
    check_order(passes)
    done: list[str] = []
    if verify is not None:
        verify(graph)
    for p in passes:
        where = f"passes run before it: {', '.join(done) or 'none'}"
        pre = getattr(p, "precondition", None)
        why = pre(graph) if pre is not None else None
        if why:
            raise PassError(f"pass {p.name!r} cannot run: {why}; {where}")
        try:
            graph = p.run(graph).graph
        except (RnncError, InternalError):
            raise
        except Exception as e:  # an internal bug: say where it happened
            raise PassError(f"pass {p.name!r} failed ({type(e).__name__}: {e}); {where}") from e
        if verify is not None:
            try:
                verify(graph)
            except InternalError as e:
                raise PassError(f"the IR after pass {p.name!r} is broken: {e}; {where}") from e
        done.append(p.name)
    return graph


def no_plans(graph: Graph) -> str | None:
    """Precondition of the passes that rewrite cells: lowering is not chosen yet."""
    planned = [l.name for l in graph.layers.values() if l.plan is not None]
    return f"lowering is already chosen for {', '.join(planned)}" if planned else None


def not_hoisted(graph: Graph) -> str | None:
    """Precondition of the passes that rewrite a step: hoisting marks node ids of the step as
    it is, so every rewrite comes before it."""
    marked = [c.kind for l in graph.layers.values() for half in (l.sublayers or (l,)) for c in half.cells
              if c.hoisted or c.project_hoisted]
    return f"cells {', '.join(sorted(set(marked)))} are already hoisted" if marked else None


def map_cells(graph: Graph, fn: Callable[[Cell], Cell]) -> PassResult:
    """Apply `fn` to every cell of every layer (Bidirectional halves included)."""
    changed = False

    def visit(layer: Layer) -> Layer:
        nonlocal changed
        subs = tuple(visit(s) for s in layer.sublayers)
        cells = tuple(fn(c) for c in layer.cells)
        if cells != layer.cells or subs != layer.sublayers:
            changed = True
            return replace(layer, cells=cells, sublayers=subs)
        return layer

    layers = {name: visit(layer) for name, layer in graph.layers.items()}
    return PassResult(replace(graph, layers=layers), changed)


def map_custom_cells(graph: Graph, fn: Callable[[Cell], Cell]) -> PassResult:
    """Apply `fn` to every custom cell: the shape of the passes that rewrite a cell's step."""
    return map_cells(graph, lambda c: fn(c) if c.custom else c)
