"""`rnnc batch --ray`: the same batches on Ray Data.

`map_batches` with BatchPredictor as an actor class (each actor loads the model from its
path: a Session does not pickle), `compute=ActorPoolStrategy(size=N)` (`concurrency=` is
deprecated since Ray 2.51), ONNX Runtime's threads = the CPUs each actor holds. At least one
CPU of the cluster is left to Ray's read and write tasks: actors holding every CPU made
the job wait forever (num_cpus=1 per actor on a 2-CPU cluster), so that is refused with a
message instead. Rows keep their index (`__row__`); the driver streams the results in order
(`preserve_order`) and checks that every row came back exactly once. A worker that dies is
restarted and its batch retried by Ray (max_restarts / max_task_retries)."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..errors import RnncError
from .core import DEFAULT_BATCH, ROW, BatchPredictor, read_table


def _ray():
    try:
        import ray
        import ray.data
    except ImportError:
        raise RnncError("--ray needs Ray Data: pip install 'rnnc[ray]'") from None
    return ray


def plan_actors(total_cpus: float, cpus_per_actor: int, actors: int | None) -> int:
    """How many actors fit while one CPU stays free for Ray's read/write tasks."""
    if cpus_per_actor < 1:
        raise RnncError(f"--cpus-per-actor: expected 1 or more, got {cpus_per_actor}")
    room = int(total_cpus) - 1
    fit = room // cpus_per_actor
    if fit < 1:
        raise RnncError(f"the Ray cluster has {total_cpus:g} CPU(s): an actor with {cpus_per_actor} CPU(s) would leave "
                        "none for Ray's read and write tasks, and the job would wait forever; use fewer CPUs per "
                        "actor or a bigger cluster")
    if actors is not None and actors > fit:
        raise RnncError(f"--actors {actors}: {actors} x {cpus_per_actor} CPU(s) leaves no CPU of the cluster's "
                        f"{total_cpus:g} for Ray's read and write tasks (at most {fit} actor(s) fit); the job "
                        "would wait forever")
    return actors or fit


def run_ray(model: str | Path, data, *, address: str | None = None, batch_size: int = DEFAULT_BATCH,
            cpus_per_actor: int = 1, actors: int | None = None, predictor=BatchPredictor,
            max_retries: int = 3) -> Iterator:
    """Yield the result Tables in row order, computed by a pool of Ray actors. `data`: a
    path (Parquet is read by Ray's read tasks; .npz / .npy are read here) or a pyarrow Table.
    `predictor`: the actor class (BatchPredictor or a subclass)."""
    ray = _ray()
    from ray.data import ActorPoolStrategy, DataContext

    if not ray.is_initialized():
        ray.init(address=address, log_to_driver=False, include_dashboard=False)
    n = plan_actors(ray.cluster_resources().get("CPU", 0), cpus_per_actor, actors)
    import pyarrow as pa

    path = Path(data) if isinstance(data, (str, Path)) else None
    if path is not None and (path.suffix == ".parquet" or (path.is_dir() and list(path.glob("*.parquet")))):
        ds = ray.data.read_parquet(str(path))
        # row ids follow the files' order (preserve_order below)
        ds = ds.map_batches(_AddRow, batch_format="pyarrow", compute=ActorPoolStrategy(size=1), num_cpus=0)
    else:
        table = read_table(path) if path is not None else data
        if ROW not in table.column_names:
            table = table.append_column(ROW, pa.array(np.arange(table.num_rows, dtype=np.int64)))
        ds = ray.data.from_arrow(table)
    DataContext.get_current().execution_options.preserve_order = True
    ds = ds.map_batches(predictor, batch_size=batch_size, batch_format="pyarrow",
                        fn_constructor_kwargs={"model": str(model), "threads": cpus_per_actor},
                        compute=ActorPoolStrategy(size=n), num_cpus=cpus_per_actor,
                        max_restarts=max_retries, max_task_retries=max_retries)
    expect = 0
    for t in ds.iter_batches(batch_format="pyarrow", batch_size=None):
        rows = t.column(ROW).to_numpy()
        if len(rows) and not np.array_equal(rows, np.arange(expect, expect + len(rows))):
            raise RnncError(f"Ray returned rows out of order or twice (expected row {expect}, got "
                            f"{rows[:3].tolist()}...): nothing was written")
        expect += len(rows)
        yield t


class _AddRow:
    """Number the rows of a Parquet dataset in order (one actor: a running count)."""

    def __init__(self):
        self.next = 0

    def __call__(self, batch):
        import pyarrow as pa

        n = batch.num_rows
        out = batch.append_column(ROW, pa.array(np.arange(self.next, self.next + n, dtype=np.int64)))
        self.next += n
        return out
