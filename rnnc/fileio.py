"""Writing files all or nothing: every file rnnc writes (.onnx, .npz, an imported spec, a
picture) goes to a temp file beside its target and is renamed into place only when all of
them are complete, so a failure never leaves a half-written file. Problems (a folder that
does not exist, a target that is a directory, no permission) are RnncErrors."""
from __future__ import annotations

import os
import tempfile
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import BinaryIO

import numpy as np

from .errors import RnncError

Content = bytes | Callable[[BinaryIO], None]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_atomic(files: Mapping[str | Path, Content]) -> None:
    """Write {path: bytes or writer(f)}: temp files first, then one rename each."""
    targets = [(Path(p), c) for p, c in files.items()]
    for p, _ in targets:
        if p.is_dir():
            raise RnncError(f"cannot write {p}: it is a directory")
        if not p.parent.is_dir():
            raise RnncError(f"cannot write {p}: folder {p.parent} does not exist")
    temps: list[tuple[str, Path]] = []
    current = targets[0][0] if targets else None
    try:
        for current, content in targets:
            fd, tmp = tempfile.mkstemp(dir=str(current.parent), prefix=f".{current.name}.", suffix=".tmp")
            temps.append((tmp, current))
            with os.fdopen(fd, "wb") as f:
                if isinstance(content, bytes):
                    f.write(content)
                else:
                    content(f)
            os.chmod(tmp, 0o666 & ~_umask())     # mkstemp makes 0600; a written file follows the umask
        for tmp, current in temps:
            os.replace(tmp, current)
    except OSError as e:
        raise RnncError(f"cannot write {current}: {e.strerror or e}") from None
    finally:
        for tmp, _ in temps:
            if os.path.exists(tmp):
                os.unlink(tmp)


def npz_writer(arrays: Mapping[str, np.ndarray]) -> Callable[[BinaryIO], None]:
    """An .npz (what np.load reads) of arrays under any names: np.savez takes the names as
    keyword arguments, so it cannot write `file` or `allow_pickle`."""
    def write(f: BinaryIO) -> None:
        with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as z:
            for name, a in arrays.items():
                with z.open(f"{name}.npy", "w", force_zip64=True) as g:
                    np.lib.format.write_array(g, np.asanyarray(a), allow_pickle=False)
    return write
