"""The layer kinds defined by LayerDef (rnnc/layers/base.py), one module per family. Importing
this package defines them all (the loader, the IR builder and the importers import it). The
IR builder imports rnnc.layers.base itself, so the order of these imports does not matter."""
from . import activation, attention, conv, normalization, shape  # noqa: F401  (each defines its kinds)
from .base import LAYER_DEFS, InferCtx, Inferred, LayerDef, RefCall, Refused, define

__all__ = ["LAYER_DEFS", "InferCtx", "Inferred", "LayerDef", "RefCall", "Refused", "define"]
