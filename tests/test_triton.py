"""`rnnc export triton`: configs parsed with Triton's own schema (tritonclient's
model_config_pb2), the serving form, and a live tritonserver (nvidia-pytriton's binary) on
127.0.0.1 running the exported repository with a stand-in for the onnxruntime backend
(tests/triton_backend/onnxruntime/model.py: why a stand-in, and what it does, is said there)."""
from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import rnnc
from rnnc.errors import RnncError, SpecError
from rnnc.serve import check_state_names, compile_serving, export

text_format = pytest.importorskip("google.protobuf.text_format")
mc = pytest.importorskip("tritonclient.grpc.model_config_pb2")

HERE = Path(__file__).parent
TAGGER = """rnnc: 1
name: tagger
inputs:
  tokens: {shape: [BATCH, time], dtype: int32}
layers:
  - {type: Embedding, name: emb, input_dim: 50, output_dim: 8, mask_zero: true}
  - {type: LSTM, name: lstm, units: 6, stateful: true, return_sequences: true}
  - {type: GRU, name: gru, units: 5, stateful: true, return_sequences: true}
  - {type: Dense, name: out, units: 3}
"""


def parse(folder: Path):
    return text_format.Parse((folder / "config.pbtxt").read_text(), mc.ModelConfig())


def write_spec(tmp_path, batch="batch", text=TAGGER) -> Path:
    f = tmp_path / "tagger.yaml"
    f.write_text(text.replace("BATCH", str(batch)))
    return f


@pytest.fixture(scope="module")
def serving_model(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("serving")
    path = d / "tagger.onnx"
    compile_serving(write_spec(d, 4)).save(path)      # a fixed batch in the spec: made symbolic
    return path


def test_serving_form_states_have_a_symbolic_batch(serving_model):
    sess = rnnc.Session(serving_model, providers="cpu")
    assert sess.input_spec("tokens")[1] == ["batch", "time"]
    assert [s["dims"] for s in sess.metadata["states"]] == [["batch", 6]] * 2 + [["batch", 5]]
    rng = np.random.default_rng(0)
    x = rng.integers(1, 50, size=(3, 12)).astype(np.int32)
    assert sess.states == {} and sess.state_batch is None
    chunks = np.concatenate([sess.run({"tokens": x[:, s:s + 5]})["out"] for s in range(0, 12, 5)], axis=1)
    assert sess.state_batch == 3
    np.testing.assert_array_equal(chunks, rnnc.Session(serving_model, providers="cpu").run({"tokens": x})["out"])
    with pytest.raises(rnnc.InputError, match="carries states for batch 3.*reset_states"):
        sess.run({"tokens": x[:2]})
    sess.reset_states()
    assert sess.run({"tokens": x[:2]})["out"].shape == (2, 12, 3)
    sess.reset_states({"lstm.state_h": np.ones((2, 6), np.float32)})
    assert sess.state_batch == 2 and not sess.states["gru.state"].any()


def test_plain_compile_still_needs_a_fixed_batch(tmp_path):
    with pytest.raises(SpecError, match="needs a fixed batch size.*serving form"):
        rnnc.compile_spec(write_spec(tmp_path))


def test_config_of_the_serving_form(serving_model, tmp_path):
    folder, m = export(serving_model, tmp_path / "repo", name="tagger")
    cfg = parse(folder)
    assert (folder / "1" / "model.onnx").read_bytes() == serving_model.read_bytes()
    assert cfg.platform == "onnxruntime_onnx" and cfg.max_batch_size == 8
    assert [(i.name, list(i.dims), i.data_type) for i in cfg.input] == [("tokens", [-1], mc.TYPE_INT32)]
    assert [(o.name, list(o.dims)) for o in cfg.output] == [("out", [-1, 3])]
    sb = cfg.sequence_batching
    assert sb.WhichOneof("strategy_choice") == "oldest"
    states = [(s.input_name, s.output_name, list(s.dims), s.initial_state[0].zero_data) for s in sb.state]
    assert states == [("lstm/state_h_in", "lstm/state_h_out", [6], True), ("lstm/state_c_in", "lstm/state_c_out", [6], True),
                      ("gru/state_in", "gru/state_out", [5], True)]
    # states are not also inputs/outputs; the model's inputs are the config's plus the states
    names = {i.name for i in cfg.input} | {o.name for o in cfg.output}
    assert not names & {n for s in sb.state for n in (s.input_name, s.output_name)}
    sess = rnnc.Session(serving_model, providers="cpu")
    assert len(sess._inputs) == len(cfg.input) + len(sb.state)


def test_fixed_batch_model_gets_max_batch_size_0(tmp_path):
    with pytest.MonkeyPatch.context():
        c = rnnc.compile_spec(write_spec(tmp_path, 4))
    path = tmp_path / "fixed.onnx"
    c.save(path)
    with pytest.raises(RnncError, match="symbolic first dim.*serving form"):
        export(path, tmp_path / "repo", max_batch_size=4)
    folder, m = export(path, tmp_path / "repo")
    cfg = parse(folder)
    assert cfg.max_batch_size == 0 and list(cfg.input[0].dims) == [4, -1]
    assert list(cfg.sequence_batching.state[0].dims) == [4, 6]
    assert "one sequence carries 4 streams in lockstep" in m.notes[0]


def test_cli_exports_a_spec_in_the_serving_form(tmp_path):
    r = subprocess.run([sys.executable, "-m", "rnnc", "export", "triton", str(write_spec(tmp_path)),
                        "--repo", str(tmp_path / "repo"), "--max-batch-size", "16"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "batch 1" in r.stdout and parse(tmp_path / "repo" / "tagger").max_batch_size == 16
    bad = subprocess.run([sys.executable, "-m", "rnnc", "export", "triton", str(tmp_path / "none.onnx"),
                          "--repo", str(tmp_path / "repo")], capture_output=True, text=True)
    assert bad.returncode == 2 and "not found" in bad.stderr


def test_state_names_that_sort_apart_are_refused():
    check_state_names([("a/state_h_in", "a/state_h_out"), ("a_b/state_h_in", "a_b/state_h_out")])
    with pytest.raises(RnncError, match="server issue 8586.*rename"):
        check_state_names([("l/x_in", "l/x_out"), ("l/x_j_in", "l/x_j_out")])


# -- a live server --------------------------------------------------------------------------------
def _pytriton_dir() -> Path | None:
    try:
        import importlib.util

        spec = importlib.util.find_spec("pytriton")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / "tritonserver"


def _stub_site() -> Path:
    """numpy<2 and onnxruntime for the Python backend's stub (it is built against NumPy 1),
    installed once into a cache keyed by the Python version (RNNC_TRITON_STUB_SITE overrides)."""
    if os.environ.get("RNNC_TRITON_STUB_SITE"):
        return Path(os.environ["RNNC_TRITON_STUB_SITE"])
    key = hashlib.sha1(f"{sys.version_info[:2]} numpy<2 onnxruntime".encode()).hexdigest()[:10]
    site = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "rnnc" / f"triton-stub-{key}"
    if not (site / ".complete").exists():
        shutil.rmtree(site, ignore_errors=True)
        r = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--target", str(site), "numpy<2",
                            "onnxruntime"], capture_output=True, text=True, timeout=300)
        if r.returncode != 0:
            pytest.fail(f"could not install the Triton stub's packages: {r.stderr[-2000:]}")
        (site / ".complete").touch()
    return site


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, tmp: Path, repo: Path):
        root = _pytriton_dir()
        backends = tmp / "backends"
        (backends / "python").mkdir(parents=True)
        for f in ("libtriton_python.so", "triton_python_backend_utils.py"):
            shutil.copy(root / "backends" / "python" / f, backends / "python" / f)
        v = f"{sys.version_info.major}.{sys.version_info.minor}"
        shutil.copy(root / "python_backend_stubs" / v / "triton_python_backend_stub", backends / "python")
        shutil.copytree(HERE / "triton_backend" / "onnxruntime", backends / "onnxruntime",
                        ignore=shutil.ignore_patterns("__pycache__"))
        (backends / "onnxruntime" / "stub_site.txt").write_text(str(_stub_site()))
        self.port = _free_port()
        self.log = tmp / "server.log"
        env = dict(os.environ)
        libs = root.parent.parent / "nvidia_pytriton.libs"
        env["LD_LIBRARY_PATH"] = ":".join(p for p in (str(libs), env.get("LD_LIBRARY_PATH", "")) if p)
        env["RNNC_TRITON_STANDIN_LOG"] = str(tmp / "batches.log")
        self.batches = tmp / "batches.log"
        self.proc = subprocess.Popen(
            [str(root / "bin" / "tritonserver"), "--model-repository", str(repo), "--backend-directory", str(backends),
             "--allow-http", "false", "--allow-metrics", "false", "--grpc-address", "127.0.0.1",
             "--grpc-port", str(self.port), "--exit-timeout-secs", "5", "--exit-on-error", "true"],
            stdout=self.log.open("w"), stderr=subprocess.STDOUT, env=env)

    def wait(self, timeout: float = 60) -> str | None:
        """None once ready; else the server's log (it exited)."""
        import tritonclient.grpc as g

        client = g.InferenceServerClient(f"127.0.0.1:{self.port}")
        for _ in range(int(timeout / 0.25)):            # bounded
            if self.proc.poll() is not None:
                return self.log.read_text()
            try:
                if client.is_server_ready():
                    return None
            except Exception:  # noqa: BLE001 - not listening yet
                pass
            time.sleep(0.25)
        return f"not ready after {timeout}s:\n{self.log.read_text()}"

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


needs_server = pytest.mark.skipif(_pytriton_dir() is None or not (_pytriton_dir() / "bin" / "tritonserver").exists(),
                                  reason="nvidia-pytriton (its tritonserver binary) is not installed: see README "
                                         "set-up, the test command installs it")


@needs_server
def test_live_triton_serves_concurrent_streams(serving_model, tmp_path):
    import tritonclient.grpc as g

    folder, _ = export(serving_model, tmp_path / "repo", name="tagger", max_batch_size=4)
    server = Server(tmp_path, tmp_path / "repo")
    try:
        failed = server.wait()
        assert failed is None, failed
        client = g.InferenceServerClient(f"127.0.0.1:{server.port}")
        rng = np.random.default_rng(0)
        streams = {sid: rng.integers(1, 50, size=(1, 24)).astype(np.int32) for sid in range(1, 9)}
        got: dict[int, np.ndarray] = {}
        errors: list[BaseException] = []

        def run(sid: int, x: np.ndarray, chunk: int = 6) -> None:
            try:
                parts = []
                for k, s in enumerate(range(0, x.shape[1], chunk)):       # bounded: 4 requests
                    i = g.InferInput("tokens", [1, chunk], "INT32")
                    i.set_data_from_numpy(x[:, s:s + chunk])
                    r = client.infer("tagger", [i], sequence_id=sid, sequence_start=k == 0,
                                     sequence_end=s + chunk >= x.shape[1], client_timeout=30)
                    parts.append(r.as_numpy("out"))
                got[sid] = np.concatenate(parts, axis=1)
            except BaseException as e:  # noqa: BLE001 - reported by the test thread
                errors.append(e)

        threads = [threading.Thread(target=run, args=kv) for kv in streams.items()]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors, errors
        for sid, x in streams.items():
            whole = rnnc.Session(serving_model, providers="cpu").run({"tokens": x})["out"]
            np.testing.assert_allclose(got[sid], whole, rtol=1e-6, atol=1e-6)
        # the sequence batcher did batch streams of different sequences together
        import json
        sizes = [json.loads(line)["batch"] for line in server.batches.read_text().splitlines()]
        assert max(sizes) > 1 and sum(sizes) == 8 * 4
        # a reused sequence id starts from zero states
        run(3, streams[5])
        whole = rnnc.Session(serving_model, providers="cpu").run({"tokens": streams[5]})["out"]
        np.testing.assert_allclose(got[3], whole, rtol=1e-6, atol=1e-6)
        # a request of batch 2 within a sequence: Triton's own error
        i = g.InferInput("tokens", [2, 6], "INT32")
        i.set_data_from_numpy(np.ones((2, 6), np.int32))
        with pytest.raises(Exception, match="batch"):
            client.infer("tagger", [i], sequence_id=99, sequence_start=True, client_timeout=30)
    finally:
        server.stop()


@needs_server
def test_live_triton_refuses_a_broken_config(serving_model, tmp_path):
    folder, _ = export(serving_model, tmp_path / "repo", name="tagger")
    cfg = (folder / "config.pbtxt").read_text()
    (folder / "config.pbtxt").write_text(cfg.replace('output_name: "gru/state_out"', 'output_name: "gru/nope"')
                                         .replace("oldest {", "oldest { bogus: 1"))
    server = Server(tmp_path, tmp_path / "repo")
    try:
        log = server.wait(30)
        assert log is not None, "the server started with a broken config"
        assert "bogus" in log and "tagger" in log      # Triton's own parse error, naming the model
    finally:
        server.stop()
