"""Layer kinds of the conv family (one LayerDef each; the ONNX forms are in rnnc/lower/conv.py)."""
from __future__ import annotations
