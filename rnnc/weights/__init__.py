"""Weights: Keras-default initializers and weights files."""
from .init import default_weights
from .io import check_weights, expected_params, read_weights, save_npz

__all__ = ["check_weights", "default_weights", "expected_params", "read_weights", "save_npz"]
