"""Weights files: .npz (NumPy) and .safetensors, keyed `<layer>/<param>` with Keras's names
and layouts (docs/spec.md, "Weights"). Every mismatch is reported at once."""
from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from ..errors import Problem, WeightsError
from ..fileio import describe, hint, npz_writer, sniff, write_atomic
from ..ir.graph import Graph

WANT = {".npz": ("npz", "a NumPy archive (.npz)"), ".safetensors": ("safetensors", "a safetensors file")}


def read_weights(path: str | Path) -> dict[str, np.ndarray]:
    p = Path(path)
    if p.is_dir():
        raise WeightsError(problems=[Problem("is a directory: expected a weights file (.npz or .safetensors)",
                                             file=str(p))])
    if not p.is_file():
        raise WeightsError(problems=[Problem("weights file not found", file=str(p))])
    if p.suffix in WANT:               # the content must be what the name says (rnnc/fileio.py sniff)
        kind = sniff(p)
        if kind != WANT[p.suffix][0]:
            tip = hint(p, kind)
            raise WeightsError(problems=[Problem(f"expected {WANT[p.suffix][1]}, got {describe(kind)}"
                                                 + (f": {tip}" if tip and kind != "text" else ""), file=str(p))])
    try:
        if p.suffix == ".safetensors":
            from safetensors.numpy import load_file
            return dict(load_file(str(p)))
        if p.suffix == ".npz":
            with np.load(p, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile, Exception) as e:  # noqa: BLE001 - any unreadable file
        if "pickle" in str(e):          # never numpy's advice to allow_pickle
            raise WeightsError(problems=[Problem("holds Python objects (a pickled object array), which rnnc never "
                                                 "loads: save numeric arrays with np.savez", file=str(p))]) from None
        raise WeightsError(problems=[Problem(f"cannot read the weights: {type(e).__name__}: {e}", file=str(p))]) from None
    raise WeightsError(problems=[Problem(f"expected a .npz or .safetensors file, got {p.suffix or 'no suffix'!r}",
                                         file=str(p))])


def expected_params(graph: Graph) -> dict[str, tuple[int, ...]]:
    return {f"{l.name}/{k}": s for l in graph.layers.values() for k, s in l.params.items()}


def check_weights(graph: Graph, weights: dict[str, np.ndarray], file: str | None, *,
                  ignore_extra: bool = False) -> dict[str, np.ndarray]:
    """Check names, shapes and dtypes against the graph; return float32 arrays. ignore_extra:
    weights the graph has no parameter for are skipped, not refused (Keras's
    `skip_mismatch`/`by_name` loading: a trained seq2seq's weights onto its encoder alone);
    missing or misshapen ones are still errors."""
    want = expected_params(graph)
    problems: list[Problem] = []
    bad_keys = [k for k in weights if not isinstance(k, str)]
    if bad_keys:
        raise WeightsError(problems=[Problem(f"expected weight names (strings such as {next(iter(want), 'lstm/kernel')!r}), "
                                             f"got {', '.join(map(repr, bad_keys[:5]))}", file=file)])
    missing = [k for k in want if k not in weights]
    extra = [k for k in weights if k not in want]
    if missing:
        problems.append(Problem(f"missing {len(missing)} weight(s): {', '.join(missing)}", file=file))
    if extra and not ignore_extra:
        problems.append(Problem(f"unexpected {len(extra)} weight(s): {', '.join(extra)} "
                                f"(expected keys such as {', '.join(list(want)[:4])}; to load only the ones this spec has, pass "
                                "--weights-ignore-extra / ignore_extra=True)", file=file))
    out: dict[str, np.ndarray] = {}
    for k, shape in want.items():
        if k not in weights:
            continue
        try:
            a = np.asarray(weights[k])
        except (TypeError, ValueError) as e:
            problems.append(Problem(f"{k}: expected an array of shape {list(shape)}, got a {type(weights[k]).__name__} "
                                    f"that is not one ({e})", file=file))
            continue
        if a.dtype.kind not in "fiu":
            problems.append(Problem(f"{k}: expected a float array, got dtype {a.dtype}", file=file))
            continue
        if tuple(a.shape) != tuple(shape):
            problems.append(Problem(f"{k}: expected shape {list(shape)}, got {list(a.shape)}", file=file))
            continue
        with np.errstate(over="ignore"):
            a32 = a.astype(np.float32)
        if not np.all(np.isfinite(a32)):   # after the cast: 1e300 is finite in float64, inf in float32
            what = "NaN or infinite values" if not np.all(np.isfinite(a)) else "values beyond float32's range (±3.4e38)"
            problems.append(Problem(f"{k}: contains {what}", file=file))
            continue
        out[k] = a32
    if problems:
        raise WeightsError(problems=problems)
    return out


def save_npz(arrays: dict[str, np.ndarray], path: str | Path) -> None:
    """Write an .npz all or nothing (rnnc/fileio.py), under any array names."""
    write_atomic({path: npz_writer(arrays)})
