"""Writing files all or nothing: every file rnnc writes (.onnx, .npz, an imported spec, a
picture) goes to a temp file beside its target and is renamed into place only when all of
them are complete, so a failure never leaves a half-written file. Problems (a folder that
does not exist, a target that is a directory, no permission) are RnncErrors."""
from __future__ import annotations

import os
import shlex
import tempfile
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import BinaryIO

import numpy as np

from .errors import RnncError

Content = bytes | Callable[[BinaryIO], None]

# ---- what a file is, by its content ----------------------------------------------------------
# The commands take different files (a spec, an ONNX model, .npy/.npz arrays, weights); a file
# given to the wrong command is recognised by its first bytes, whatever its name, and named.

SNIFF_BYTES = 1 << 16
KINDS = {
    "missing": "a path that does not exist",
    "directory": "a directory",
    "empty": "an empty file",
    "onnx": "an ONNX model",
    "npy": "a NumPy array (.npy)",
    "npz": "a NumPy archive (.npz)",
    "keras": "a Keras model (.keras)",
    "torch": "a PyTorch file (torch.save)",
    "zip": "a zip archive",
    "hdf5": "an HDF5 file (e.g. Keras .weights.h5)",
    "safetensors": "a safetensors file",
    "pickle": "a Python pickle",
    "text": "a text file",
    "binary": "a binary file of unknown type",
}


def _is_text(head: bytes) -> bool:
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as e:
        if len(head) < SNIFF_BYTES or e.start < len(head) - 3:   # not a character cut by the read
            return False
        text = head[:e.start].decode("utf-8")
    return not any(c in text for c in "\x00\x01\x02\x03\x04\x05\x06\x07\x08\x0e\x0f\x10\x1a\x1b\x7f")


def _zip_kind(p: Path) -> str:
    try:
        with zipfile.ZipFile(p) as z:
            names = z.namelist()
    except (zipfile.BadZipFile, OSError, ValueError):
        return "zip"
    if "config.json" in names and any(n.endswith(".h5") or n == "metadata.json" for n in names):
        return "keras"
    if any(n.endswith("data.pkl") for n in names):
        return "torch"
    if names and all(n.endswith(".npy") for n in names):
        return "npz"
    return "zip" if names else "npz"


def sniff(path: str | Path) -> str:
    """What a file is, from its content (a key of KINDS). An ONNX model is a protobuf
    ModelProto, which starts with its ir_version (field 1, a small varint: 0x08, 1..31);
    a damaged file with another start is "binary"."""
    p = Path(path)
    if p.is_dir():
        return "directory"
    try:
        with open(p, "rb") as f:
            head = f.read(SNIFF_BYTES)
    except FileNotFoundError:
        return "missing"
    except OSError:
        return "binary"
    if not head:
        return "empty"
    if head.startswith(b"\x93NUMPY"):
        return "npy"
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return _zip_kind(p)
    if head.startswith(b"\x89HDF\r\n\x1a\n"):
        return "hdf5"
    if len(head) > 1 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return "pickle"
    if len(head) > 9 and head[8:10] == b'{"' and int.from_bytes(head[:8], "little") < (100 << 20):
        return "safetensors"
    if len(head) > 1 and head[0] == 0x08 and 1 <= head[1] <= 31:
        return "onnx"
    return "text" if _is_text(head) else "binary"


def describe(kind: str) -> str:
    return KINDS.get(kind, kind)


def hint(path: str | Path, kind: str) -> str:
    """Which rnnc command takes a file of this kind."""
    f = shlex.quote(str(path))
    return {
        "onnx": f"use `rnnc inspect {f}` or `rnnc run {f}`",
        "text": f"if it is a spec, compile it first with `rnnc compile {f} -o MODEL.onnx`",
        "npy": f"pass it to a model as `rnnc run MODEL.onnx --input NAME={f}`",
        "npz": f"pass it to `rnnc run MODEL.onnx --input {f}`, or as weights to `rnnc compile SPEC --weights {f}`",
        "keras": f"import it with `rnnc import keras {f} -o SPEC.yaml`",
        "torch": f"import its state_dict with `rnnc import torch {f} --spec SPEC.yaml -o OUT.yaml`",
        "hdf5": f"for Keras weights use `rnnc import keras {f} --spec SPEC.yaml -o OUT.yaml`",
        "safetensors": f"pass weights as `rnnc compile SPEC --weights {f}`",
        "pickle": "rnnc never loads pickles",
    }.get(kind, "")


def expect_kind(path: str | Path, kinds: tuple[str, ...], what: str, *, error: type[RnncError] = RnncError) -> str:
    """The file's kind (sniff) if it is one of `kinds`, else an error that says what the file is
    and which command takes it. A missing file or a directory is named as such."""
    kind = sniff(path)
    if kind in kinds:
        return kind
    if kind == "missing":
        raise error(f"{path}: file not found (expected {what})")
    if kind == "directory":
        raise error(f"{path}: is a directory, not a file (expected {what})")
    tip = hint(path, kind)
    raise error(f"{path}: this is {describe(kind)}, not {what}" + (f": {tip}" if tip else ""))


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
