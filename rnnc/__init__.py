"""rnnc: a graph compiler for recurrent neural networks (Keras-style specs → exact ONNX)."""
__version__ = "0.1.0"

from .errors import InputError, LoweringError, RnncError, ShapeError, SpecError, WeightsError  # noqa: E402
from .pipeline import Compiled, compile_spec  # noqa: E402
from .spec import load_spec  # noqa: E402


def __getattr__(name: str):
    if name == "Session":   # imports onnxruntime only when asked
        from .runtime import Session
        return Session
    raise AttributeError(name)


__all__ = ["compile_spec", "load_spec", "Session", "Compiled", "RnncError", "SpecError", "ShapeError",
           "LoweringError", "WeightsError", "InputError", "__version__"]
