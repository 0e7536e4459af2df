"""Layer kinds of the merging family (one LayerDef each; the ONNX forms are in rnnc/lower/merging.py)."""
from __future__ import annotations
