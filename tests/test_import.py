"""Importing trained models: real Keras 3 models (torch backend) saved as `.keras` (and
`.weights.h5` + a spec), and real PyTorch modules' state_dicts. Each is imported, compiled,
run with ONNX Runtime and compared with the framework's own output within 1e-5; malformed
inputs give one clear error and write nothing."""
from __future__ import annotations

import os
import pickle
import zipfile

os.environ.setdefault("KERAS_BACKEND", "torch")

import numpy as np
import pytest

# the test extras (keras on its torch backend, h5py): without them this module skips
torch = pytest.importorskip("torch")
keras = pytest.importorskip("keras")
pytest.importorskip("h5py")
from keras_parity import randomize  # noqa: E402  (after importorskip)

import rnnc  # noqa: E402  (after importorskip)
from helpers import TOL, run_ort  # noqa: E402  (after importorskip)
from rnnc.cli import main  # noqa: E402  (after importorskip)
from rnnc.errors import WeightsError  # noqa: E402  (after importorskip)
from rnnc.importers import ImportProblem, import_keras, import_keras_weights  # noqa: E402  (after importorskip)
from rnnc.importers.torch_state import torch_weights_for_graph  # noqa: E402  (after importorskip)
from rnnc.ir import build_graph  # noqa: E402  (after importorskip)
from rnnc.spec import load_spec_text  # noqa: E402  (after importorskip)

L = keras.layers
pytestmark = [pytest.mark.keras, pytest.mark.torch,
              pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")]
B, T, F = 3, 6, 3
MASK = np.array([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0], [0, 1, 1, 0, 1, 1]], dtype=bool)  # right, left+hole


# --------------------------------------------------------------------------- Keras helpers

def xs(seed: int = 1, mask_value: float | None = None, t: int = T, f: int = F, b: int = B) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(b, t, f)).astype(np.float32)
    if mask_value is not None:
        x[x == mask_value] += 0.5
        x[~MASK[:b, :t]] = mask_value
    return x


def tokens(seed: int = 1, high: int = 20, masked: bool = False) -> np.ndarray:
    t = np.random.default_rng(seed).integers(1, high, size=(B, T)).astype(np.int32)
    return t * MASK if masked else t


def keras_out(model: keras.Model, feeds: dict) -> list[np.ndarray]:
    args = list(feeds.values()) if len(feeds) == 1 else [feeds[t.name] for t in model.inputs]
    y = model(args[0] if len(args) == 1 else args, training=False)
    return [np.asarray(keras.ops.convert_to_numpy(t)) for t in keras.tree.flatten(y)]


def compare(got: dict, want: list[np.ndarray], what: str = "") -> None:
    assert len(got) == len(want), f"{what}: {list(got)} vs {len(want)} Keras outputs"
    for (name, g), w in zip(got.items(), want):
        assert g.shape == w.shape, f"{what} {name}: {g.shape} != {w.shape}"
        err = float(np.max(np.abs(g.astype(np.float64) - w))) if w.size else 0.0
        assert err <= TOL, f"{what} {name}: max abs error {err:.3g}"


def imported(model: keras.Model, tmp_path, seed: int = 0):
    randomize(model, seed)
    path = tmp_path / "model.keras"
    model.save(path)
    return import_keras(path), path


def check_keras(model: keras.Model, tmp_path, *feeds: dict, seed: int = 0):
    imp, path = imported(model, tmp_path, seed)
    for f in feeds:
        compare(run_ort(imp.compiled.model, f), keras_out(model, f), imp.spec_text)
    return imp


# --------------------------------------------------------------------------- Keras: every layer and option

def test_embedding_mask_zero_recurrent_options_bn_dropout_activation_dense(tmp_path):
    tok = keras.Input((None,), dtype="int32", name="tokens")
    h = L.Embedding(20, 4, mask_zero=True, name="emb")(tok)
    h = L.LSTM(5, return_sequences=True, go_backwards=True, unit_forget_bias=False,
               recurrent_activation="hard_sigmoid", dropout=0.2, recurrent_dropout=0.1, name="lstm")(h)
    h = L.BatchNormalization(center=False, epsilon=0.01, name="bn")(h)
    h = L.Dropout(0.3, name="drop")(h)
    h = L.GRU(4, reset_after=False, activation="relu", return_sequences=True, name="gru")(h)
    h = L.Activation("tanh", name="act")(h)
    y = L.Dense(3, activation="softmax", use_bias=False, name="dense")(h)
    imp = check_keras(keras.Model(tok, y), tmp_path, {"tokens": tokens(masked=True)}, {"tokens": tokens(2)})
    text = imp.spec_text
    for key in ("mask_zero: true", "go_backwards: true", "unit_forget_bias: false", "reset_after: false",
                "recurrent_activation: hard_sigmoid", "epsilon: 0.01", "rate: 0.3", "use_bias: false"):
        assert key in text, key
    assert "kernel_initializer" not in text and "input:" not in text   # defaults and sequential inputs omitted


@pytest.mark.parametrize("merge", ["concat", "sum", "mul", "ave"])
def test_masking_bidirectional_return_state(tmp_path, merge):
    x = keras.Input((None, F), name="x")
    h = L.Masking(mask_value=-1.0, name="masking")(x)
    y = L.Bidirectional(L.LSTM(4, return_sequences=True, return_state=True), merge_mode=merge, name="bi")(h)
    imp = check_keras(keras.Model(x, y), tmp_path, {"x": xs(mask_value=-1.0)})
    assert "mask_value: -1.0" in imp.spec_text


@pytest.mark.parametrize("return_sequences", [True, False])
def test_bidirectional_forward_half_reading_backwards_keeps_its_backward_layer(tmp_path, return_sequences):
    x = keras.Input((None, F), name="x")
    y = L.Bidirectional(L.SimpleRNN(2, go_backwards=True, return_sequences=return_sequences),
                        backward_layer=L.SimpleRNN(2, return_sequences=return_sequences), merge_mode=None,
                        name="bi")(x)
    imp = check_keras(keras.Model(x, y), tmp_path, {"x": xs()})
    assert "backward_layer" in imp.spec_text


@pytest.mark.parametrize("return_sequences", [True, False])
def test_zero_output_for_mask_imports(tmp_path, return_sequences):
    x = keras.Input((None, F), name="x")
    y = L.GRU(4, zero_output_for_mask=True, return_sequences=return_sequences, name="gru")(L.Masking(name="m")(x))
    imp = check_keras(keras.Model(x, y), tmp_path, {"x": xs(mask_value=0.0)})
    assert "zero_output_for_mask: true" in imp.spec_text


def test_bidirectional_null_merge_and_own_backward_layer(tmp_path):
    x = keras.Input((None, F), name="x")
    back = L.GRU(3, reset_after=False, return_sequences=True, go_backwards=True)
    y = L.Bidirectional(L.GRU(5, return_sequences=True), backward_layer=back, merge_mode=None, name="bi")(x)
    imp = check_keras(keras.Model(x, y), tmp_path, {"x": xs()})
    assert "backward_layer" in imp.spec_text and "merge_mode: null" in imp.spec_text


def test_rnn_cells_stacked_and_single(tmp_path):
    x = keras.Input((None, F), name="x")
    h = L.Masking(name="masking")(x)
    cells = [L.LSTMCell(4), L.GRUCell(5), L.SimpleRNNCell(3, activation="relu"), L.LSTMCell(2, use_bias=False)]
    a = L.RNN(cells, return_sequences=True, return_state=True, name="stack")(h)
    b = L.RNN(L.GRUCell(4, reset_after=False), name="single")(a[0])
    imp = check_keras(keras.Model(x, [*a, b]), tmp_path, {"x": xs(mask_value=0.0)})
    assert "rnn.state_h_0" not in imp.spec_text and "stack.state_h_3" in imp.spec_text


def test_functional_graph_initial_state_merges_inputs(tmp_path):
    enc = keras.Input((None, F), name="enc")
    dec = keras.Input((None, 2), name="dec")
    h0 = keras.Input((4,), name="h0")
    _, h, c = L.LSTM(4, return_state=True, name="encoder")(enc)
    d = L.LSTM(4, return_sequences=True, name="decoder")(dec, initial_state=[h, c])
    g = L.GRU(4, return_sequences=True, name="gru")(dec, initial_state=[h0])
    s = L.SimpleRNN(4, return_sequences=True, use_bias=False, activation="elu", name="srnn")(dec)
    merged = [L.Add(name="add")([d, g]), L.Multiply(name="mul")([d, s]), L.Average(name="avg")([g, s])]
    cat = L.Concatenate(name="cat")(merged)
    y = L.Dense(3, activation="tanh", name="dense")(cat)
    model = keras.Model([enc, dec, h0], [y, h])
    feeds = {"enc": xs(1), "dec": xs(2, t=4, f=2), "h0": np.random.default_rng(3).normal(size=(B, 4)).astype(np.float32)}
    imp = check_keras(model, tmp_path, feeds)
    assert "initial_state: [encoder.state_h, encoder.state_c]" in imp.spec_text
    assert "dec_time" in imp.spec_text        # Keras's None time dims are independent per input


def test_stateful_layer_streams_like_keras(tmp_path):
    x = keras.Input((None, F), batch_size=2, name="x")
    y = L.GRU(4, stateful=True, return_sequences=True, name="gru")(x)
    model = keras.Model(x, y)
    imp, _ = imported(model, tmp_path)
    assert "shape: [2, time, 3]" in imp.spec_text and "stateful: true" in imp.spec_text
    sess = rnnc.Session(imp.compiled, providers="cpu")
    model.layers[-1].reset_state()
    for seed in (1, 2):                       # the second call continues from the first one's state
        f = {"x": xs(seed, b=2)}
        compare(sess.run(f), keras_out(model, f), f"call {seed}")


@pytest.mark.parametrize("inner, masked", [("LSTM", False), ("GRU", True), ("SimpleRNN", True)])
def test_stateful_bidirectional_streams_like_keras(tmp_path, inner, masked):
    """Keras 3 runs Bidirectional(stateful=True): each half carries its states from call to
    call, and the backward half reads each chunk from its end."""
    x = keras.Input((None, F), batch_size=B, name="x")
    h = L.Masking(name="masking")(x) if masked else x
    y = L.Bidirectional(getattr(L, inner)(4, stateful=True, return_sequences=True), name="bi")(h)
    model = keras.Model(x, y)
    imp, _ = imported(model, tmp_path)
    sess = rnnc.Session(imp.compiled, providers="cpu")
    assert list(sess.states)[0].startswith("bi.forward_state") and list(sess.states)[-1].startswith("bi.backward_state")
    for layer in model.layers:
        if hasattr(layer, "reset_states"):
            layer.reset_states()
    for seed in (1, 2, 3):                   # each call continues from the previous one's states
        f = {"x": xs(seed, mask_value=0.0 if masked else None)}
        compare(sess.run(f), keras_out(model, f), f"call {seed}")


def test_sequential_built_without_input_and_unroll(tmp_path):
    model = keras.Sequential([L.Embedding(12, 3), L.SimpleRNN(4, unroll=True, return_sequences=True),
                              L.BatchNormalization(axis=1), L.LSTM(3)], name="seq")
    model.build((None, T))
    imp = check_keras(model, tmp_path, {"input_layer": tokens(high=12)})
    assert "unroll: true" in imp.spec_text and "axis: 1" in imp.spec_text
    assert any("int32" in n for n in imp.notes)   # float Input read by Embedding → int32 token ids


def test_weights_h5_onto_spec_and_compile_weights_from_keras(tmp_path, capsys):
    x = keras.Input((None, F), name="x")
    h = L.Bidirectional(L.LSTM(4, return_sequences=True), name="bi")(x)
    y = L.RNN([L.GRUCell(3), L.LSTMCell(2)], name="rnn")(h)
    model = keras.Model(x, L.Dense(2, name="dense")(y))
    randomize(model)
    model.save_weights(tmp_path / "model.weights.h5")
    spec = tmp_path / "spec.yaml"
    spec.write_text("rnnc: 1\ninputs:\n  x: {shape: [batch, time, 3]}  # comment kept\nlayers:\n"
                    "  - {type: Bidirectional, name: bi, layer: {type: LSTM, units: 4, return_sequences: true}}\n"
                    "  - {type: RNN, name: rnn, cell: [{type: GRUCell, units: 3}, {type: LSTMCell, units: 2}]}\n"
                    "  - {type: Dense, name: dense, units: 2}\n")
    imp = import_keras_weights(tmp_path / "model.weights.h5", spec)
    f = {"x": xs()}
    compare(run_ort(imp.compiled.model, f), keras_out(model, f))
    out = tmp_path / "out.yaml"
    assert main(["import", "keras", str(tmp_path / "model.weights.h5"), "--spec", str(spec), "-o", str(out)]) == 0
    assert "# comment kept" in out.read_text() and "weights: out.npz" in out.read_text()
    onnx_path = tmp_path / "m.onnx"
    assert main(["compile", str(spec), "-o", str(onnx_path), "--weights", str(tmp_path / "model.weights.h5"),
                 "--weights-from", "keras"]) == 0
    compare(rnnc.Session(str(onnx_path), providers="cpu").run(f), keras_out(model, f), "compiled file")
    assert main(["compile", str(out), "-o", str(tmp_path / "n.onnx")]) == 0     # the written spec + npz


def test_cli_import_verify_writes_spec_and_npz(tmp_path, capsys):
    tok = keras.Input((None,), dtype="int32", name="tokens")
    y = L.LSTM(4, name="lstm")(L.Embedding(20, 3, mask_zero=True, name="emb")(tok))
    model = keras.Model(tok, y)
    _, path = imported(model, tmp_path)
    out = tmp_path / "spec.yaml"
    assert main(["import", "keras", str(path), "-o", str(out), "--verify"]) == 0
    printed = capsys.readouterr().out
    diff = float(printed.split("max abs difference ")[1].split()[0])
    assert diff <= TOL, printed
    assert (tmp_path / "spec.npz").is_file() and "weights: spec.npz" in out.read_text()
    c = rnnc.compile_spec(out)
    f = {"tokens": tokens(masked=True)}
    compare(run_ort(c.model, f), keras_out(model, f), "written files")


# --------------------------------------------------------------------------- Keras: refused models

def refused(model: keras.Model, tmp_path, capsys, *needles: str) -> str:
    model.save(tmp_path / "bad.keras")
    out = tmp_path / "bad.yaml"
    assert main(["import", "keras", str(tmp_path / "bad.keras"), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    for n in needles:
        assert n in err, err
    assert not out.exists() and not (tmp_path / "bad.npz").exists()
    return err


def test_unsupported_layer_named_with_its_place(tmp_path, capsys):
    x = keras.Input((None, F), name="x")
    y = L.LSTM(4, name="lstm")(L.Conv1DTranspose(4, 2, name="conv")(x))
    refused(keras.Model(x, y), tmp_path, capsys, "config.layers[1] (conv, Conv1DTranspose)", "not supported")


@pytest.mark.parametrize("layer,needle", [
    (lambda: L.LSTM(4, activation="leaky_relu", name="lstm"), "activation='leaky_relu'"),
    (lambda: L.GRU(4, dtype="mixed_float16", name="lstm"), "mixed_float16"),
])
def test_unsupported_option(tmp_path, capsys, layer, needle):
    x = keras.Input((None, F), name="x")
    refused(keras.Model(x, layer()(x)), tmp_path, capsys, "(lstm,", needle)


def test_training_only_options_are_notes(tmp_path):
    x = keras.Input((None, F), name="x")
    y = L.LSTM(4, kernel_constraint="max_norm", recurrent_regularizer="l2", name="lstm")(x)
    imp = check_keras(keras.Model(x, y), tmp_path, {"x": xs()})
    assert any("kernel_constraint" in n for n in imp.notes) and any("recurrent_regularizer" in n for n in imp.notes)


def test_shared_layer_refused(tmp_path, capsys):
    x = keras.Input((None, F), name="x")
    lstm = L.LSTM(4, return_sequences=True, name="lstm")
    refused(keras.Model(x, lstm(lstm(x))), tmp_path, capsys, "called 2 times")


@pytest.mark.parametrize("merge, second", [("Add", "embedding"), ("Multiply", "masking"), ("Average", "masking"),
                                           ("Concatenate", "masking"), ("Concatenate", "none")])
def test_merged_masks_feed_a_recurrent_layer_like_keras(tmp_path, merge, second):
    """Keras 3 ORs the masks in a merge (Concatenate counts an unmasked input as all true):
    the recurrent layer after it sees that mask, in the import as in the compiled model."""
    x = keras.Input((None, F), name="x")
    a = L.LSTM(3, return_sequences=True, name="a")(L.Masking(name="m")(x))
    if second == "embedding":
        t = keras.Input((None,), dtype="int32", name="t")
        b, inputs = L.Embedding(9, 3, mask_zero=True, name="e")(t), [x, t]
        feeds = {"x": xs(mask_value=0.0), "t": tokens(high=9, masked=True)[:, ::-1].copy()}
    else:
        x2 = keras.Input((None, F), name="x2")
        b = L.Masking(name="m2")(x2) if second == "masking" else L.Dense(3, name="d")(x2)
        inputs = [x, x2]
        feeds = {"x": xs(mask_value=0.0), "x2": xs(seed=2, mask_value=0.0)[::-1].copy()}
    y = L.GRU(2, return_sequences=True, name="gru")(getattr(L, merge)(name="merge")([a, b]))
    check_keras(keras.Model(inputs, y), tmp_path, feeds)


def test_corrupt_and_wrong_files(tmp_path, capsys):
    bad = tmp_path / "broken.keras"
    bad.write_bytes(b"PK\x03\x04 this is not really a zip")
    out = tmp_path / "o.yaml"
    assert main(["import", "keras", str(bad), "-o", str(out)]) == 2
    assert "zip" in capsys.readouterr().err
    with zipfile.ZipFile(tmp_path / "nocfg.keras", "w") as z:
        z.writestr("metadata.json", "{}")
    assert main(["import", "keras", str(tmp_path / "nocfg.keras"), "-o", str(out)]) == 2
    assert "config.json" in capsys.readouterr().err
    with zipfile.ZipFile(tmp_path / "badjson.keras", "w") as z:
        z.writestr("config.json", "{not json")
        z.writestr("model.weights.h5", b"")
    assert main(["import", "keras", str(tmp_path / "badjson.keras"), "-o", str(out)]) == 2
    assert "not valid JSON" in capsys.readouterr().err
    assert not out.exists()


def test_weights_h5_that_does_not_fit_the_spec(tmp_path):
    x = keras.Input((None, F), name="x")
    model = keras.Model(x, L.LSTM(4, name="lstm")(x))
    model.save_weights(tmp_path / "w.weights.h5")
    spec = tmp_path / "s.yaml"
    spec.write_text("rnnc: 1\ninputs: {x: {shape: [batch, time, 3]}}\nlayers:\n  - {type: GRU, name: gru, units: 4}\n")
    with pytest.raises(WeightsError, match="no weights for it.*lstm"):
        import_keras_weights(tmp_path / "w.weights.h5", spec)


# --------------------------------------------------------------------------- PyTorch

def torch_randomize(m: torch.nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in m.named_parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.4)
        for name, b in m.named_buffers():
            if name.endswith("running_var"):
                b.copy_(torch.rand(b.shape, generator=g) + 0.5)
            elif name.endswith("running_mean"):
                b.copy_(torch.randn(b.shape, generator=g) * 0.3)


class TorchNet(torch.nn.Module):
    """Embedding → 2-layer LSTM → 2-layer bidirectional GRU → RNN(relu, no bias) → BatchNorm1d → Linear."""

    def __init__(self):
        super().__init__()
        self.emb = torch.nn.Embedding(20, 6)
        self.lstm = torch.nn.LSTM(6, 5, num_layers=2, batch_first=True)
        self.gru = torch.nn.GRU(5, 4, num_layers=2, bidirectional=True, batch_first=True)
        self.rnn = torch.nn.RNN(8, 3, nonlinearity="relu", bias=False, batch_first=True)
        self.bn = torch.nn.BatchNorm1d(3)
        self.head = torch.nn.Linear(3, 2)

    def forward(self, x):
        h = self.emb(x)
        h, _ = self.lstm(h)
        h, _ = self.gru(h)
        h, _ = self.rnn(h)
        return self.head(self.bn(h[:, -1]))


TORCH_SPEC = """rnnc: 1
inputs: {x: {shape: [batch, time], dtype: int32}}
layers:
  - {type: Embedding, name: emb, input_dim: 20, output_dim: 6}
  - {type: RNN, name: lstm, cell: [{type: LSTMCell, units: 5}, {type: LSTMCell, units: 5}], return_sequences: true}
  - {type: Bidirectional, name: gru_l0, layer: {type: GRU, units: 4, return_sequences: true}}
  - {type: Bidirectional, name: gru_l1, layer: {type: GRU, units: 4, return_sequences: true}}
  - {type: SimpleRNN, name: rnn, units: 3, activation: relu, use_bias: false}
  - {type: BatchNormalization, name: bn, epsilon: 1.0e-05}
  - {type: Dense, name: head, units: 2}
"""


def torch_compiled(module: torch.nn.Module, spec: str, tmp_path, seed: int = 0):
    torch_randomize(module, seed)
    module.eval()
    path = tmp_path / "model.pt"
    torch.save(module.state_dict(), path)
    s = load_spec_text(spec, "spec.yaml")
    return rnnc.compile_spec(s, weights=torch_weights_for_graph(path, build_graph(s))), path


def test_torch_stack_lstm_gru_rnn_embedding_linear_bn(tmp_path, capsys):
    net = TorchNet()
    c, path = torch_compiled(net, TORCH_SPEC, tmp_path)
    x = np.random.default_rng(0).integers(0, 20, size=(B, 9)).astype(np.int32)
    with torch.no_grad():
        want = net(torch.from_numpy(x).long()).numpy()
    compare(run_ort(c.model, {"x": x}), [want])
    spec = tmp_path / "spec.yaml"
    spec.write_text(TORCH_SPEC)
    assert main(["compile", str(spec), "-o", str(tmp_path / "m.onnx"), "--weights", str(path),
                 "--weights-from", "torch", "--verify"]) == 0
    printed = capsys.readouterr().out
    assert float(printed.split("max abs difference ")[1].split()[0]) <= TOL, printed


@pytest.mark.parametrize("kind,batch_first,bidirectional", [
    ("LSTM", True, True), ("GRU", False, False), ("RNN", False, True), ("LSTM", False, False)])
def test_torch_modules_bidirectional_and_batch_first(tmp_path, kind, batch_first, bidirectional):
    module = getattr(torch.nn, kind)(F, 4, batch_first=batch_first, bidirectional=bidirectional)
    layer = {"LSTM": "LSTM", "GRU": "GRU", "RNN": "SimpleRNN"}[kind]
    inner = f"{{type: {layer}, units: 4, return_sequences: true}}"
    decl = f"{{type: Bidirectional, name: m, layer: {inner}}}" if bidirectional else \
        f"{{type: {layer}, name: m, units: 4, return_sequences: true}}"

    class Wrap(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.m = module

    c, _ = torch_compiled(Wrap(), f"rnnc: 1\ninputs: {{x: {{shape: [batch, time, {F}]}}}}\nlayers:\n  - {decl}\n",
                          tmp_path)
    x = xs()
    with torch.no_grad():   # batch_first=False: the module reads (time, batch, features)
        y, _ = module(torch.from_numpy(x if batch_first else x.transpose(1, 0, 2).copy()))
    want = y.numpy() if batch_first else y.numpy().transpose(1, 0, 2)
    compare(run_ort(c.model, {"x": x}), [want])


def torch_refused(tmp_path, sd_or_bytes, spec: str, *needles: str) -> None:
    path = tmp_path / "w.pt"
    if isinstance(sd_or_bytes, bytes):
        path.write_bytes(sd_or_bytes)
    else:
        torch.save(sd_or_bytes, path)
    s = load_spec_text(spec, "s.yaml")
    with pytest.raises(WeightsError) as e:
        torch_weights_for_graph(path, build_graph(s))
    for n in needles:
        assert n in str(e.value), str(e.value)


SPEC_GRU = "rnnc: 1\ninputs: {x: {shape: [batch, time, 3]}}\nlayers:\n  - {type: GRU, name: gru, units: 4%s}\n"


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_torch_malformed_files(tmp_path, capsys):
    gru = torch.nn.GRU(3, 4)
    sd = {f"gru.{k}": v for k, v in gru.state_dict().items()}
    torch_refused(tmp_path, pickle.dumps(Evil()), SPEC_GRU % "", "weights_only=True", "never unpickles")
    torch_refused(tmp_path, {"model": sd, "epoch": 3}, SPEC_GRU % "", "not tensors", "checkpoint")
    torch_refused(tmp_path, [1, 2], SPEC_GRU % "", "expected a state_dict")
    torch_refused(tmp_path, sd, SPEC_GRU % ", reset_after: false", "reset_after: true")
    torch_refused(tmp_path, sd, SPEC_GRU.replace("GRU", "LSTM") % "", "looks like nn.GRU")
    torch_refused(tmp_path, {**sd, "head.weight": torch.zeros(2, 4)}, SPEC_GRU % "", "match no spec layer",
                  "head.weight")
    torch_refused(tmp_path, {"other.weight_ih_l0": torch.zeros(12, 3)}, SPEC_GRU % "", "no recurrent module 'gru'")
    spec = tmp_path / "s.yaml"
    spec.write_text(SPEC_GRU % "")
    torch.save(sd, tmp_path / "ok.pt")
    (tmp_path / "evil.pt").write_bytes(pickle.dumps(Evil()))
    assert main(["compile", str(spec), "-o", str(tmp_path / "x.onnx"), "--weights", str(tmp_path / "evil.pt"),
                 "--weights-from", "torch"]) == 2
    assert "weights error" in capsys.readouterr().err and not (tmp_path / "x.onnx").exists()
    out = tmp_path / "imp.yaml"
    assert main(["import", "torch", str(tmp_path / "ok.pt"), "--spec", str(spec), "-o", str(out)]) == 0
    assert rnnc.compile_spec(out).weights["gru/bias"].shape == (2, 12)


def test_errors_surface_before_writing(tmp_path, capsys):
    assert main(["import", "keras", "missing.keras", "-o", str(tmp_path / "x.txt")]) == 2
    assert ".yaml" in capsys.readouterr().err
    assert main(["import", "torch", "w.pt", "-o", str(tmp_path / "x.yaml")]) == 2
    assert "--spec" in capsys.readouterr().err
    with pytest.raises(ImportProblem, match="file not found"):
        import_keras(tmp_path / "none.keras")


def test_torch_bare_module_and_batchnorm_without_affine(tmp_path):
    """`torch.save(lstm.state_dict())` (no module prefix) fits a spec with one layer of
    parameters; nn.BatchNorm1d(affine=False) is gamma 1, beta 0."""
    lstm = torch.nn.LSTM(F, 4, batch_first=True)
    c, _ = torch_compiled(lstm, f"rnnc: 1\ninputs: {{x: {{shape: [batch, time, {F}]}}}}\nlayers:\n"
                                "  - {type: LSTM, name: enc, units: 4, return_sequences: true}\n", tmp_path)
    x = xs()
    with torch.no_grad():
        want = lstm(torch.from_numpy(x))[0].numpy()
    compare(run_ort(c.model, {"x": x}), [want])
    bn = torch.nn.Module()
    bn.bn = torch.nn.BatchNorm1d(F, affine=False)
    c, _ = torch_compiled(bn, f"rnnc: 1\ninputs: {{x: {{shape: [batch, {F}]}}}}\nlayers:\n"
                              "  - {type: BatchNormalization, name: bn, epsilon: 1.0e-05}\n", tmp_path)
    x2 = xs()[:, 0]
    with torch.no_grad():
        want = bn.bn(torch.from_numpy(x2)).numpy()
    compare(run_ort(c.model, {"x": x2}), [want])


def test_torch_mapping_errors_name_the_spec_layer(tmp_path):
    bidi = ("rnnc: 1\ninputs: {x: {shape: [batch, time, 3]}}\nlayers:\n"
            "  - {type: Bidirectional, name: enc, layer: {type: LSTM, units: 2}}\n")
    torch_refused(tmp_path, {f"enc.{k}": v for k, v in torch.nn.LSTM(3, 2).state_dict().items()}, bidi,
                  "layer 'enc' (backward half): missing enc.weight_ih_l0_reverse")
    gru = torch.nn.GRU(3, 2, bidirectional=True).state_dict()
    path = tmp_path / "g.pt"
    torch.save({f"enc.{k}": v for k, v in gru.items()}, path)
    with pytest.raises(WeightsError) as e:
        torch_weights_for_graph(path, build_graph(load_spec_text(bidi, "s.yaml")))
    assert [p.message for p in e.value.problems] == [
        "layer 'enc' (forward half): enc_l0 looks like nn.GRU, but the spec's cell is LSTM (nn.LSTM)",
        "layer 'enc' (backward half): enc_l0_reverse looks like nn.GRU, but the spec's cell is LSTM (nn.LSTM)"]
    two = SPEC_GRU % "" + "  - {type: Dense, name: head, units: 2}\n"
    torch_refused(tmp_path, torch.nn.GRU(3, 4).state_dict(), two, "keys without a module prefix",
                  "this spec has 2 (gru, head)")
    bn = torch.nn.Module()
    bn.bn = torch.nn.BatchNorm1d(3, track_running_stats=False)
    torch_refused(tmp_path, bn.state_dict(), "rnnc: 1\ninputs: {x: {shape: [batch, 3]}}\nlayers:\n"
                  "  - {type: BatchNormalization, name: bn}\n", "track_running_stats=False")


def test_malformed_keras_configs_are_clear_errors(tmp_path, capsys):
    import json
    x = keras.Input((None, F), name="x")
    keras.Model(x, L.Dense(2, name="d")(L.LSTM(3, name="l")(x))).save(tmp_path / "m.keras")
    with zipfile.ZipFile(tmp_path / "m.keras") as z:
        parts = {n: z.read(n) for n in z.namelist()}
    cfg = json.loads(parts["config.json"])

    def variant(name: str, config_json: str):
        path = tmp_path / f"{name}.keras"
        with zipfile.ZipFile(path, "w") as z:
            for n, b in parts.items():
                z.writestr(n, config_json if n == "config.json" else b)
        return path

    import copy
    bad = {}
    c = copy.deepcopy(cfg)
    c["config"]["layers"] = "abc"
    bad["layers_str"] = json.dumps(c)
    c = copy.deepcopy(cfg)
    c["config"]["layers"][1] = None
    bad["layer_null"] = json.dumps(c)
    c = copy.deepcopy(cfg)
    c["config"]["layers"][1]["inbound_nodes"] = [{"args": 5}]
    bad["inbound_int"] = json.dumps(c)
    bad["deep"] = "[" * 100000 + "]" * 100000
    for name, text in bad.items():
        out = tmp_path / f"{name}.yaml"
        assert main(["import", "keras", str(variant(name, text)), "-o", str(out)]) == 2
        err = capsys.readouterr().err
        assert ("does not have the structure of a Keras 3 model config" in err or "nested too deeply" in err), err
        assert not out.exists() and not out.with_suffix(".npz").exists()


def test_torch_tensors_that_are_not_plain_weights(tmp_path):
    dense = torch.nn.Linear(3, 2)
    spec = "rnnc: 1\ninputs: {x: {shape: [batch, 3]}}\nlayers:\n  - {type: Dense, name: dense, units: 2}\n"
    torch_refused(tmp_path, {"dense.weight": dense.weight.detach().to_sparse(), "dense.bias": dense.bias.detach()},
                  spec, "expected dense real tensors", "dense.weight (sparse)")
    torch_refused(tmp_path, {"dense.weight": torch.empty(2, 3, device="meta"), "dense.bias": dense.bias.detach()},
                  spec, "dense.weight (meta: no values)")


def test_torch_packed_sequences_are_masking_with_zero_output(tmp_path):
    """pack_padded_sequence → LSTM → pad_packed_sequence: zeros past each length and h_n at
    each length, which is Masking + zero_output_for_mask: true on a right-padded batch."""
    lstm = torch.nn.LSTM(F, 4, batch_first=True)
    spec = (f"rnnc: 1\ninputs: {{x: {{shape: [batch, time, {F}]}}}}\nlayers:\n  - {{type: Masking}}\n"
            "  - {type: LSTM, name: enc, units: 4, return_sequences: true, return_state: true, "
            "zero_output_for_mask: true}\noutputs: [enc, enc.states]\n")
    c, _ = torch_compiled(lstm, spec, tmp_path)
    lens = [T, 4, 2]
    x = xs()
    for b, n in enumerate(lens):
        x[b, n:] = 0.0
    with torch.no_grad():
        packed = torch.nn.utils.rnn.pack_padded_sequence(torch.from_numpy(x), lens, batch_first=True)
        y, (h, cc) = lstm(packed)
        y, _ = torch.nn.utils.rnn.pad_packed_sequence(y, batch_first=True, total_length=T)
    compare(run_ort(c.model, {"x": x}), [y.numpy(), h[0].numpy(), cc[0].numpy()])


@pytest.mark.parametrize("kind, masked", [("LSTM", False), ("GRU", True), ("SimpleRNN", False)])
def test_bidirectional_with_initial_state_like_keras(tmp_path, kind, masked):
    """Keras splits initial_state between the halves: the forward half's states, then the
    backward half's (here an encoder's final states, both directions)."""
    x = keras.Input((None, F), name="x")
    h = L.Masking(name="m")(x) if masked else x
    enc = L.Bidirectional(getattr(L, kind)(4, return_state=True), name="enc")(h)
    y = L.Bidirectional(getattr(L, kind)(4, return_sequences=True), name="dec")(h, initial_state=list(enc[1:]))
    imp = check_keras(keras.Model(x, y), tmp_path, {"x": xs(mask_value=0.0 if masked else None)})
    assert "initial_state: [enc.forward_" in imp.spec_text
