"""Runtime stage: ONNX Runtime sessions (the only place that imports onnxruntime)."""
from .session import Session, StrictGpuError, choose_providers

__all__ = ["Session", "StrictGpuError", "choose_providers"]
