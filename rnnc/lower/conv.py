"""ONNX forms of the layers in rnnc/layers/conv.py."""
from __future__ import annotations
