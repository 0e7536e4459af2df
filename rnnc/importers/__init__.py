"""Importers: trained models from other frameworks → an rnnc spec and its weights.

- `import_keras(path)`: a Keras 3 `.keras` file → spec + weights (rnnc/importers/keras_file.py).
- `import_keras_weights(path, spec)`: a Keras `.weights.h5` mapped onto a given spec.
- `torch_weights_for_graph(path, graph)`: a PyTorch `state_dict` mapped onto a spec
  (rnnc/importers/torch_state.py).
- `verify_*` (rnnc/importers/verify.py): run the source framework and ONNX Runtime on the
  same random input and report the largest difference.

Nothing here executes code from a model file: `.keras` archives are read with zipfile, json
and h5py, and PyTorch files with `torch.load(weights_only=True)`."""
from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

if TYPE_CHECKING:
    from .common import Imported, ImportProblem, write_imported
    from .keras_file import import_keras, import_keras_weights, keras_weights_for_graph

# loaded on first use, as in rnnc/__init__.py: the CLI imports rnnc.importers.commands to build
# its parser, which must not load the importers (and through them the IR) for --help/--version
_LAZY = {"Imported": ".common", "ImportProblem": ".common", "write_imported": ".common",
         "import_keras": ".keras_file", "import_keras_weights": ".keras_file", "keras_weights_for_graph": ".keras_file"}


__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals())


__all__ = ["ImportProblem", "Imported", "write_imported", "import_keras", "import_keras_weights",
           "keras_weights_for_graph"]
