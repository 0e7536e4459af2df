"""`rnnc batch`: batch inference over datasets, locally and on a local Ray cluster."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import rnnc

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

from rnnc.batch import ROW, BatchPredictor, read_table, run_local, write_table  # noqa: E402
from rnnc.batch.core import _rows  # noqa: E402

TAGGER = """rnnc: 1
inputs:
  tokens: {shape: [batch, time], dtype: int32}
layers:
  - {type: Embedding, name: emb, input_dim: 40, output_dim: 8, mask_zero: true}
  - {type: LSTM, name: lstm, units: 6, return_sequences: true}
  - {type: Dense, name: out, units: 3}
"""
ROWS = 3000


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("batch")
    (d / "s.yaml").write_text(TAGGER)
    rnnc.compile_spec(d / "s.yaml").save(d / "m.onnx")
    rng = np.random.default_rng(0)
    toks = [rng.integers(1, 40, size=rng.integers(1, 40)).astype(np.int32) for _ in range(ROWS)]
    pq.write_table(pa.table({"tokens": pa.array([t.tolist() for t in toks], pa.list_(pa.int32()))}),
                   d / "in.parquet", row_group_size=400)
    return d, toks


def local(d):
    return pa.concat_tables(list(run_local(d / "m.onnx", d / "in.parquet", batch_size=64, show_progress=None)))


def test_local_rows_equal_single_runs(data):
    d, toks = data
    res = local(d)
    assert res.column(ROW).to_pylist() == list(range(ROWS))
    outs = _rows(res.column("out"))
    sess = rnnc.Session(d / "m.onnx", providers="cpu")
    for i in range(0, ROWS, 151):
        np.testing.assert_array_equal(outs[i], sess.run({"tokens": toks[i][None]})["out"][0])


def test_formats_and_cli(data, tmp_path):
    d, _ = data
    r = subprocess.run([sys.executable, "-m", "rnnc", "batch", str(d / "m.onnx"), "--input", str(d / "in.parquet"),
                        "--output", str(tmp_path / "o.parquet")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "rows 3000/3000" in r.stderr and f"wrote {ROWS} rows" in r.stdout
    assert pq.read_table(tmp_path / "o.parquet").equals(local(d))
    # a fixed-length .npz and a folder of .npy give the same results
    x = np.random.default_rng(1).integers(1, 40, size=(100, 7)).astype(np.int32)
    np.savez(tmp_path / "x.npz", tokens=x)
    (tmp_path / "xs").mkdir()
    np.save(tmp_path / "xs" / "tokens.npy", x)
    write_table(run_local(d / "m.onnx", tmp_path / "x.npz", show_progress=None), tmp_path / "o.npz")
    write_table(run_local(d / "m.onnx", tmp_path / "xs", show_progress=None), tmp_path / "o_npy")
    whole = rnnc.Session(d / "m.onnx", providers="cpu").run({"tokens": x})["out"]
    np.testing.assert_array_equal(np.load(tmp_path / "o.npz")["out"], whole)
    np.testing.assert_array_equal(np.load(tmp_path / "o_npy" / "out.npy"), whole)


def test_ragged_rows_without_a_mask_are_refused(tmp_path):
    (tmp_path / "s.yaml").write_text(TAGGER.replace(", mask_zero: true", ""))
    rnnc.compile_spec(tmp_path / "s.yaml").save(tmp_path / "m.onnx")
    t = pa.table({"tokens": pa.array([[1, 2, 3], [4]], pa.list_(pa.int32()))})
    with pytest.raises(rnnc.InputError, match="no mask reads this input"):
        BatchPredictor(tmp_path / "m.onnx")(t)


def test_fixed_batch_stateful_model_pads_the_last_batch(tmp_path):
    (tmp_path / "s.yaml").write_text(TAGGER.replace("[batch, time]", "[4, time]").replace(
        "return_sequences: true}", "return_sequences: true, stateful: true}"))
    rnnc.compile_spec(tmp_path / "s.yaml").save(tmp_path / "m.onnx")
    x = np.random.default_rng(2).integers(1, 40, size=(10, 5)).astype(np.int32)
    res = pa.concat_tables(list(run_local(tmp_path / "m.onnx", pa.table({"tokens": list(x)}), batch_size=3,
                                          show_progress=None)))
    assert res.column(ROW).to_pylist() == list(range(10))
    sess = rnnc.Session(tmp_path / "m.onnx", providers="cpu")
    got = np.stack(_rows(res.column("out")))
    for i in range(0, 10, 4):                       # each row: a whole sequence from zero states
        sess.reset_states()
        part = x[i:i + 4]
        part = np.concatenate([part, np.repeat(part[-1:], 4 - len(part), 0)])
        np.testing.assert_array_equal(got[i:i + 4], sess.run({"tokens": part})["out"][:min(4, 10 - i)])


# -- Ray ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.data")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


@pytest.mark.slow
def test_ray_equals_local_and_survives_a_killed_worker(data, ray_cluster, tmp_path):
    from rnnc.batch.ray_run import plan_actors, run_ray

    d, _ = data
    expected = local(d)
    got = pa.concat_tables(list(run_ray(d / "m.onnx", d / "in.parquet", batch_size=64)))
    assert got.equals(expected)                                 # every row once, in order, bitwise equal

    marker = tmp_path / "killed"

    class DiesOnce(BatchPredictor):
        """Kills its worker process the first time it sees row 1000 (Ray restarts and retries it)."""

        def __call__(self, batch):
            rows = batch.column(ROW).to_numpy()
            if (rows == 1000).any() and not marker.exists():
                marker.touch()
                os._exit(1)
            return super().__call__(batch)

    got = pa.concat_tables(list(run_ray(d / "m.onnx", d / "in.parquet", batch_size=64, predictor=DiesOnce)))
    assert marker.exists()
    assert got.equals(expected)

    with pytest.raises(rnnc.RnncError, match="wait forever"):
        plan_actors(2, 2, None)
    with pytest.raises(rnnc.RnncError, match="wait forever"):
        plan_actors(2, 1, 2)
    assert plan_actors(8, 2, None) == 3


def test_read_table_refuses_unknown_input(tmp_path):
    (tmp_path / "x.csv").write_text("a\n1\n")
    with pytest.raises(rnnc.InputError, match="expected a .parquet"):
        read_table(tmp_path / "x.csv")
    assert Path(tmp_path).exists()
