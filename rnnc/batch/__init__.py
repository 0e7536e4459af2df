"""Batch inference over datasets (`rnnc batch`): locally with rnnc.Session, or on Ray Data
(rnnc/batch/ray_run.py). Needs pyarrow (the `ray` extra: `pip install rnnc[ray]`)."""
from .core import ROW, BatchPredictor, read_table, run_local, write_table

__all__ = ["ROW", "BatchPredictor", "read_table", "run_local", "write_table"]
