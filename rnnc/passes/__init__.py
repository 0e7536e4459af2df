"""Passes over the IR, one per file, run by the pass manager."""
from .choose_lowering import ChooseLowering
from .hoist import HoistInputProjection
from .manager import Pass, PassResult, run_passes
from .merge_products import MergeProducts
from .reassociate import ReassociateSums
from .recognize import RecognizeBuiltins
from .sink_slices import SinkSlices

__all__ = ["ChooseLowering", "HoistInputProjection", "MergeProducts", "ReassociateSums", "RecognizeBuiltins", "SinkSlices", "Pass", "PassResult", "run_passes"]
