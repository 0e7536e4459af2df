"""Exactness of ONNX exports against the framework's own output, on the same models and inputs:
rnnc (`rnnc import keras` / `--weights-from torch`), Keras 3's `model.export(format="onnx")`
(torch backend) and `torch.onnx.export` (TorchScript exporter, dynamic batch and time).

    KERAS_BACKEND=torch python tools/exactness.py            # prints a Markdown table

Each model has 28 input features and runs on a batch of 4 sequences of 28 steps (normal
random input, Keras's or PyTorch's default initial weights, seed 0). "time fixed" builds the
model with Input((28, 28)), "time symbolic" with Input((None, 28)). The masked model's input
is right-padded in one row and left-padded with a hole in another. Cells give the max
absolute difference from the framework over all outputs, or why the export failed."""
from __future__ import annotations

import os
import sys
import tempfile
import warnings
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "torch")
warnings.filterwarnings("ignore")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import rnnc  # noqa: E402
from rnnc.importers import import_keras  # noqa: E402
from rnnc.importers.torch_state import torch_weights_for_graph  # noqa: E402
from rnnc.ir import build_graph  # noqa: E402
from rnnc.spec import load_spec_text  # noqa: E402

L = keras.layers
B, T, F, U = 4, 28, 28, 64


def x_input(masked: bool) -> np.ndarray:
    x = np.random.default_rng(0).normal(size=(B, T, F)).astype(np.float32)
    if masked:
        x[1, 20:] = 0.0                   # right padding
        x[2, :5] = 0.0                    # left padding
        x[2, 12] = 0.0                    # a hole
    return x


def keras_models(time):
    def lstm(x):
        return L.LSTM(U)(x)

    def gru(x):
        return L.GRU(U)(x)

    def masked(x):
        return L.LSTM(U)(L.Masking()(x))

    def bidi(x):
        return L.Bidirectional(L.LSTM(U, return_sequences=True))(x)

    for name, body, m in (("LSTM(64)", lstm, False), ("GRU(64)", gru, False),
                          ("Masking + LSTM(64), padded rows", masked, True),
                          ("Bidirectional(LSTM(64), return_sequences)", bidi, False)):
        keras.utils.set_random_seed(0)
        x = keras.Input((time, F), name="x")
        yield name, keras.Model(x, body(x)), m


class Failed(Exception):
    pass


def ort_run(path: str, x: np.ndarray) -> list[np.ndarray]:
    opts = ort.SessionOptions()
    opts.log_severity_level = 4
    try:
        s = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        return s.run(None, {s.get_inputs()[0].name: x})
    except Exception as e:  # noqa: BLE001
        raise Failed(f"ONNX Runtime fails on the {T}-step input ({type(e).__name__})") from None


def diff(got: list[np.ndarray], want: list[np.ndarray]) -> str:
    if len(got) != len(want) or any(g.shape != w.shape for g, w in zip(got, want)):
        return f"wrong output shape {', '.join(str(g.shape) for g in got)} (expected {', '.join(str(w.shape) for w in want)})"
    return f"{max(float(np.max(np.abs(g - w))) for g, w in zip(got, want)):.2g}"


def attempt(fn) -> str:
    try:
        return fn()
    except Failed as e:
        return str(e)
    except Exception as e:  # noqa: BLE001 - an exporter's failure is a result here
        return f"fails ({type(e).__name__})"


def keras_rows(tmp: str) -> list[tuple[str, str, str, str]]:
    rows = []
    for time, label in ((T, "fixed"), (None, "symbolic")):
        for name, model, masked in keras_models(time):
            x = x_input(masked)
            want = [np.asarray(keras.ops.convert_to_numpy(t)) for t in keras.tree.flatten(model(x, training=False))]
            path = os.path.join(tmp, "m.keras")
            model.save(path)

            def ours():
                c = import_keras(path).compiled
                return diff(list(rnnc.Session(c, providers="cpu").run({"x": x}).values()), want)

            def theirs():
                model.export(os.path.join(tmp, "k.onnx"), format="onnx", verbose=False)
                return diff(ort_run(os.path.join(tmp, "k.onnx"), x), want)

            rows.append((f"Keras {name}, time {label}", attempt(ours), attempt(theirs), ""))
    return rows


def torch_rows(tmp: str) -> list[tuple[str, str, str, str]]:
    rows = []
    specs = {"LSTM": "{type: LSTM, name: m, units: 64}", "GRU": "{type: GRU, name: m, units: 64}"}
    for kind, decl in specs.items():
        torch.manual_seed(0)

        class Last(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.m = getattr(torch.nn, kind)(F, U, batch_first=True)

            def forward(self, x):
                return self.m(x)[0][:, -1]

        net = Last().eval()
        x = x_input(False)
        with torch.no_grad():
            want = [net(torch.from_numpy(x)).numpy()]
        pt = os.path.join(tmp, "m.pt")
        torch.save(net.state_dict(), pt)

        def ours():
            s = load_spec_text(f"rnnc: 1\ninputs: {{x: {{shape: [batch, time, {F}]}}}}\nlayers:\n  - {decl}\n")
            c = rnnc.compile_spec(s, weights=torch_weights_for_graph(pt, build_graph(s)))
            return diff(list(rnnc.Session(c, providers="cpu").run({"x": x}).values()), want)

        def theirs():
            out = os.path.join(tmp, "t.onnx")
            torch.onnx.export(net, (torch.from_numpy(x),), out, input_names=["x"], dynamo=False,
                              dynamic_axes={"x": {0: "batch", 1: "time"}})
            return diff(ort_run(out, x), want)

        rows.append((f"PyTorch nn.{kind}(28, 64), last step", attempt(ours), "", attempt(theirs)))
    return rows


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        rows = keras_rows(tmp) + torch_rows(tmp)
    print(f"keras {keras.__version__} ({keras.backend.backend()}), torch {torch.__version__}, "
          f"onnxruntime {ort.__version__}, batch {B}, {T} steps, {F} features\n")
    print("| model | rnnc | Keras `model.export(format=\"onnx\")` | `torch.onnx.export` |")
    print("|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(c or "—" for c in r) + " |")


if __name__ == "__main__":
    main()
