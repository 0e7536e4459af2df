"""Validated spec objects: what the rest of the compiler reads. Plain data, no onnx."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .yamlsrc import KeyPath, Source

Dim = int | str


@dataclass(frozen=True)
class InputDecl:
    name: str
    dims: tuple[Dim, ...]
    dtype: str
    path: KeyPath


@dataclass(frozen=True)
class CellDecl:
    """A cell inside `RNN.cell`: a built-in cell type or a custom one from `cells:`."""

    type: str
    config: dict[str, Any]
    path: KeyPath


@dataclass(frozen=True)
class LayerDecl:
    type: str
    name: str
    inputs: tuple[str, ...] | None  # None: the previous layer's main output
    config: dict[str, Any]           # every key of the type, defaults filled in
    path: KeyPath
    explicit: frozenset[str] = frozenset()  # the keys the spec wrote


@dataclass(frozen=True)
class OutputDecl:
    name: str | None  # None: named after the reference
    ref: str
    path: KeyPath


@dataclass
class Spec:
    name: str
    inputs: dict[str, InputDecl]
    layers: list[LayerDecl]
    outputs: list[OutputDecl] | None
    weights: str | None
    seed: int
    cells: dict[str, Any]
    source: Source

    @property
    def file(self) -> str:
        return self.source.file
