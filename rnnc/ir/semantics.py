"""Keras 3's inference rules that more than one part of rnnc needs, decided here once.

rnnc/ir/build.py applies them while it builds the graph and records the outcome as typed
fields of each layer (`Layer.recurrence`, `Layer.input_masks`, `Layer.mask_merge`, the state
ports). The lowering and the NumPy reference read those fields; the Keras importer calls
these functions instead of keeping its own copy. See docs/semantics.md."""
from __future__ import annotations

from collections.abc import Sequence

MERGE_LAYERS = ("Concatenate", "Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum", "Dot")
# the merges Keras 3 computes element by element (layers/merging/base_merge.py `Merge`): their
# inputs broadcast a size-1 dim against a larger one
ELEMENTWISE_MERGES = ("Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum")


def state_ports(cell_states: Sequence[Sequence[str]]) -> list[str]:
    """The state ports of a recurrent layer, from each stacked cell's state names: Keras's
    names, `state` for a one-state cell and `state_<name>` (LSTM: state_h, state_c) for a
    cell with several; stacked cells add `_<i>`."""
    ports = []
    for i, names in enumerate(cell_states):
        suffix = f"_{i}" if len(cell_states) > 1 else ""
        ports += [("state" if len(names) == 1 else f"state_{n}") + suffix for n in names]
    return ports


def bidirectional_zero_output(return_sequences: bool) -> bool:
    """Keras 3's Bidirectional sets zero_output_for_mask = return_sequences on both halves,
    whatever the wrapped layer says."""
    return bool(return_sequences)


def merged_mask_rule(kind: str, input_has_mask: Sequence[bool], concat_on_last_axis: bool,
                     same_mask: bool) -> str | None:
    """How a merge layer's output mask is made (Keras 3, layers/merging):
    None      no mask at all, or one the output passes through unchanged (`passthrough`
              below: every input carries the same mask and nothing reshapes it);
    "or"      Add, Subtract, Multiply, Average, Maximum, Minimum (Merge.compute_mask): the
              OR of the inputs' masks (broadcast as the inputs are), and no mask when any
              input has none;
    "concat"  Concatenate: each input's mask broadcast over its features (an unmasked
              input counts as all true), concatenated along the axis, OR-ed over the last.
    Dot never has one (its compute_mask returns None; its call ignores the masks).
    Returns "passthrough", "or", "concat" or None."""
    if kind == "Dot" or not any(input_has_mask):
        return None
    if kind != "Concatenate":
        if not all(input_has_mask):
            return None
        return "passthrough" if same_mask else "or"
    return "passthrough" if same_mask and all(input_has_mask) and concat_on_last_axis else "concat"


def dot_axes(axes: int | tuple[int, int], x_rank: int, y_rank: int) -> tuple[int, int]:
    """Keras 3's Dot axes (layers/merging/dot.py): one int for both inputs or a pair, a
    negative axis counted from the end of its input."""
    a, b = (axes, axes) if isinstance(axes, int) else axes
    return (a % x_rank if a < 0 else a, b % y_rank if b < 0 else b)


KERAS_EPSILON = 1e-7   # keras.config.epsilon(): Dot(normalize=True) divides by max(norm, epsilon)
