"""The error hierarchy. Every error a user can cause is an RnncError: the CLI prints it
without a traceback and exits with code 2. An InternalError is a bug in rnnc, never the
user's: it is outside the RnncError tree, so code that accepts a clean refusal (an
RnncError) never accepts it; the CLI exits with code 1."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One located problem: where it is (file, line, key path) and what was expected."""

    message: str
    file: str | None = None
    line: int | None = None
    path: str | None = None

    def __str__(self) -> str:
        where = ""
        if self.file:
            where = f"{self.file}:{self.line}: " if self.line else f"{self.file}: "
        elif self.line:
            where = f"line {self.line}: "
        key = f"{self.path}: " if self.path else ""
        return f"{where}{key}{self.message}"


class RnncError(Exception):
    """Base class of every user-facing error (exit code 2)."""

    exit_code = 2
    kind = "error"

    def __init__(self, message: str | None = None, *, problems: list[Problem] | None = None):
        self.problems = list(problems or [])
        if message is None:
            message = "\n".join(str(p) for p in self.problems)
        super().__init__(message)

    def report(self) -> str:
        """The text the CLI prints: a heading per problem."""
        if len(self.problems) > 1:
            lines = [f"{self.kind}: {len(self.problems)} problems"]
            lines += [f"  - {p}" for p in self.problems]
            return "\n".join(lines)
        return f"{self.kind}: {self}"


class SpecError(RnncError):
    """The spec is malformed: wrong keys, types, references or shapes."""

    kind = "spec error"


class ShapeError(SpecError):
    """Tensor shapes do not fit together."""

    kind = "shape error"


class LoweringError(RnncError):
    """A requested lowering cannot be exact for this layer."""

    kind = "lowering error"


class WeightsError(RnncError):
    """Weights are missing, unexpected or misshapen."""

    kind = "weights error"


class InputError(RnncError):
    """A runtime input does not match the model (name, dtype, rank, dims)."""

    kind = "input error"


class ModelFileError(RnncError):
    """A model or data file cannot be read."""

    kind = "file error"


class InternalError(Exception):
    """A bug in rnnc, not in the user's input: a pass that crashed, an emitted model that
    fails onnx.checker. Deliberately not an RnncError (so `except RnncError` never swallows
    it); the CLI reports it as a bug and exits with code 1."""

    exit_code = 1
    kind = "internal error"
