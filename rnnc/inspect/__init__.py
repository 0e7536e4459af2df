"""`rnnc inspect`: what each layer became, why, and where ONNX Runtime will run it.

    report = inspect_model("model.onnx")        # or an onnx.ModelProto / rnnc.Compiled
    report = inspect_spec("specs/x.yaml")       # compiled in memory; nothing is written
    print(report.to_text()); report.to_json(); report.to_dot()

Everything comes from the ONNX model alone: rnnc stores each layer's lowering and reason in
the model's metadata ("rnnc.model"); a model rnnc did not write gets a generic node table.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx

from ..errors import ModelFileError, RnncError
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
        return json.dumps(self.data, indent=2)

    def to_text(self) -> str:
        return text.render(self.data)

    def to_dot(self) -> str:
        return dot.to_dot(self.model, self.root, self.data, self.devices)


def load_model(path: str | Path) -> onnx.ModelProto:
    p = Path(path)
    if not p.is_file():
        raise ModelFileError(f"model file not found: {p}")
    if p.stat().st_size == 0:
        raise ModelFileError(f"{p} is empty: expected an ONNX model")
    try:
        # External weights are not needed to inspect the graph.
        return onnx.load(str(p), load_external_data=False)
    except Exception as e:  # noqa: BLE001 - protobuf raises several types
        raise ModelFileError(f"cannot read {p}: expected an ONNX model (protobuf), got unreadable data ({e})") from None


def inspect_model(model: Any, *, file: str | None = None) -> Report:
    """Inspect an ONNX model: a path, an onnx.ModelProto or an rnnc.Compiled."""
    if isinstance(model, (str, Path)):
        file = file or str(model)
        model = load_model(model)
    elif hasattr(model, "model") and hasattr(model, "graph"):   # rnnc.Compiled
        model = model.model
    if not isinstance(model, onnx.ModelProto):
        raise RnncError(f"inspect: expected a path, an onnx.ModelProto or rnnc.Compiled, got {type(model).__name__}")
    return Report(model, *_report.build(model, file=file))


def inspect_spec(spec: Any, *, weights: Any = None, target: str = "ort") -> Report:
    """Inspect a spec: lowered and emitted in memory, so the decisions show before anything
    is written. Takes what rnnc.compile_spec takes."""
    compiled = compile_spec(spec, weights=weights, target=target)
    file = str(spec) if isinstance(spec, (str, Path)) else None
    return Report(compiled.model, *_report.build(compiled.model, file=file, origin="spec"))


def inspect_path(path: str | Path, *, weights: Any = None, target: str = "ort") -> Report:
    """`rnnc inspect FILE`: an .onnx file is read as a model, anything else as a spec."""
    p = Path(path)
    if p.suffix.lower() == ".onnx":
        if weights is not None:
            raise RnncError(f"--weights: expected a spec to compile, got the compiled model {p} (its weights are in it)")
        return inspect_model(p)
    if not p.is_file():
        raise ModelFileError(f"file not found: {p} (expected a model .onnx or a spec .yaml)")
    return inspect_spec(p, weights=weights, target=target)
