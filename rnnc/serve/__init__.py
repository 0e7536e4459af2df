"""Serving: the serving form of stateful models (serving.py) and Triton model repositories
(triton.py). Needs nothing beyond the core install; the tests use the `serve` extra. Loaded on
first use, as in rnnc/__init__.py: the CLI builds its parser from rnnc.serve.commands, which
must not load the IR for --help/--version."""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .serving import compile_serving, serving_form, symbolic_batch
    from .triton import TritonModel, check_state_names, describe, export, render

_LAZY = {"compile_serving": ".serving", "serving_form": ".serving", "symbolic_batch": ".serving",
         "TritonModel": ".triton", "check_state_names": ".triton", "describe": ".triton", "export": ".triton",
         "render": ".triton"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = ["TritonModel", "check_state_names", "compile_serving", "describe", "export", "render",
           "serving_form", "symbolic_batch"]
