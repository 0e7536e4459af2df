"""The lowering cost model: each exact candidate's time for one recurrent layer, from the
table tools/measure_costs.py measured (rnnc/passes/cost_table.py).

The table holds, per provider, built-in kind (LSTM, GRU, SimpleRNN), units and batch, the
time of one layer (input size = units, TABLE["time"] steps) as `native`, `loop` (the Scan)
and `unroll`; and, at one shape per kind, the same masked (a right-padded batch). The model:

- time per step per batch row, interpolated linearly in log(units) and log(batch) between
  the measured points (clamped outside them), times batch × time: a layer's cost is linear
  in its time steps (the unrolled form was measured at TABLE["time"] steps only);
- the input size is not an axis: the input projection is one MatMul for all steps in every
  candidate (the native op's and the hoisted one), so it shifts all of them alike;
- masked: each strategy's unmasked time times its measured masked/unmasked factor;
- a layer of stacked cells sums its cells; a Bidirectional counts both halves; a custom cell
  proved to be an op (rnnc/passes/recognize.py) costs as that op's built-in kind;
- symbolic dims take representative values (batch 32, time 50), and the plan says so.

The choice (`pick`) goes down the order native, loop, unroll and takes a later candidate only
when it is modeled at least MARGIN faster than the one kept (a tie keeps the simpler, native
form). CUDA has no table: cuDNN's fused kernels make the native op the fast form wherever it
is exact (the rule `None` below), as does a layer the table cannot cost (an unrecognized
custom cell: only the time loop, or unroll, is exact there anyway)."""
from __future__ import annotations

import math
from collections.abc import Mapping

from ..ir.graph import Cell, Layer
from .cost_table import TABLE

PROVIDERS = ("cpu", "cuda")
ORDER = ("native", "loop", "unroll")
MARGIN = 0.95            # a candidate displaces the one kept only when modeled ≤ 95 % of its time
DEFAULT_DIMS = {"batch": 32, "time": 50}
UNROLL_MAX_STEPS = 100   # unroll is a candidate up to this many (fixed) steps: the graph grows with each
OP_KIND = {"LSTM": "LSTM", "GRU": "GRU", "RNN": "SimpleRNN"}


def _interp(xs: list[float], ys: list[float], x: float) -> float:
    """Piecewise-linear in log(x), clamped at the ends."""
    if x <= xs[0]:
        return ys[0]
    if x >= xs[-1]:
        return ys[-1]
    lx = math.log(x)
    for (x0, y0), (x1, y1) in zip(zip(xs, ys), zip(xs[1:], ys[1:])):
        if x <= x1:
            w = (lx - math.log(x0)) / (math.log(x1) - math.log(x0))
            return y0 + w * (y1 - y0)
    return ys[-1]


class CostModel:
    """Modeled milliseconds per candidate for a provider's table."""

    def __init__(self, table: Mapping = TABLE, provider: str = "cpu"):
        if provider not in PROVIDERS:
            raise ValueError(f"provider {provider!r}: expected one of {', '.join(PROVIDERS)}")
        self.provider, self.table = provider, table
        steps = table["time"]
        # (kind, strategy) -> {units: {batch: ms per step per row}}
        self.grid: dict[tuple[str, str], dict[int, dict[int, float]]] = {}
        self.mask: dict[tuple[str, str], float] = {}
        plain: dict[tuple[str, int, int], dict[str, float]] = {}
        rows = [r for r in table["rows"] if r[0] == provider]
        for _, kind, units, batch, masked, times in rows:
            if not masked:
                plain[(kind, units, batch)] = times
                for s, ms in times.items():
                    self.grid.setdefault((kind, s), {}).setdefault(units, {})[batch] = ms / (batch * steps)
        for _, kind, units, batch, masked, times in rows:
            if masked and (kind, units, batch) in plain:
                for s, ms in times.items():
                    self.mask[(kind, s)] = ms / plain[(kind, units, batch)][s]

    @property
    def source(self) -> str:
        return f"{self.provider.upper()} cost table (onnxruntime {self.table['onnxruntime']}, {self.table['threads']} threads)"

    def step_ms(self, kind: str, strategy: str, units: int, batch: int) -> float | None:
        """Modeled ms per step per batch row; None where the table has no such kind/strategy."""
        g = self.grid.get((kind, strategy))
        if not g:
            return None
        us = sorted(g)
        per_units = []
        for u in us:
            bs = sorted(g[u])
            per_units.append(_interp([float(b) for b in bs], [g[u][b] for b in bs], batch))
        return _interp([float(u) for u in us], per_units, units)

    def layer_ms(self, layer: Layer, strategy: str, batch: int, steps: int) -> float | None:
        halves = layer.sublayers or (layer,)
        total = 0.0
        for half in halves:
            for cell in half.cells:
                kind = cell_kind(cell)
                per = None if kind is None else self.step_ms(kind, strategy, cell.units, batch)
                if per is None:
                    return None
                if layer.mask_in is not None:
                    per *= self.mask.get((kind, strategy if strategy != "unroll" else "loop"), 1.0)
                total += per * batch * steps
        return total

    def estimate(self, layer: Layer, candidates: tuple[str, ...]) -> tuple[dict[str, float], str] | None:
        """({candidate: modeled ms}, a note saying the shape) or None when there is no model
        (CUDA, a cell the table does not cover): then the rule is native where exact."""
        if self.provider == "cuda" or len(candidates) < 2:
            return None
        batch, steps, note = shape_of(layer)
        out = {}
        for c in candidates:
            t = self.layer_ms(layer, c, batch, steps)
            if t is None:
                return None
            out[c] = round(t, 3)
        return out, note


def cell_kind(cell: Cell) -> str | None:
    if cell.recognized is not None:
        return OP_KIND.get(cell.recognized.op)
    return None if cell.custom else cell.kind


def _sized(dim: object, name: str) -> tuple[int, str]:
    """A dim as a size: fixed as it is, symbolic (or unknown) at DEFAULT_DIMS[name]."""
    if isinstance(dim, int):
        return dim, f"{name} {dim}"
    size = DEFAULT_DIMS[name]
    return size, f"{name} {size} (symbolic {dim!r}: default)" if dim else f"{name} {size}"


def shape_of(layer: Layer) -> tuple[int, int, str]:
    """(batch, time steps, the words for them): fixed dims as they are, symbolic ones at
    DEFAULT_DIMS."""
    out = layer.outputs.get("output")
    batch, b_words = _sized(out.dims[0] if out is not None and out.dims else None, "batch")
    steps, t_words = _sized(layer.time, "time")
    return batch, steps, f"{b_words}, {t_words}"


def pick(times: Mapping[str, float]) -> str:
    """The candidate kept: down ORDER, a later one only when at least MARGIN faster."""
    order = [c for c in ORDER if c in times]
    best = order[0]
    for c in order[1:]:
        if times[c] <= MARGIN * times[best]:
            best = c
    return best
