"""Runtime stage: ONNX Runtime sessions (the only place that imports onnxruntime)."""
from .session import Session, choose_providers

__all__ = ["Session", "choose_providers"]
