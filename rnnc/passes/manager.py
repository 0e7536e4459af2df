"""One pass protocol: `run(graph) -> PassResult(graph, changed)`. The manager names the
pass that failed and the passes that ran before it."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from ..errors import RnncError
from ..ir.graph import Graph


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
