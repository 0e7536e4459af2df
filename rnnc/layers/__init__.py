"""The layer kinds defined by LayerDef (rnnc/layers/base.py), one module per family. Importing
this package defines them all (the loader, the IR builder and the importers import it)."""
from .base import LAYER_DEFS, InferCtx, Inferred, LayerDef, RefCall, Refused, define

# the families, each defining its kinds when imported (after base: they import the IR types)
from . import activation, conv, merging, normalization, shape  # noqa: E402, F401, I001

__all__ = ["LAYER_DEFS", "InferCtx", "Inferred", "LayerDef", "RefCall", "Refused", "define"]
