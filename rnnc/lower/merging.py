"""ONNX forms of the layers in rnnc/layers/merging.py."""
from __future__ import annotations
