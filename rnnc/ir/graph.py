"""The IR: a graph of typed layers. Frozen dataclasses, edited with dataclasses.replace;
networkx holds the data flow between layers (Graph.dag)."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import networkx as nx
import numpy as np

from ..cells.lang import Program, reads_inputs
from .plan import Plan
from .types import Ref, TensorType

if TYPE_CHECKING:
    from ..passes.recognize import Recognized


@dataclass(frozen=True)
class Cell:
    """One recurrent cell: a built-in (SimpleRNN, GRU, LSTM) or a custom cell."""

    kind: str                               # "SimpleRNN" | "GRU" | "LSTM" | "ConvLSTM" | custom name
    units: int
    config: dict[str, Any]                  # cell keys (activation, use_bias, ...)
    input_size: int
    states: tuple[tuple[str, tuple[int, ...]], ...]  # (name, per-example shape)
    output_size: int
    params: dict[str, tuple[int, ...]]      # param name -> shape (keys without the prefix)
    prefix: str = ""                        # where its params sit under the layer: "cells/1/"
    # custom cells (rnnc/cells/custom.py)
    inputs: tuple[tuple[str, tuple[int, ...]], ...] = ()   # per-step input shapes
    outputs: tuple[tuple[str, tuple[int, ...]], ...] = ()  # per-step output shapes
    program: Program | None = None          # the parsed step
    lowered: Program | None = None          # the step as optimized by passes (None: as parsed)
    inits: dict[str, str] = field(default_factory=dict)
    hoisted: frozenset[int] = frozenset()   # custom: step nodes computed for all steps before the loop
    project_hoisted: bool = False           # built-in: its input projection computed for all steps at once
    # custom: the ONNX op its step is proved to be, with the weight layout (passes/recognize.py),
    # else why it is none (one line; "" before the pass)
    recognized: "Recognized | None" = None
    not_recognized: str = ""

    @property
    def custom(self) -> bool:
        return self.program is not None

    @property
    def reads_input(self) -> bool:
        """Does the step read its input? A custom one may not (`h = tanh(h)`): then a time
        loop over it has nothing to scan (no ONNX Scan, a Loop)."""
        return not self.custom or reads_inputs(self.step_program)

    @property
    def step_program(self) -> Program:
        """The step the lowering emits (custom cells): optimized if a pass rewrote it."""
        prog = self.lowered if self.lowered is not None else self.program
        if prog is None:
            raise TypeError(f"cell {self.kind!r} is built in: it has no step program")
        return prog

    @property
    def output_shapes(self) -> tuple[tuple[int, ...], ...]:
        # a built-in cell's output is its first state, h: (units,), or (*spatial, filters) for ConvLSTM
        return tuple(s for _, s in self.outputs) if self.custom else (self.states[0][1],)


@dataclass(frozen=True)
class Recurrence:
    """How a recurrent layer (or one half of a Bidirectional) walks time and what it gives
    back, as Keras 3 runs it at inference; decided once in rnnc/ir/build.py.

    go_backwards          reads the sequence from its end; its output sequence is in
                          processing order (Keras), unless reverse_output.
    return_sequences      every step's output, else the last one.
    zero_output_for_mask  masked steps output zeros (else the previous output). A
                          Bidirectional sets it to return_sequences on both halves.
    reverse_output        the output sequence is flipped after the run: a Bidirectional's
                          backward half (Keras 3 flips the backward half's, never the
                          forward half's, whatever their go_backwards)."""

    go_backwards: bool = False
    return_sequences: bool = False
    zero_output_for_mask: bool = False
    reverse_output: bool = False


@dataclass(frozen=True)
class Layer:
    name: str
    kind: str                               # spec type: LSTM, Dense, Bidirectional, ...
    config: dict[str, Any]
    inputs: tuple[Ref, ...]
    outputs: dict[str, TensorType]          # port -> type; "output" first, then states
    params: dict[str, tuple[int, ...]] = field(default_factory=dict)  # key under `<name>/`
    initial_state: tuple[Ref, ...] = ()
    mask_in: Ref | None = None              # the mask this layer consumes, if any
    mask_out: Ref | None = None             # the mask that travels with its output
    input_masks: tuple[Ref | None, ...] = ()  # merges: the mask of each input (None: unmasked)
    mask_merge: str | None = None           # merges that make outputs["mask"]: "or" | "concat" (ir/semantics.py)
    recurrence: Recurrence | None = None    # recurrent layers and Bidirectional halves
    cells: tuple[Cell, ...] = ()            # recurrent layers: the cells, stacked in order
    sublayers: tuple["Layer", ...] = ()     # Bidirectional: (forward, backward)
    wrapped: "Layer | None" = None          # a wrapper's layer (TimeDistributed), built on one step's input
    time: int | str | None = None           # recurrent layers: the input's time dim
    states: tuple[tuple[str, tuple[int | str, ...]], ...] = ()  # recurrent: every state (port, dims), returned or not

    plan: Plan | None = None                # the lowering chosen (passes/choose_lowering.py)
    notes: tuple[str, ...] = ()             # e.g. "dropout ignored at inference"
    path: tuple[Any, ...] = ()              # spec key path, for errors
    line: int | None = None

    @property
    def is_recurrent(self) -> bool:
        return bool(self.cells or self.sublayers)

    @property
    def lowering(self) -> str | None:
        """The chosen strategy (plain, native, loop, unroll); None before choose-lowering."""
        return self.plan.strategy if self.plan else None

    @property
    def reason(self) -> str:
        """The plan in words (generated from its fields)."""
        return self.plan.reason if self.plan else ""

    @property
    def stateful(self) -> bool:
        if self.sublayers:   # Bidirectional: its halves are stateful together
            return all(s.stateful for s in self.sublayers)
        return bool(self.config.get("stateful")) and bool(self.cells)

    def state_io(self) -> list[tuple[str, str, str, tuple[int | str, ...]]]:
        """A stateful layer's state plumbing: (port, input name, output name, dims). A
        Bidirectional's ports are its halves' (`forward_state_h`, ..., `backward_state_c`)."""
        return [(p, f"{self.name}/{p}_in", f"{self.name}/{p}_out", d) for p, d in self.states] if self.stateful else []

    @property
    def state_ports(self) -> tuple[str, ...]:
        return tuple(p for p in self.outputs if p not in ("output", "forward", "backward", "mask")
                     and not p.startswith("output_"))

    @property
    def main_ports(self) -> tuple[str, ...]:
        """The ports a bare reference to the layer names: its output, the outputs of a cell
        with several outputs, or the halves of a Bidirectional with merge_mode null."""
        if "output" in self.outputs:
            return ("output",)
        if "forward" in self.outputs:
            return ("forward", "backward")
        return tuple(p for p in self.outputs if p.startswith("output_"))

    def param_count(self) -> int:
        return int(sum(int(np.prod(s)) for s in self.params.values()))


@dataclass(frozen=True)
class Output:
    name: str
    ref: Ref


@dataclass
class Graph:
    name: str
    inputs: dict[str, TensorType]
    layers: dict[str, Layer]                # topological order
    outputs: list[Output]
    file: str | None = None
    seed: int = 0
    # dims written differently that a layer needs equal: (a, b, why), checked at run time
    equal_dims: tuple[tuple[int | str, int | str, str], ...] = ()

    def type_of(self, ref: Ref) -> TensorType:
        if ref.port == "input":
            return self.inputs[ref.layer]
        return self.layers[ref.layer].outputs[ref.port]

    def dag(self) -> nx.DiGraph:
        """The data flow between model inputs and layers: an edge from each tensor's producer
        to each layer that reads it (inputs, initial states, masks)."""
        g = nx.DiGraph()
        g.add_nodes_from(self.inputs)
        for layer in self.layers.values():
            g.add_node(layer.name)
            reads = (*layer.inputs, *layer.initial_state, layer.mask_in, *layer.input_masks)
            g.add_edges_from((r.layer, layer.name) for r in reads if r is not None)
        return g

    def unused_layers(self) -> list[str]:
        """Layers no model output depends on (a stateful layer's carried states are outputs
        too): Keras leaves them out of the model, and so does the lowering."""
        g = self.dag()
        roots = {o.ref.layer for o in self.outputs} | {l.name for l in self.layers.values() if l.state_io()}
        needed = set(roots).union(*(nx.ancestors(g, r) for r in roots)) if roots else set()
        return [n for n in self.layers if n not in needed]

    def replace_layer(self, layer: Layer) -> "Graph":
        layers = dict(self.layers)
        layers[layer.name] = layer
        return replace(self, layers=layers)

    def param_count(self) -> int:
        return sum(l.param_count() for l in self.layers.values())

    def state_io(self) -> list[tuple[str, str, str, tuple[int | str, ...]]]:
        """Every stateful layer's (port, input name, output name, dims), in layer order."""
        return [io for l in self.layers.values() for io in l.state_io()]
