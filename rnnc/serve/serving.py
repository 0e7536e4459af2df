"""The serving form of a stateful model: its states are `(batch, ...)` inputs and outputs with
a symbolic batch, so that a server (Triton's sequence batcher) can batch streams across
sequences, one sequence per batch row.

Keras's rule, and rnnc's by default, is that `stateful: true` needs a fixed batch (the states
are `(20, 64)`): one sequence then carries 20 streams in lockstep. The serving form is chosen
when compiling (`rnnc export triton SPEC`, or compile_serving here): every model input's first
dim (the batch) becomes symbolic (`batch`, or the name the spec already uses), and so does
the states'. Nothing else changes: each batch row is computed as before (the batch is only
a row index), so a row streams exactly as it would in a batch of its own."""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..errors import RnncError
from ..ir.build import STATEFUL_BATCH
from ..spec import Spec, load_spec

BATCH = "batch"


@contextlib.contextmanager
def serving_form() -> Iterator[None]:
    """Inside it, build/compile accept a stateful layer with a symbolic batch."""
    token = STATEFUL_BATCH.set("symbolic")
    try:
        yield
    finally:
        STATEFUL_BATCH.reset(token)


def symbolic_batch(spec: Spec) -> Spec:
    """The spec with every input's first dim symbolic: a fixed one (`[20, time, 50]`) becomes
    the batch name the spec uses elsewhere (`batch` if none)."""
    names = [d.dims[0] for d in spec.inputs.values() if d.dims and isinstance(d.dims[0], str)]
    if len(set(names)) > 1:
        raise RnncError(f"the serving form needs one batch dim shared by every input; the inputs' first dims are "
                        f"{', '.join(sorted(set(map(str, names))))}")
    name = names[0] if names else BATCH
    inputs = {k: replace(d, dims=(name, *d.dims[1:])) if d.dims else d for k, d in spec.inputs.items()}
    return replace(spec, inputs=inputs)


def compile_serving(spec: Spec | str | Path, **options: Any):
    """compile_spec (same options) in the serving form: every input's batch and every
    carried state's batch are symbolic. Returns a Compiled."""
    from ..pipeline import compile_spec

    if not isinstance(spec, Spec):
        spec = load_spec(spec)
    with serving_form():
        return compile_spec(symbolic_batch(spec), **options)
