"""`rnnc inspect`: what each layer became, why, and where ONNX Runtime will run it.

    report = inspect_model("model.onnx")        # or an onnx.ModelProto / rnnc.Compiled
    report = inspect_spec("specs/x.yaml")       # compiled in memory; nothing is written
    print(report.to_text()); report.to_json(); report.to_dot()

Everything comes from the ONNX model alone: rnnc stores each layer's lowering and reason in
the model's metadata ("rnnc.model"); a model rnnc did not write gets a generic node table.
A model is checked before it is read (rnnc/metadata.py load_model: protobuf, UTF-8 text,
onnx.checker's full check, rnnc's table): a damaged file is an error, never a report.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx

from .. import metadata
from ..errors import ModelFileError, RnncError
from ..fileio import describe, hint, sniff
from ..pipeline import compile_spec
from . import dot, text
from . import report as _report
from .walk import Scope

__all__ = ["Report", "inspect_model", "inspect_spec", "inspect_path"]


@dataclass
class Report:
    model: onnx.ModelProto
    data: dict[str, Any]          # the JSON-able report (fields: see rnnc/inspect/report.py)
    root: Scope                   # the model's graphs, as placement saw them
    devices: dict[tuple[int, int], str]   # (id(Scope), node index) -> cuda | cpu | control

    def to_json(self) -> str:
        return json.dumps(self.data, indent=2, default=_jsonable)

    def to_text(self) -> str:
        return text.render(self.data)

    def to_dot(self) -> str:
        return dot.to_dot(self.model, self.root, self.data, self.devices)


def _jsonable(v: Any) -> Any:
    """json.dumps' fallback: text fields are checked to be UTF-8 before a report is built,
    so this is a safety net, never a crash."""
    if isinstance(v, (bytes, bytearray)):
        return bytes(v).decode("utf-8", "replace")
    return str(v)


def load_model(path: str | Path) -> onnx.ModelProto:
    """Read and check a model file (metadata.load_model); external weights are not needed
    to inspect the graph and are not loaded."""
    return metadata.load_model(path)


def inspect_model(model: Any, *, file: str | None = None) -> Report:
    """Inspect an ONNX model: a path, an onnx.ModelProto or an rnnc.Compiled."""
    if isinstance(model, (str, Path)):
        file = file or str(model)
        model = load_model(model)
    elif hasattr(model, "structure") and hasattr(model, "graph"):   # rnnc.Compiled (checked when compiled)
        model = model.structure         # the graph without the weights' data: all a report reads
    elif isinstance(model, onnx.ModelProto):
        metadata.check_model(model, file)
    if not isinstance(model, onnx.ModelProto):
        raise RnncError(f"inspect: expected a path, an onnx.ModelProto or rnnc.Compiled, got {type(model).__name__}")
    return Report(model, *_report.build(model, file=file))


def inspect_spec(spec: Any, *, weights: Any = None, target: str = "ort") -> Report:
    """Inspect a spec: lowered and emitted in memory, so the decisions show before anything
    is written. Takes what rnnc.compile_spec takes."""
    compiled = compile_spec(spec, weights=weights, target=target)
    file = str(spec) if isinstance(spec, (str, Path)) else None
    model = compiled.structure          # the graph without the weights' data: all a report reads
    return Report(model, *_report.build(model, file=file, origin="spec"))


def inspect_path(path: str | Path, *, weights: Any = None, target: str = "ort") -> Report:
    """`rnnc inspect FILE`: what the file is comes from its content (rnnc/fileio.py sniff): an
    ONNX model is read as a model, a text file as a spec. A file named .onnx that is not
    recognisable is read as a (damaged) model, so that the error says what is wrong with it;
    one that is text is refused (an .onnx download that is an HTML page, say)."""
    p = Path(path)
    kind = sniff(p)
    if kind == "missing":
        raise ModelFileError(f"file not found: {p} (expected a model .onnx or a spec .yaml)")
    if kind == "directory":
        raise ModelFileError(f"{p}: is a directory (expected a model .onnx or a spec .yaml)")
    is_onnx = p.suffix.lower() == ".onnx"
    if kind == "onnx" or (is_onnx and kind in ("binary", "empty")):
        if weights is not None:
            raise RnncError(f"--weights: expected a spec to compile, got the compiled model {p} (its weights are in it)")
        return inspect_model(p)
    if kind == "text" and not is_onnx:
        return inspect_spec(p, weights=weights, target=target)
    tip = hint(p, kind)
    raise ModelFileError(f"{p}: this is {describe(kind)}, not an ONNX model or a spec" + (f": {tip}" if tip else ""))
