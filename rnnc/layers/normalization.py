"""Layer kinds of the normalization family (one LayerDef each; the ONNX forms are in rnnc/lower/normalization.py)."""
from __future__ import annotations
