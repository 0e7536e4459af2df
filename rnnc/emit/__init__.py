"""Emit stage: ModelProto assembly, check_model, atomic writes."""
from .builder import GraphBuilder
from .model import assemble, check, save_atomic

__all__ = ["GraphBuilder", "assemble", "check", "save_atomic"]
