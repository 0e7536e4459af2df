"""Batch inference: a dataset in, every row's outputs out, in order and exactly once.

Data: Parquet (a file or a folder of them), `.npz`, or a folder of `.npy` files, one column
(array) per model input, one row per example. A variable-length sequence is a list in Parquet
(tokens: list<int32>; feature vectors: list<list<float>>); a batch pads its rows to its
longest with the value the model's mask expects: 0 for an Embedding with mask_zero, a Masking
layer's mask_value. Outputs along the time axis are cut back to each row's length. Rows of
different lengths into an input that no mask reads are refused: the padded steps would change
the outputs.

Every output row carries its input row's index (`__row__`). Stateful models start every batch
from zero states (each row is one whole sequence); a fixed-batch one (`[20, time, 50]`) runs
batches of exactly its batch, the last one padded with rows that are then dropped.

BatchPredictor is the callable (a pyarrow Table or a dict of columns in, a pyarrow Table out)
that the local path and each Ray actor run; it loads the model from its path (a Session does
not pickle), so it is also what a user's own Ray pipeline passes to `map_batches`."""
from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError, RnncError

ROW = "__row__"
DEFAULT_BATCH = 64


def _pa():
    try:
        import pyarrow as pa
    except ImportError:   # the core install leaves it out
        raise RnncError("rnnc batch needs pyarrow: pip install 'rnnc[ray]'") from None
    return pa


# -- columns: pyarrow <-> NumPy --------------------------------------------------------------------
def _rows(col) -> list[np.ndarray]:
    """A pyarrow column as one NumPy array per row (lists become arrays; ragged ok)."""
    pa = _pa()
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    if arr.null_count:
        raise InputError(f"column has {arr.null_count} null row(s): expected a value in every row")
    t = arr.type
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        if pa.types.is_fixed_size_list(t):
            offsets = np.arange(len(arr) + 1) * t.list_size + 0
            values = arr.flatten()
        else:
            offsets = np.asarray(arr.offsets) - arr.offsets[0].as_py()
            values = arr.flatten()
        inner = _rows(values)
        if inner and all(x.shape == inner[0].shape for x in inner):
            flat = np.stack(inner) if inner[0].ndim else np.asarray(inner)
            return [flat[offsets[i]:offsets[i + 1]] for i in range(len(arr))]
        return [np.asarray(inner[offsets[i]:offsets[i + 1]]) for i in range(len(arr))]
    return list(arr.to_numpy(zero_copy_only=False))


def _column(values: list[np.ndarray]):
    """One NumPy array per row -> a pyarrow (nested list) array; rows may differ on axis 0."""
    pa = _pa()
    if not values:
        return pa.array([], pa.float32())
    if values[0].ndim == 0:
        return pa.array(np.asarray(values))
    lengths = np.array([len(v) for v in values])
    flat = np.concatenate(values, axis=0)
    inner = _column(list(flat))
    if (lengths == lengths[0]).all():
        return pa.FixedSizeListArray.from_arrays(inner, int(lengths[0])) if lengths[0] else \
            pa.array([[] for _ in values])
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), inner)


def table_from_arrays(arrays: dict[str, np.ndarray]):
    """{name: (rows, ...) array} -> a pyarrow Table (nested lists for the trailing axes)."""
    pa = _pa()
    n = {len(a) for a in arrays.values()}
    if len(n) > 1:
        raise InputError(f"the arrays have different numbers of rows: {sorted(n)}")
    return pa.table({k: _column(list(a)) if a.ndim > 1 else pa.array(a) for k, a in arrays.items()})


# -- files ----------------------------------------------------------------------------------------------
def read_table(path: str | Path):
    """Parquet (file or folder), .npz, or a folder of .npy -> a pyarrow Table."""
    _pa()                         # the clear error where pyarrow is not installed
    import pyarrow.parquet as pq

    p = Path(path)
    if not p.exists():
        raise InputError(f"--input {p}: no such file or folder")
    if p.suffix == ".npz":
        with np.load(p, allow_pickle=False) as z:
            return table_from_arrays({k: z[k] for k in z.files})
    if p.is_dir() and list(p.glob("*.npy")) and not list(p.glob("*.parquet")):
        return table_from_arrays({f.stem: np.load(f, allow_pickle=False) for f in sorted(p.glob("*.npy"))})
    if p.suffix == ".parquet" or p.is_dir():
        return pq.read_table(p)
    raise InputError(f"--input {p}: expected a .parquet file, a folder of Parquet files, a .npz or a folder of .npy")


def output_kind(path: str | Path) -> str:
    p = Path(path)
    if p.suffix == ".parquet":
        return "parquet"
    if p.suffix == ".npz":
        return "npz"
    if p.suffix == "":
        return "npy"
    raise InputError(f"--output {p}: expected a .parquet or .npz file, or a folder (one .npy per output)")


def write_table(tables: Iterator, path: str | Path) -> int:
    """Write the result batches (pyarrow Tables, in order) to .parquet (streamed), .npz or a
    folder of .npy (time-axis outputs padded with zeros; `__length__` holds each row's
    length when they differ). Returns the number of rows."""
    import pyarrow.parquet as pq

    kind, p = output_kind(path), Path(path)
    if kind == "parquet":
        writer, n = None, 0
        tmp = p.with_name(f".{p.name}.tmp")
        try:
            for t in tables:
                writer = writer or pq.ParquetWriter(tmp, t.schema)
                writer.write_table(t)
                n += t.num_rows
        finally:
            if writer is not None:
                writer.close()
        if writer is not None:
            tmp.replace(p)
        return n
    cols: dict[str, list[np.ndarray]] = {}
    for t in tables:
        for name in t.column_names:
            cols.setdefault(name, []).extend(_rows(t.column(name)) if name != ROW else t.column(name).to_numpy())
    out: dict[str, np.ndarray] = {}
    for name, rows in cols.items():
        rows = [np.asarray(r) for r in rows]
        if rows and rows[0].ndim and len({r.shape for r in rows}) > 1:
            longest = max(len(r) for r in rows)
            out[name] = np.stack([np.pad(r, [(0, longest - len(r))] + [(0, 0)] * (r.ndim - 1)) for r in rows])
            out.setdefault("__length__", np.array([len(r) for r in rows], np.int64))
        else:
            out[name] = np.stack(rows) if rows else np.zeros(0)
    if kind == "npz":
        from ..weights import save_npz

        save_npz(out, p)
    else:
        p.mkdir(exist_ok=True)
        for name, a in out.items():
            np.save(p / f"{name.replace('/', '_')}.npy", a)
    return len(out.get(ROW, []))


# -- the predictor ------------------------------------------------------------------------------------
class BatchPredictor:
    """Load a compiled model (from its path) and run batches of rows: `predictor(batch)` takes
    a pyarrow Table or {column: sequence of rows} with a column per model input (and
    optionally `__row__`) and returns a pyarrow Table: `__row__`, then one column per output.
    threads: ONNX Runtime's intra-op threads (0: its default)."""

    def __init__(self, model: str | Path, *, threads: int = 0, providers: str = "cpu"):
        from ..runtime import Session

        self.model = str(model)
        self.sess = Session(self.model, providers=providers, threads=threads or None)
        self.pad: dict[str, Any] = {}          # input -> the padding value its mask expects
        for layer in self.sess.metadata.get("layers", []):
            ins = layer.get("inputs", [])
            if len(ins) == 1 and ins[0] in self.sess.input_names:
                if layer["kind"] == "Embedding" and layer["config"].get("mask_zero"):
                    self.pad[ins[0]] = 0
                elif layer["kind"] == "Masking":
                    self.pad[ins[0]] = layer["config"].get("mask_value", 0.0)
        self.fixed_batch = self.sess.state_batch if self.sess.stateful else None
        specs = {n: self.sess.input_spec(n) for n in self.sess.input_names}
        self.time_dims = {n: d[1] for n, (_, d) in specs.items() if len(d) > 1 and isinstance(d[1], str)}
        self.out_time = {o: self.sess.output_spec(o)[1][1] for o in self.sess.output_names
                         if len(self.sess.output_spec(o)[1]) > 1 and self.sess.output_spec(o)[1][1] in
                         set(self.time_dims.values())}

    def __call__(self, batch) -> Any:
        pa = _pa()
        table = batch if isinstance(batch, pa.Table) else pa.table(dict(batch))
        n = table.num_rows
        rows = table.column(ROW).to_numpy() if ROW in table.column_names else np.arange(n)
        missing = [c for c in self.sess.input_names if c not in table.column_names]
        if missing:
            raise InputError(f"the data has no column for input(s) {', '.join(missing)}: it has "
                             f"{', '.join(c for c in table.column_names if c != ROW)}")
        feeds, lengths = {}, None
        for name in self.sess.input_names:
            dtype, _ = self.sess.input_spec(name)
            values = [np.asarray(v, dtype=dtype) for v in _rows(table.column(name))]
            feeds[name], ls = self._pad(name, values, dtype)
            if ls is not None:
                lengths = ls if lengths is None else lengths
        out_rows = {o: [] for o in self.sess.output_names}
        step = self.fixed_batch or n
        for s in range(0, n, step):
            part = {k: v[s:s + step] for k, v in feeds.items()}
            real = len(next(iter(part.values())))
            if self.fixed_batch and real < self.fixed_batch:      # pad the last batch; its extra rows are dropped
                part = {k: np.concatenate([v, np.repeat(v[-1:], self.fixed_batch - real, axis=0)])
                        for k, v in part.items()}
            if self.sess.stateful:
                self.sess.reset_states()     # every batch: whole sequences from zero states
            got = self.sess.run(part)
            for o, v in got.items():
                for i in range(real):
                    r = v[i]
                    if o in self.out_time and lengths is not None:
                        r = r[:lengths[s + i]]
                    out_rows[o].append(r)
        cols = {ROW: pa.array(rows.astype(np.int64))}
        cols.update({o: _column(v) if v and v[0].ndim else pa.array(np.asarray(v)) for o, v in out_rows.items()})
        return pa.table(cols)

    def _pad(self, name: str, values: list[np.ndarray], dtype) -> tuple[np.ndarray, list[int] | None]:
        if name not in self.time_dims or not values or values[0].ndim == 0:
            return np.stack(values) if values else np.zeros(0, dtype), None
        lengths = [len(v) for v in values]
        if len(set(lengths)) == 1:
            return np.stack(values), lengths
        if name not in self.pad:
            raise InputError(f"input {name!r}: rows of different lengths ({min(lengths)} to {max(lengths)} steps), but no "
                             "mask reads this input (an Embedding with mask_zero, a Masking layer): padded steps "
                             "would change the outputs; pad the data yourself or give rows of one length")
        longest = max(lengths)
        out = np.full((len(values), longest, *values[0].shape[1:]), self.pad[name], dtype)
        for i, v in enumerate(values):
            out[i, :len(v)] = v
        return out, lengths


def batches(table, size: int) -> Iterator:
    """The table in slices of `size` rows, with `__row__` added (the row index)."""
    pa = _pa()
    if ROW not in table.column_names:
        table = table.append_column(ROW, pa.array(np.arange(table.num_rows, dtype=np.int64)))
    for s in range(0, table.num_rows, size):
        yield table.slice(s, size)


_DRAWN = {"bar": -1}   # the bar's last length drawn (-1: none yet)


def progress(done: int, total: int, *, out=sys.stderr) -> None:
    k = int(30 * done / max(total, 1))
    if done < total and k == _DRAWN["bar"]:
        return
    _DRAWN["bar"] = k if done < total else -1
    print(f"\rrows {done}/{total} [{'#' * k}{'.' * (30 - k)}]", end="" if done < total else "\n", file=out, flush=True)


def run_local(model: str | Path, data, *, batch_size: int = DEFAULT_BATCH, threads: int = 0,
              show_progress: Callable[[int, int], None] | None = progress) -> Iterator:
    """Run every row of `data` (a path or a pyarrow Table) through the model; yields the
    result Tables in row order."""
    table = read_table(data) if isinstance(data, (str, Path)) else data
    pred = BatchPredictor(model, threads=threads)
    if batch_size <= 0:
        raise InputError(f"--batch-size: expected a positive number of rows, got {batch_size}")
    done = 0
    for part in batches(table, batch_size):
        yield pred(part)
        done += part.num_rows
        if show_progress:
            show_progress(done, table.num_rows)
