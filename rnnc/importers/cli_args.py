"""The arguments of `rnnc import` and of compile's --weights-from/--verify: no heavy imports, as
the CLI builds its parser from them on every run (rnnc/importers/commands.py runs them)."""
from __future__ import annotations

import argparse
from typing import Any

WEIGHTS_FROM = ("rnnc", "keras", "torch")

IMPORT_HELP = """\
keras MODEL.keras -o SPEC.yaml: the spec (architecture) and SPEC.npz (weights) from a Keras 3 .keras file,
read as data (zip, JSON, HDF5): Keras need not be installed and nothing in the file is executed.
keras MODEL.weights.h5 --spec SPEC.yaml -o OUT.yaml: a Keras .weights.h5 (model.save_weights) mapped onto
your spec by layer name. torch MODEL.pt --spec SPEC.yaml -o OUT.yaml: a PyTorch state_dict mapped onto your
spec (see docs/spec.md / README: "Importing")."""

VERIFY_HELP = ("also run the source framework and ONNX Runtime on the same random input and print the max "
               "difference (nothing is written if it is above 1e-4). Keras: loads the .keras file with "
               "keras.saving.load_model(safe_mode=True), only when Keras is installed. PyTorch: rebuilds the torch "
               "modules from the spec (plain stacks only)")


def add_import_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    m = sub.add_parser("import", parents=[common], help="import a trained Keras 3 or PyTorch model as a spec + weights",
                       description=IMPORT_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    m.add_argument("framework", choices=("keras", "torch"))
    m.add_argument("model", metavar="MODEL", help="MODEL.keras, MODEL.weights.h5 (with --spec) or a PyTorch "
                                                  "state_dict .pt/.pth (with --spec)")
    m.add_argument("-o", "--output", required=True, help="the spec to write (.yaml); its .npz is written beside it")
    m.add_argument("--spec", help="the spec to map the weights onto (.weights.h5 and PyTorch state_dicts)")
    m.add_argument("--verify", action="store_true", help=VERIFY_HELP)
    m.add_argument("--fixed-shapes", action="store_true",
                   help="keras: keep the input shapes the .keras file stores (by default batch and time are "
                        "imported as symbolic dims, as Keras runs the model on any batch and length)")
