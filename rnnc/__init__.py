"""rnnc: a graph compiler for recurrent neural networks (Keras-style specs → exact ONNX).

A thin package root: `import rnnc` (or any of its subpackages) loads the version, the errors
and the spec loader only. compile_spec / Compiled (the pipeline, which imports onnx) and
Session (onnxruntime) are loaded on first use."""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._version import __version__
from .errors import (
    InputError,
    InternalError,
    LoweringError,
    RnncError,
    ShapeError,
    SpecError,
    WeightsError,
)
from .spec import load_spec

if TYPE_CHECKING:
    from .pipeline import Compiled, compile_spec
    from .runtime import Session

_LAZY = {"compile_spec": ".pipeline", "Compiled": ".pipeline", "Session": ".runtime"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:   # imports onnx / onnxruntime only when asked
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "Compiled",
    "InputError",
    "InternalError",
    "LoweringError",
    "RnncError",
    "Session",
    "ShapeError",
    "SpecError",
    "WeightsError",
    "__version__",
    "compile_spec",
    "load_spec",
]
