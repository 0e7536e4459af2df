"""A layer's lowering plan: what the choose-lowering pass decided, as data.

The pass (rnnc/passes/choose_lowering.py) makes one frozen `Plan` per layer; the lowering
rules (rnnc/lower/) read its fields instead of deciding again, emit stores it in the model's
metadata (`Plan.to_json`), and `inspect` reads it back (`Plan.from_json`, which checks every
field, since a model file is data from anywhere). The sentence `inspect` and `compile` print
(`Plan.reason`) is generated from the fields; nothing parses it."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

STRATEGIES = ("plain", "native", "loop", "unroll", "unused")
REQUESTS = ("auto", "native", "loop", "unroll")
TIME_LOOPS = ("scan", "loop")
NATIVE_OPS = ("LSTM", "GRU", "RNN")
CANDIDATES = ("native", "loop", "unroll")
COST_SOURCES = ("model", "tuned")


class PlanError(ValueError):
    """A plan read from a file does not hold together (rnnc/metadata.py turns it into a
    ModelFileError)."""


@dataclass(frozen=True)
class Plan:
    """How one layer is lowered.

    strategy    plain (no recurrence), native (ONNX LSTM/GRU/RNN ops), loop (a time loop
                whose body is the cell equations), unroll (the body once per step) or
                unused (no model output depends on the layer: nothing is emitted for it).
    requested   what the spec's `lowering:` asked for (auto, native, loop, unroll); None for
                a layer without recurrence.
    time_loop   the ONNX op of the time loop: "scan" or "loop". For strategy loop, the loop
                itself; for a masked native layer, the exact fallback it takes for batches
                that are not right-padded; else None.
    scan_free   the time loop is a Loop because the step reads no input (a Scan needs a
                tensor to scan), not because a Loop was asked for.
    native_ops  the ONNX ops of a native layer, one per stacked cell (a Bidirectional's:
                one per half, or the one fused op).
    fused       a native Bidirectional as ONE op with direction=bidirectional.
    per_half    a native Bidirectional not fused: native_ops lists the forward half's ops,
                then the backward half's.
    masked      the layer consumes a mask. A native layer then checks per batch at run time
                whether every row is right-padded (native op with sequence_lens) or not (the
                exact time loop); a time loop applies the mask step by step.
    unroll_steps  the number of unrolled steps (strategy unroll).
    why         why this strategy rather than the native op, in words ("requested", or what
                the native op cannot do exactly); "" when native or plain.
    recognized  a native layer of custom cells: the ONNX op each cell was proved to be, in
                words (rnnc/passes/recognize.py); "" otherwise.
    candidates  `lowering: auto` with more than one exact lowering: each exact candidate
                (native, loop, unroll) with its time in ms, modeled (rnnc/passes/cost_model.py)
                or measured (`compile --tune`); the strategy is one of them. () otherwise.
    cost_source "model" or "tuned" (where the times come from) with candidates, else "".
    cost_note   the shape and table the times are for ("batch 32 (symbolic 'batch':
                representative default), time 50; CPU cost table ...").
    """

    strategy: str
    requested: str | None = None
    time_loop: str | None = None
    scan_free: bool = False
    native_ops: tuple[str, ...] = ()
    fused: bool = False
    per_half: bool = False
    masked: bool = False
    unroll_steps: int | None = None
    why: str = ""
    recognized: str = ""
    candidates: tuple[tuple[str, float], ...] = ()
    cost_source: str = ""
    cost_note: str = ""

    def __post_init__(self) -> None:
        problems = _check(self)
        if problems:
            raise PlanError("; ".join(problems))

    @property
    def cost_text(self) -> str:
        """The candidates in words ("model (...): native 1.20 ms, loop 0.98 ms (chosen)"), or ""."""
        if not self.candidates:
            return ""
        times = ", ".join(f"{c} {t:.2f} ms" + (" (chosen)" if c == self.strategy else "") for c, t in self.candidates)
        return f"{self.cost_source}" + (f" at {self.cost_note}" if self.cost_note else "") + f": {times}"

    @property
    def reason(self) -> str:
        """The plan in one sentence (generated, never parsed)."""
        s = self.strategy
        if s == "plain":
            return ""
        if s == "unused":
            return "not computed: no model output depends on this layer"
        if s == "unroll":
            text = f"unroll: {self.why or 'requested'}, time = {self.unroll_steps}"
            return text + ("; mask applied at each step" if self.masked else "")
        if s == "loop":
            text = f"Loop: {self.why or 'requested'}"
            if self.scan_free:
                text += "; as ONNX Loop (the step reads no input for a Scan to scan)"
            elif self.time_loop == "scan":
                text += "; as ONNX Scan (faster than Loop on ONNX Runtime)"
            return text
        ops = self.native_ops
        if self.fused:
            text = f"native: one ONNX {ops[0]} op, direction=bidirectional"
        elif self.per_half:
            n = len(ops) // 2
            text = "native: one ONNX op per half" if n == 1 else f"native: {n} stacked ONNX ops per half"
        elif len(ops) == 1:
            text = f"native: ONNX {ops[0]} op"
        else:
            text = f"native: {len(ops)} stacked ONNX ops ({', '.join(ops)})"
        if self.recognized:
            text += f"; custom cell {self.recognized}"
        if self.masked:
            loop = "Scan" if self.time_loop == "scan" else "Loop"
            text += (f"; mask: right-padded batches run it with sequence_lens, others the exact {loop} "
                     "(checked per batch at run time)")
        return text

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["native_ops"] = list(self.native_ops)
        d["candidates"] = [[c, t] for c, t in self.candidates]
        return d

    @classmethod
    def from_json(cls, d: Any) -> "Plan":
        """A plan from a model's metadata, every field checked (raises PlanError)."""
        if not isinstance(d, dict):
            raise PlanError(f"expected an object, got {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        extra = sorted(set(d) - known)
        if extra:
            raise PlanError(f"unknown field(s) {', '.join(map(repr, extra))}")
        if "strategy" not in d:
            raise PlanError("no strategy")
        kw = dict(d)
        ops = kw.get("native_ops", [])
        if not isinstance(ops, list):
            raise PlanError("native_ops is not a list")
        kw["native_ops"] = tuple(ops)
        cands = kw.get("candidates", [])
        if not (isinstance(cands, list) and all(isinstance(c, list) and len(c) == 2 and isinstance(c[0], str)
                                                and isinstance(c[1], (int, float)) and not isinstance(c[1], bool)
                                                for c in cands)):
            raise PlanError("candidates is not a list of [strategy, ms] pairs")
        kw["candidates"] = tuple((c, float(t)) for c, t in cands)
        for k in ("scan_free", "fused", "per_half", "masked"):
            if not isinstance(kw.get(k, False), bool):
                raise PlanError(f"{k} is not true or false")
        for k in ("strategy", "why", "recognized", "cost_source", "cost_note"):
            if not isinstance(kw.get(k, ""), str):
                raise PlanError(f"{k} is not a string")
        for k in ("requested", "time_loop"):
            if not isinstance(kw.get(k), (str, type(None))):
                raise PlanError(f"{k} is not a string or null")
        n = kw.get("unroll_steps")
        if n is not None and (not isinstance(n, int) or isinstance(n, bool)):
            raise PlanError("unroll_steps is not an integer or null")
        return cls(**kw)


def _check(p: Plan) -> list[str]:
    """What makes a plan inconsistent (each a phrase)."""
    out = []
    if p.strategy not in STRATEGIES:
        out.append(f"strategy {p.strategy!r} is not one of {', '.join(STRATEGIES)}")
        return out
    if p.requested is not None and p.requested not in REQUESTS:
        out.append(f"requested {p.requested!r} is not one of {', '.join(REQUESTS)}")
    if p.time_loop is not None and p.time_loop not in TIME_LOOPS:
        out.append(f"time_loop {p.time_loop!r} is not one of {', '.join(TIME_LOOPS)}")
    if any(not isinstance(o, str) or o not in NATIVE_OPS for o in p.native_ops):
        out.append(f"native_ops {list(p.native_ops)!r}: expected ONNX ops among {', '.join(NATIVE_OPS)}")
    if p.strategy in ("plain", "unused") and (p.requested or p.time_loop or p.native_ops or p.fused or p.unroll_steps
                                               or p.masked or p.scan_free or p.per_half):
        out.append(f"a {p.strategy} layer has no recurrent lowering fields")
    if p.strategy not in ("plain", "unused") and p.requested is None:
        out.append(f"strategy {p.strategy} without what was requested")
    if p.strategy == "native" and not p.native_ops:
        out.append("a native plan without ops")
    if p.strategy != "native" and (p.native_ops or p.fused or p.recognized):
        out.append(f"strategy {p.strategy} with native ops")
    if p.fused and (len(p.native_ops) != 1 or p.per_half):
        out.append("a fused plan has exactly one op")
    if p.per_half and len(p.native_ops) % 2:
        out.append("a per-half plan lists as many ops for each half")
    if p.strategy == "loop" and p.time_loop is None:
        out.append("a loop plan without its time-loop op")
    if p.strategy == "native" and p.masked != (p.time_loop is not None):
        out.append("a masked native plan names its fallback time loop, an unmasked one none")
    if p.strategy == "unroll" and (not isinstance(p.unroll_steps, int) or p.unroll_steps < 1 or p.time_loop):
        out.append("an unroll plan has a positive step count and no time loop")
    if p.strategy != "unroll" and p.unroll_steps is not None:
        out.append("unroll_steps outside an unroll plan")
    if p.scan_free and p.time_loop != "loop":
        out.append("scan_free without a Loop")
    names = [c for c, _ in p.candidates]
    if any(c not in CANDIDATES for c in names) or len(set(names)) != len(names):
        out.append(f"candidates {names!r}: expected distinct strategies among {', '.join(CANDIDATES)}")
    if any(not isinstance(t, (int, float)) or isinstance(t, bool) or not t >= 0 for _, t in p.candidates):
        out.append("candidate times are non-negative numbers (ms)")
    if p.candidates and (p.strategy not in names or p.requested != "auto"):
        out.append("candidates belong to a lowering: auto plan that took one of them")
    if bool(p.candidates) != bool(p.cost_source) or (p.cost_source and p.cost_source not in COST_SOURCES):
        out.append(f"cost_source is one of {', '.join(COST_SOURCES)} with candidates, else empty")
    if p.cost_note and not p.candidates:
        out.append("cost_note without candidates")
    return out


PLAIN = Plan("plain")
UNUSED = Plan("unused")
