"""The CLI side of importing: `rnnc import keras|torch` and `rnnc compile --weights-from
keras|torch [--verify]` (rnnc/cli.py parses the arguments and calls these)."""
from __future__ import annotations

import argparse
import zipfile
from pathlib import Path
from typing import Any

from ..errors import RnncError
from ..ir import build_graph
from ..spec import load_spec
from .cli_args import IMPORT_HELP, VERIFY_HELP, WEIGHTS_FROM, add_import_parser  # noqa: F401  (re-exported)
from .common import Imported, output_paths, write_imported
from .keras_file import import_keras, import_keras_weights, keras_weights_for_graph
from .torch_state import torch_weights_for_graph
from .torch_verify import verify_torch
from .verify import VerifyUnavailable, verify_keras


def cmd_import(args: argparse.Namespace) -> int:
    output_paths(args.output)                     # a bad -o fails before any work
    model = Path(args.model)
    if getattr(args, "fixed_shapes", False) and (args.framework != "keras" or args.spec is not None):
        raise RnncError("--fixed-shapes applies to importing a .keras file (its stored input shapes); with "
                        "--spec the spec's own shapes are used")
    if args.framework == "keras" and args.spec is None:
        if model.name.endswith(".weights.h5") or model.suffix == ".h5":
            raise RnncError(f"{model}: a weights file holds no architecture: pass the spec it belongs to with "
                            "--spec SPEC.yaml (or import the .keras file)")
        imp = import_keras(model, spec_file=Path(args.output).name, fixed_shapes=args.fixed_shapes)
    else:
        if args.spec is None:
            raise RnncError(f"{model}: a PyTorch state_dict holds no architecture: pass the spec to map it onto "
                            "with --spec SPEC.yaml")
        imp = _onto_spec(args.framework, model, Path(args.spec))
    if args.verify:
        _verify(args.framework, str(model), imp.compiled)
    spec_path, npz_path = write_imported(imp, args.output)
    print(f"wrote {spec_path} and {npz_path} ({len(imp.compiled.graph.layers)} layers, "
          f"{imp.compiled.graph.param_count():,} params)")
    for note in imp.notes:
        print(f"  note: {note}")
    return 0


def _onto_spec(framework: str, model: Path, spec_path: Path) -> Imported:
    # lazy: the pipeline imports onnx, and `rnnc --help` loads this module
    from ..pipeline import compile_spec

    if framework == "keras":
        return import_keras_weights(model, spec_path)
    spec = load_spec(spec_path)
    weights = weights_for_spec(spec, str(model), "torch")
    return Imported(spec_path.read_text(encoding="utf-8"), weights, compile_spec(spec, weights=weights), [], str(model))


def weights_for_spec(spec: Any, path: str, source: str) -> dict:
    """`--weights-from keras|torch`: the file's weights under the spec's keys."""
    graph = build_graph(spec)
    if source == "keras":
        return keras_weights_for_graph(path, graph)
    return torch_weights_for_graph(path, graph)


def compile_with(args: argparse.Namespace, compile_spec: Any) -> Any:
    """rnnc compile's weights: the spec's own (`rnnc`), or mapped from Keras / PyTorch."""
    source = getattr(args, "weights_from", "rnnc") or "rnnc"
    verify = getattr(args, "verify", False)
    kw = {"opset": args.opset, "ir_version": args.ir_version, "target": args.target}
    if source == "rnnc":
        if verify:
            raise RnncError("--verify needs --weights-from keras or torch: it compares with the source framework")
        return compile_spec(args.spec, weights=args.weights, **kw)
    if not args.weights:
        raise RnncError(f"--weights-from {source} needs --weights FILE (a "
                        + ("Keras .weights.h5 or .keras file)" if source == "keras" else "PyTorch state_dict)"))
    spec = load_spec(args.spec)
    c = compile_spec(spec, weights=weights_for_spec(spec, args.weights, source), **kw)
    if verify:
        _verify(source, args.weights, c)
    return c


def _verify(source: str, path: str, compiled: Any) -> None:
    if source == "keras" and not zipfile.is_zipfile(path):
        print("verify: not available: a .weights.h5 holds no architecture to run in Keras (verify with the "
              ".keras file)")
        return
    try:
        if source == "keras":
            report = verify_keras(path, compiled)
        else:
            report = verify_torch(path, compiled)
    except VerifyUnavailable as e:
        print(f"verify: not available for this model: {e}")
        return
    print(report.text())
    report.check()
