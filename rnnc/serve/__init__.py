"""Serving: the serving form of stateful models (serving.py) and Triton model repositories
(triton.py). Needs nothing beyond the core install; the tests use the `serve` extra. Loaded on
first use, as in rnnc/__init__.py: the CLI builds its parser from rnnc.serve.commands, which
must not load the IR for --help/--version."""
from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

if TYPE_CHECKING:
    from .serving import compile_serving, serving_form, symbolic_batch
    from .triton import TritonModel, check_state_names, describe, export, render

_LAZY = {"compile_serving": ".serving", "serving_form": ".serving", "symbolic_batch": ".serving",
         "TritonModel": ".triton", "check_state_names": ".triton", "describe": ".triton", "export": ".triton",
         "render": ".triton"}


__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals())


__all__ = ["TritonModel", "check_state_names", "compile_serving", "describe", "export", "render",
           "serving_form", "symbolic_batch"]
