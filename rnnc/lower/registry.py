"""Lowering rules in a table keyed by (layer kind, strategy). Registering a key twice
raises; asking for a missing rule lists what exists. A rule's `supports(layer, target)`
returns None when it can lower the layer exactly, or the reason it cannot."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from ..errors import LoweringError


@dataclass(frozen=True)
class Rule:
    kind: str
    strategy: str
    lower: Callable[..., dict[str, str]]
    supports: Callable[..., str | None]


_RULES: dict[tuple[str, str], Rule] = {}


def _always(layer: Any, target: str) -> None:
    return None


def register(kind: str, strategy: str, *, supports: Callable[..., str | None] = _always):
    def deco(fn: Callable[..., dict[str, str]]) -> Callable[..., dict[str, str]]:
        key = (kind, strategy)
        if key in _RULES:
            raise ValueError(f"lowering rule {key} registered twice")
        _RULES[key] = Rule(kind, strategy, fn, supports)
        return fn
    return deco


def rule(kind: str, strategy: str) -> Rule:
    try:
        return _RULES[(kind, strategy)]
    except KeyError:
        have = ", ".join(f"{k}:{s}" for k, s in sorted(_RULES))
        raise LoweringError(f"no lowering rule for {kind} with strategy {strategy!r}; rules: {have}") from None




def has_rule(kind: str, strategy: str) -> bool:
    return (kind, strategy) in _RULES
