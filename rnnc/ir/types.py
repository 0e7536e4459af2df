"""Typed tensors with symbolic dims, and references between layers."""
from __future__ import annotations

from dataclasses import dataclass

Dim = int | str


@dataclass(frozen=True)
class TensorType:
    dtype: str              # "float32", "int32", "int64", "bool"
    dims: tuple[Dim, ...]   # ints are fixed sizes, strings are symbolic (batch, time, ...)

    @property
    def rank(self) -> int:
        return len(self.dims)

    def with_dims(self, *dims: Dim) -> "TensorType":
        return TensorType(self.dtype, tuple(dims))

    def __str__(self) -> str:
        return "(" + ", ".join(str(d) for d in self.dims) + ")"


@dataclass(frozen=True)
class Ref:
    """A tensor: port `port` of layer `layer`. Model inputs are Ref(name, "input")."""

    layer: str
    port: str = "output"

    def __str__(self) -> str:
        if self.port in ("output", "input"):
            return self.layer
        return f"{self.layer}.{self.port}"
