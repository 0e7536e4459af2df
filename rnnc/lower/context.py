"""The state a lowering rule works with: the builder, the IR, weights and the tensor
name of every IR reference emitted so far."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..emit.builder import GraphBuilder
from ..ir.graph import Graph, Layer
from ..ir.types import Ref
from .int8 import Int8

INT64_MIN = np.iinfo(np.int64).min


@dataclass(frozen=True)
class Lowered:
    """What a lowering rule returns: the tensor of each of the layer's ports, and for a
    stateful layer the final value of each carried state, in Layer.state_io() order (they
    leave the model as `<layer>/<port>_out`). A rule of a layer without carried states may
    return the ports alone, as a dict."""

    ports: dict[str, str]
    final_states: tuple[str, ...] = ()


@dataclass
class LowerCtx:
    b: GraphBuilder
    graph: Graph
    weights: dict[str, np.ndarray]
    target: str                              # "ort" or "portable"
    env: dict[Ref, str] = field(default_factory=dict)
    int8: Int8 | None = None                 # --quantize int8: what to quantize, and what was (rnnc/lower/int8.py)

    def x(self, layer: Layer, i: int = 0) -> str:
        return self.env[layer.inputs[i]]

    def mask(self, layer: Layer) -> str | None:
        return None if layer.mask_in is None else self.env[layer.mask_in]

    def w(self, layer_name: str, key: str) -> np.ndarray:
        return self.weights[f"{layer_name}/{key}"]

    # -- small helpers used by several rules --------------------------------------
    def transpose(self, x: str, perm: list[int], name: str = "Transpose") -> str:
        return self.b.op("Transpose", [x], perm=perm, name=name)

    def squeeze(self, x: str, axis: int) -> str:
        return self.b.op("Squeeze", [x, self.b.const([axis])])

    def unsqueeze(self, x: str, axis: int) -> str:
        return self.b.op("Unsqueeze", [x, self.b.const([axis])])

    def reverse(self, x: str, axis: int) -> str:
        """Reverse `x` along `axis` (a Slice with step -1)."""
        c = self.b.const
        return self.b.op("Slice", [x, c([-1]), c([INT64_MIN]), c([axis]), c([-1])], name="Reverse")
