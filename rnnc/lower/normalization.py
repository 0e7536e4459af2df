"""ONNX forms of the layers in rnnc/layers/normalization.py."""
from __future__ import annotations
