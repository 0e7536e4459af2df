"""ONNX forms of the layers in rnnc/layers/shape.py."""
from __future__ import annotations
