"""What every importer shares: its error type, the spec renderer, the in-memory check of an
imported spec and the atomic writes of the spec and its weights."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from ..errors import RnncError
from ..fileio import npz_writer, write_atomic
from ..spec import load_spec_text


class ImportProblem(RnncError):
    """The source model uses a layer or an option that rnnc cannot reproduce exactly, or its
    file is malformed. Nothing is written."""

    kind = "import error"


@dataclass
class Imported:
    """An imported model, checked in memory (it compiled) and not yet written."""

    spec_text: str                       # the spec, without `weights:` (set when written)
    weights: dict[str, np.ndarray]       # `<layer>/<param>` in Keras's layouts
    compiled: Any                        # rnnc.pipeline.Compiled
    notes: list[str] = field(default_factory=list)
    source: str = ""                     # the file it came from


def flow(value: Any) -> str:
    """One value in YAML flow style, quoted wherever YAML would read it as something else."""
    text = yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=1 << 30)
    text = text.strip()
    text = text.removesuffix("\n...")   # a bare scalar gets a document end marker
    return text.removesuffix("...").strip()


def render_spec(name: str, inputs: dict[str, dict], layers: list[dict], outputs: list[str] | None,
                header: str = "") -> str:
    """The spec as YAML text: one line per input and per layer (flow mappings)."""
    lines = [f"# {h}" for h in header.splitlines()] if header else []
    lines += ["rnnc: 1", f"name: {flow(name)}", "inputs:"]
    lines += [f"  {flow(k)}: {flow(v)}" for k, v in inputs.items()]
    lines.append("layers:")
    lines += [f"  - {flow(layer)}" for layer in layers]
    if outputs is not None:
        lines.append(f"outputs: {flow(list(outputs))}")
    return "\n".join(lines) + "\n"


def set_weights_key(spec_text: str, npz_name: str) -> str:
    """The spec text with `weights: <npz_name>`: replaces a one-line top-level `weights:`
    entry where there is one, else appends the key (comments and layout are kept)."""
    out, replaced = [], False
    for line in spec_text.splitlines():
        if not replaced and line.startswith("weights:"):
            out.append(f"weights: {flow(npz_name)}")
            replaced = True
        else:
            out.append(line)
    if not replaced:
        out.append(f"weights: {flow(npz_name)}")
    return "\n".join(out) + "\n"


def check_spec_text(text: str, weights: dict[str, np.ndarray], file: str):
    """Load and compile the imported spec in memory: every problem surfaces before anything
    is written. Returns the Compiled model."""
    # lazy: the pipeline imports onnx, and `rnnc --help` loads this module
    from ..pipeline import compile_spec

    return compile_spec(load_spec_text(text, file), weights=weights)


def output_paths(out: str | Path) -> tuple[Path, Path]:
    """-o SPEC.yaml → (SPEC.yaml, SPEC.npz beside it); checked before any work is done."""
    p = Path(out)
    if p.suffix not in (".yaml", ".yml"):
        raise RnncError(f"-o {p}: expected a spec file name ending in .yaml or .yml")
    if not p.parent.exists():
        raise RnncError(f"-o {p}: folder {p.parent} does not exist")
    return p, p.with_suffix(".npz")


def write_imported(imp: Imported, out: str | Path) -> tuple[Path, Path]:
    """Write SPEC.yaml and SPEC.npz beside it (the spec names the .npz by relative path)."""
    spec_path, npz_path = output_paths(out)
    # both or neither
    write_atomic({npz_path: npz_writer(imp.weights),
                  spec_path: set_weights_key(imp.spec_text, npz_path.name).encode("utf-8")})
    return spec_path, npz_path

