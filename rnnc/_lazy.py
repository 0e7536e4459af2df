"""Names a package exports but loads on first use (PEP 562): how `import rnnc` and the CLI's
parser stay light while `rnnc.compile_spec`, `rnnc.importers.import_keras`, ... still work."""
from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_exports(package: str, table: dict[str, str], namespace: dict[str, Any]
                 ) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """(__getattr__, __dir__) for `package`: name -> the submodule (relative, ".pipeline") it
    is loaded from the first time it is asked for; it is then cached in `namespace`."""
    def getattr_(name: str) -> Any:
        if name in table:
            value = getattr(importlib.import_module(table[name], package), name)
            namespace[name] = value
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def dir_() -> list[str]:
        return sorted(set(namespace) | set(table))

    return getattr_, dir_
