"""IR stage: typed layer graph, shape inference, parameter counts."""
from .build import build_graph
from .graph import Cell, Graph, Layer, Output
from .types import Ref, TensorType

__all__ = ["build_graph", "Cell", "Graph", "Layer", "Output", "Ref", "TensorType"]
