"""Spec stage: YAML/JSON → validated Spec objects with line numbers for errors."""
from .loader import load_spec, load_spec_text, validate
from .model import CellDecl, InputDecl, LayerDecl, OutputDecl, Spec

__all__ = ["CellDecl", "InputDecl", "LayerDecl", "OutputDecl", "Spec", "load_spec", "load_spec_text", "validate"]
