"""Layer kinds of the shape family (one LayerDef each; the ONNX forms are in rnnc/lower/shape.py)."""
from __future__ import annotations
