"""Keras 3 weights files (`model.weights.h5` inside a `.keras` archive, or a `.weights.h5`
from `model.save_weights`) mapped onto an rnnc graph. Only data is read (h5py datasets);
nothing in the file is executed.

Keras 3's layout (keras/src/saving/saving_lib.py): a model's layers sit under
`layers/<snake_case class name>[_<n>]`, each with a `vars` group whose attribute `name` is the
layer's name and whose datasets `0`, `1`, ... are its variables in creation order. Layers are
found here by that `name` attribute, so the h5 path's numbering never matters. Inside a layer:

| layer | variables |
|---|---|
| Embedding | `vars/0` embeddings |
| Dense | `vars/0` kernel, `vars/1` bias (use_bias) |
| BatchNormalization | `vars`: gamma (scale), beta (center), moving_mean, moving_variance |
| LSTM / GRU / SimpleRNN, RNN(cell) | `cell/vars/0..2`: kernel, recurrent_kernel, bias (use_bias) |
| ConvLSTM1D / 2D / 3D | `cell/vars/0..2` (the cell `conv_lstm_cell`): kernel [k..., in, 4f], recurrent_kernel [k..., f, 4f], bias [4f] |
| RNN([cells]) (stacked) | `cell/cells/<lstm_cell, gru_cell, lstm_cell_1, ...>/vars/0..2`, in cell order |
| Bidirectional | `forward_layer/...` and `backward_layer/...`, each as its recurrent layer |
| TimeDistributed | `layer/...`, as its wrapped layer (whose parameters are the wrapper's) |
| MultiHeadAttention | `query_dense/`, `key_dense/`, `value_dense/`, `output_dense/`: `vars/0..1` each (kernel, bias) |

Keras's names and layouts are rnnc's (docs/spec.md, "Weights"), so every array is copied as is."""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import Problem, WeightsError
from ..ir.graph import Graph, Layer

CELL_GROUP = {"LSTM": "lstm_cell", "GRU": "gru_cell", "SimpleRNN": "simple_rnn_cell"}
MHA_GROUPS = (("query", "query_dense"), ("key", "key_dense"), ("value", "value_dense"),
              ("attention_output", "output_dense"))


def open_h5(data: bytes | str | Path, file: str):
    """An h5py.File on bytes (from a .keras archive) or a path; unreadable → WeightsError."""
    try:
        import h5py
    except ImportError:  # pragma: no cover - h5py is a test extra
        raise WeightsError(problems=[Problem("reading Keras weights needs h5py (pip install h5py)", file=file)]) from None
    try:
        return h5py.File(io.BytesIO(data) if isinstance(data, bytes) else str(data), "r")
    except (OSError, ValueError) as e:
        raise WeightsError(problems=[Problem(f"not a readable HDF5 weights file: {e}", file=file)]) from None


def _name_attr(group) -> str | None:
    vars_ = group.get("vars")
    if vars_ is None or "name" not in vars_.attrs:
        return None
    n = vars_.attrs["name"]
    return n.decode() if isinstance(n, bytes) else str(n)


def _vars(group, where: str, problems: list[Problem], file: str) -> list[np.ndarray] | None:
    import h5py

    v = group.get("vars") if group is not None else None
    if v is None:
        problems.append(Problem(f"{where}: no `vars` group in the weights file", file=file))
        return None
    keys = sorted((k for k in v if isinstance(v[k], h5py.Dataset)), key=lambda k: int(k) if k.isdigit() else 1 << 30)
    out = []
    for k in keys:
        a = np.asarray(v[k][()])
        if a.dtype.kind not in "fiu":
            problems.append(Problem(f"{where}/vars/{k}: expected a numeric array, got dtype {a.dtype}", file=file))
            return None
        out.append(a)
    return out


def _stacked_names(kinds: list[str]) -> list[str]:
    """Keras's container names for a StackedRNNCells' cells: snake-case class name, numbered
    from the second of a kind (`lstm_cell`, `gru_cell`, `lstm_cell_1`)."""
    used: dict[str, int] = {}
    out = []
    for k in kinds:
        base = CELL_GROUP[k]
        if base in used:
            used[base] += 1
            out.append(f"{base}_{used[base]}")
        else:
            used[base] = 0
            out.append(base)
    return out


def _take(arrays: list[np.ndarray], names: list[str], where: str, problems: list[Problem],
          file: str) -> dict[str, np.ndarray]:
    if len(arrays) != len(names):
        problems.append(Problem(f"{where}: expected {len(names)} variable(s) ({', '.join(names)}), "
                                f"found {len(arrays)} with shapes {[list(a.shape) for a in arrays]}", file=file))
        return {}
    return dict(zip(names, arrays))


def _recurrent(group, layer: Layer, where: str, problems: list[Problem], file: str) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    cell_group = group.get("cell") if group is not None else None
    if cell_group is None:
        problems.append(Problem(f"{where}: no `cell` group in the weights file (is it a recurrent layer?)", file=file))
        return out
    stacked = any(c.prefix for c in layer.cells)
    names = _stacked_names([c.kind for c in layer.cells]) if stacked else [""]
    for c, sub in zip(layer.cells, names):
        g = cell_group
        if stacked:
            cells = cell_group.get("cells")
            g = cells.get(sub) if cells is not None else None
            if g is None:
                have = sorted(cells.keys()) if cells is not None else []
                problems.append(Problem(f"{where}/cell/cells/{sub}: not in the weights file (found: "
                                        f"{', '.join(have) or 'no stacked cells'})", file=file))
                continue
        want = list(c.params)                      # kernel, recurrent_kernel[, bias]
        arrays = _vars(g, f"{where}/cell" + (f"/cells/{sub}" if stacked else ""), problems, file)
        if arrays is None:
            continue
        for k, a in _take(arrays, want, f"{where} cell {c.kind}", problems, file).items():
            out[c.prefix + k] = a
    return out


def _batchnorm(arrays: list[np.ndarray], layer: Layer, flags: tuple[bool, bool] | None, where: str,
               problems: list[Problem], file: str) -> dict[str, np.ndarray]:
    """gamma (if scale), beta (if center), moving_mean, moving_variance; a missing gamma is
    ones and a missing beta zeros (Keras's own values for center/scale false)."""
    if flags is None:
        if len(arrays) == 4:
            flags = (True, True)
        elif len(arrays) == 2:
            flags = (False, False)
        else:
            problems.append(Problem(f"{where}: {len(arrays)} BatchNormalization variables: with 3, the file alone "
                                    "cannot tell whether gamma (scale) or beta (center) is absent; import the "
                                    ".keras file instead", file=file))
            return {}
    center, scale = flags
    names = (["gamma"] if scale else []) + (["beta"] if center else []) + ["moving_mean", "moving_variance"]
    got = _take(arrays, names, where, problems, file)
    if not got:
        return {}
    ch = got["moving_mean"].shape
    got.setdefault("gamma", np.ones(ch, np.float32))
    got.setdefault("beta", np.zeros(ch, np.float32))
    return {k: got[k] for k in ("gamma", "beta", "moving_mean", "moving_variance")}


def weights_from_h5(h5, graph: Graph, *, file: str, bn_flags: dict[str, tuple[bool, bool]] | None = None
                    ) -> dict[str, np.ndarray]:
    """Map a Keras 3 weights file onto `graph`'s parameters (keys `<layer>/<param>`).
    `bn_flags`: BatchNormalization layer name → (center, scale), from the model config."""
    problems: list[Problem] = []
    root = h5.get("layers")
    by_name: dict[str, Any] = {}
    if root is not None:
        for key in root:
            n = _name_attr(root[key])
            if n is not None:
                by_name[n] = root[key]
    out: dict[str, np.ndarray] = {}
    used: set[str] = set()
    for layer in graph.layers.values():
        if not layer.params:
            continue
        g = by_name.get(layer.name)
        where = f"layer {layer.name!r} ({layer.kind})"
        if g is None:
            problems.append(Problem(f"{where}: no weights for it in the file (layers with weights there: "
                                    f"{', '.join(sorted(by_name)) or 'none'})", file=file))
            continue
        used.add(layer.name)
        got: dict[str, np.ndarray] = {}
        kind = layer.kind
        inner = layer
        while inner.wrapped is not None and g is not None:   # TimeDistributed: the wrapped layer's under `layer/`
            g, inner, kind = g.get("layer"), inner.wrapped, inner.wrapped.kind
            where += f" layer ({kind})"
        if kind == "Bidirectional":
            for half, sub in zip(("forward", "backward"), layer.sublayers):
                part = _recurrent(g.get(f"{half}_layer"), sub, f"{where} {half}_layer", problems, file)
                got.update({f"{half}/{k}": a for k, a in part.items()})
        elif layer.cells:
            got = _recurrent(g, layer, where, problems, file)
        elif kind == "MultiHeadAttention":   # its projections' groups, each kernel[, bias]
            for part, sub in MHA_GROUPS:
                names = [k for k in layer.params if k.startswith(f"{part}/")]
                arrays = _vars(g.get(sub), f"{where}/{sub}", problems, file)
                if arrays is not None:
                    got.update(_take(arrays, names, f"{where}/{sub}", problems, file))
        else:
            arrays = _vars(g, where, problems, file)
            if arrays is None:
                continue
            if kind == "BatchNormalization":
                got = _batchnorm(arrays, layer, (bn_flags or {}).get(layer.name), where, problems, file)
            else:
                got = _take(arrays, list(layer.params), where, problems, file)
        out.update({f"{layer.name}/{k}": a for k, a in got.items()})
    extra = sorted(n for n, g in by_name.items() if n not in used and _has_arrays(g))
    if extra:
        problems.append(Problem(f"the file has weights for {len(extra)} layer(s) that the spec does not have (or "
                                f"has without parameters): {', '.join(extra)}", file=file))
    if problems:
        raise WeightsError(problems=problems)
    return out


def _has_arrays(group) -> bool:
    import h5py

    found = []
    group.visititems(lambda _n, o: found.append(1) if isinstance(o, h5py.Dataset) else None)
    return bool(found)

