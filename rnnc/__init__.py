"""rnnc: a graph compiler for recurrent neural networks (Keras-style specs → exact ONNX).

A thin package root: `import rnnc` loads the version and the errors only. load_spec,
compile_spec / Compiled (the pipeline, which imports onnx) and Session (onnxruntime) are
loaded on first use."""
from __future__ import annotations

from typing import TYPE_CHECKING

from ._lazy import lazy_exports
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

if TYPE_CHECKING:
    from .pipeline import Compiled, compile_spec
    from .runtime import Session
    from .spec import load_spec

# loaded on first use: the spec loader (the layer table, the IR), the pipeline (onnx) and the
# Session (onnxruntime), so that `rnnc --version` and `import rnnc.errors` stay light
_LAZY = {"compile_spec": ".pipeline", "Compiled": ".pipeline", "Session": ".runtime", "load_spec": ".spec"}


__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals())


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
