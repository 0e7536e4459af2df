"""rnnc inspect: each lowering's decision and reason read back from a saved model, the exact
JSON fields, an ONNX file rnnc did not write, the DOT graph (parsed here; drawn where
Graphviz is installed), and --strict-gpu (ONNX Runtime's disable_cpu_ep_fallback)."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from helpers import compile_text
from rnnc.cli import main as cli_main
from rnnc.inspect import inspect_model, inspect_spec
from rnnc.runtime import Session
from rnnc.runtime import session as session_mod
from rnnc.runtime.session import STRICT_GPU_KEY, StrictGpuError

ROOT = Path(__file__).resolve().parents[1]
SPECS = ROOT / "specs"
HEAD = "rnnc: 1\nname: m\ninputs: {x: {shape: [batch, time, 6]}}\nlayers:\n"


def saved(tmp_path: Path, text: str, **kw) -> Path:
    """Compile a spec text and write it: inspect then has only the .onnx file to go on."""
    path = tmp_path / "m.onnx"
    path.write_bytes(compile_text(text, **kw).model.SerializeToString())
    return path


def layer(report, name: str) -> dict:
    return next(l for l in report.data["layers"] if l["name"] == name)


# ---- each lowering: decision, reason, placement ------------------------------------------

CASES = {
    "native": (HEAD + "  - {type: LSTM, name: rec, units: 5}\n",
               "native LSTM", "native: ONNX LSTM op", [], [("LSTM", "cuda", "cuDNN LSTM")]),
    "native, dropout ignored": (
        HEAD + "  - {type: GRU, name: rec, units: 5, recurrent_dropout: 0.2, dropout: 0.1}\n",
        "native GRU", "native: ONNX GRU op",
        ["dropout=0.1 ignored at inference", "recurrent_dropout=0.2 ignored at inference"],
        [("GRU", "cuda", "cuDNN GRU")]),
    "bidirectional op": (
        HEAD + "  - {type: Bidirectional, name: rec, layer: {type: GRU, units: 4, return_sequences: true}}\n",
        "bidirectional GRU op", "native: one ONNX GRU op, direction=bidirectional", [],
        [("GRU", "cuda", "cuDNN GRU (bidirectional)")]),
    "stacked cells": (
        HEAD + "  - {type: RNN, name: rec, cell: [{type: LSTMCell, units: 4}, {type: GRUCell, units: 3}]}\n",
        "native LSTM + GRU", "native: 2 stacked ONNX ops (LSTM, GRU)", [],
        [("LSTM", "cuda", "cuDNN LSTM"), ("GRU", "cuda", "cuDNN GRU")]),
    "loop: no exact native form": (
        HEAD + "  - {type: LSTM, name: rec, units: 5, activation: gelu}\n",
        "Loop (ONNX Scan)", "Loop: activation 'gelu' has no form in ONNX's LSTM op; as ONNX Scan (faster than Loop on ONNX Runtime)", [],
        [("Scan", "control", "steps through time")]),
    "loop: requested, both directions": (
        HEAD + "  - {type: Bidirectional, name: rec, layer: {type: SimpleRNN, units: 3, lowering: loop}}\n",
        "2 Loops (one per direction) (ONNX Scan)", "Loop: requested; as ONNX Scan (faster than Loop on ONNX Runtime)", [],
        [("Scan", "control", "sequence loop on the CPU")] * 2),
    "unroll": (
        "rnnc: 1\nname: m\ninputs: {x: {shape: [batch, 20, 6]}}\nlayers:\n"
        "  - {type: GRU, name: rec, units: 4, unroll: true}\n",
        "unrolled (20 steps)", "unroll: requested, time = 20", [], []),
    "GRU reset_after false goes to the CPU": (
        HEAD + "  - {type: GRU, name: rec, units: 5, reset_after: false}\n",
        "native GRU", "native: ONNX GRU op", [], [("GRU", "cpu", "linear_before_reset = 0")]),
    "hard_sigmoid is exact natively but not on cuDNN": (
        HEAD + "  - {type: LSTM, name: rec, units: 5, recurrent_activation: hard_sigmoid}\n",
        "native LSTM", "native: ONNX LSTM op", [],
        [("LSTM", "cpu", "activations HardSigmoid, Tanh, Tanh: the CUDA provider runs LSTM only with Sigmoid, Tanh, Tanh")]),
    "relu SimpleRNN goes to the CPU": (
        HEAD + "  - {type: SimpleRNN, name: rec, units: 5, activation: relu}\n",
        "native RNN", "native: ONNX RNN op", [], [("RNN", "cpu", "activations Relu: the CUDA provider runs RNN only with Tanh")]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_each_lowering_decision_and_reason(tmp_path, case):
    text, lowered_as, reason, notes, placement = CASES[case]
    r = inspect_model(saved(tmp_path, text))
    rec = layer(r, "rec")
    assert (rec["lowered_as"], rec["reason"], rec["notes"]) == (lowered_as, reason, notes)
    got = [(p["op"], p["device"], p["why"]) for p in rec["placement"]]
    assert [(op, dev) for op, dev, _ in got] == [(op, dev) for op, dev, _ in placement]
    for (_, _, why), (_, _, want) in zip(got, placement):
        assert want in why
    shown = " ".join(r.to_text().split())     # the text wraps at 100 columns
    assert all(len(line) <= 100 for line in r.to_text().splitlines())
    assert f"rec ({rec['kind']})" in shown and lowered_as in shown and f"why: {reason}" in shown
    for n in notes:
        assert f"note: {n}" in shown


MASKED = ("rnnc: 1\nname: m\ninputs: {t: {shape: [batch, time], dtype: int32}}\nlayers:\n"
          "  - {type: Embedding, input_dim: 20, output_dim: 4, mask_zero: true}\n"
          "  - {type: LSTM, name: rec, units: 5, return_sequences: true}\n")


def test_masked_native_layer_shows_both_paths(tmp_path):
    r = inspect_model(saved(tmp_path, MASKED))
    rec = layer(r, "rec")
    assert rec["lowered_as"] == "native LSTM; Loop when the mask is not right-padded"
    assert rec["reason"].startswith("native: ONNX LSTM op; mask: right-padded batches run it with sequence_lens")
    where = {p["op"]: (p["device"], p["in"]) for p in rec["placement"]}
    assert where["If"] == ("control", [])
    assert where["LSTM"] == ("cuda", ["rec/If_right_padded", "then_branch"])
    assert where["Scan"] == ("control", ["rec/If_right_padded", "else_branch"])
    assert "sequence_lens is supported" in next(p["why"] for p in rec["placement"] if p["op"] == "LSTM")
    assert rec["node_count"]["all"] > rec["node_count"]["main"]


def test_portable_target_reason(tmp_path):
    r = inspect_model(saved(tmp_path, MASKED, target="portable"))
    rec = layer(r, "rec")
    assert rec["lowered_as"] == "Loop (ONNX Scan)"
    assert rec["reason"] == "Loop: portable target: a mask needs sequence_lens, which onnx.reference ignores; as ONNX Scan (faster than Loop on ONNX Runtime)"
    assert r.data["model"]["target"] == "portable"


def test_every_node_has_a_readable_unique_name_grouped_by_layer(tmp_path):
    """Netron shows node names: every node (subgraphs too) is named `<layer>/...` or `output/...`."""
    r = inspect_model(saved(tmp_path, MASKED))
    names = []

    def walk(g):
        for n in g.node:
            names.append(n.name)
            for a in n.attribute:
                if a.type == onnx.AttributeProto.GRAPH:
                    walk(a.g)
    walk(r.model.graph)
    prefixes = {l["name"] for l in r.data["layers"]} | {"output"}
    assert len(names) == len(set(names)) and all(n.split("/", 1)[0] in prefixes for n in names)
    grouped = sum(l["node_count"]["main"] for l in r.data["layers"]) + len(r.data["nodes"])
    assert grouped == r.data["node_count"]["main"] == len(r.model.graph.node)
    assert [n["op"] for n in r.data["nodes"]] == []      # the output's producer writes it under its name


# ---- JSON fields ---------------------------------------------------------------------------

def rnnc_cli(*args, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rnnc", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


def test_json_fields_exact(tmp_path):
    out = tmp_path / "lc.onnx"
    assert rnnc_cli("compile", SPECS / "lstm_classifier.yaml", "-o", out).returncode == 0
    r = rnnc_cli("inspect", out, "--format", "json")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert list(data) == ["format", "from", "file", "written_by_rnnc", "model", "inputs", "outputs", "op_counts",
                          "node_count", "onnx_params", "layers", "nodes", "placement", "strict_gpu"]
    assert (data["format"], data["from"], data["file"], data["written_by_rnnc"]) == \
        ("rnnc.inspect/1", "model", str(out), True)
    assert data["model"] == {"name": "lstm_classifier", "producer": "rnnc 0.1.0", "ir_version": 10,
                             "opsets": {"ai.onnx": 21}, "rnnc_version": "0.1.0", "target": "ort"}
    assert data["inputs"] == [{"name": "tokens", "dtype": "int32", "shape": ["batch", "time"]}]
    assert data["outputs"] == [{"name": "dense", "dtype": "float32", "shape": ["batch", 10]}]
    assert [l["name"] for l in data["layers"]] == ["embedding", "lstm", "dense"]
    lstm = data["layers"][1]
    assert list(lstm) == ["name", "kind", "lowering", "plan", "lowered_as", "reason", "notes", "params", "inputs",
                          "outputs", "ops", "node_count", "nodes", "placement"]
    assert lstm["plan"] == {"strategy": "native", "requested": "auto", "time_loop": None, "scan_free": False,
                            "native_ops": ["LSTM"], "fused": False, "per_half": False, "masked": False,
                            "unroll_steps": None, "why": "", "recognized": "", "candidates": [],
                            "cost_source": "", "cost_note": ""}
    assert {k: lstm[k] for k in ("name", "kind", "lowering", "lowered_as", "reason", "notes", "params", "inputs",
                                 "outputs")} == {
        "name": "lstm", "kind": "LSTM", "lowering": "native", "lowered_as": "native LSTM",
        "reason": "native: ONNX LSTM op", "notes": [], "params": 98_816, "inputs": ["embedding"],
        "outputs": {"output": ["batch", 128]}}
    assert sum(l["params"] for l in data["layers"]) == 164_106
    # the grouping by name prefix agrees with the op types rnnc recorded for each layer
    meta = json.loads({p.key: p.value for p in onnx.load(out).metadata_props}["rnnc.model"])
    for l, m in zip(data["layers"], meta["layers"]):
        assert Counter(l["ops"]) == Counter(m["nodes"]), l["name"]
    node = next(n for n in lstm["nodes"] if n["op"] == "LSTM")
    assert list(node) == ["name", "op", "outputs"] and node["name"] == "lstm/LSTM"
    # Y (named though unread: onnx.reference misreads an unnamed output before a named one), Y_h;
    # the unread Y_c, the last, is left off
    assert [o["shape"] for o in node["outputs"]] == [["time", 1, "batch", 128], [1, "batch", 128]]
    assert lstm["placement"] == [{"node": "lstm/LSTM", "op": "LSTM", "layer": "lstm", "in": [], "device": "cuda",
                                  "why": "cuDNN LSTM"}]
    assert data["placement"] == lstm["placement"]
    assert data["strict_gpu"]["passes"] is True and data["strict_gpu"]["cpu_nodes"] == []
    assert data["op_counts"] == dict(Counter(n.op_type for n in onnx.load(out).graph.node).most_common())


def test_spec_shows_decisions_and_writes_nothing(tmp_path):
    r = rnnc_cli("inspect", SPECS / "masked_bigru_tagger.yaml", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "spec, compiled in memory (nothing written)" in r.stdout
    # the table fits 100 columns: "Lowered as" breaks after its "; "
    assert "bidirectional GRU op;" in r.stdout and "Loop when the mask is not right-padded" in r.stdout
    assert "note: dropout=0.2 ignored at inference" in r.stdout
    assert list(tmp_path.iterdir()) == []
    assert inspect_spec(SPECS / "masked_bigru_tagger.yaml").data["from"] == "spec"


def test_user_errors_exit_2(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    r = rnnc_cli("inspect", bad)
    assert r.returncode == 2 and r.stderr.startswith(f"file error: {bad}: this is a text file, not an ONNX model")
    r = rnnc_cli("inspect", tmp_path / "none.yaml")
    assert r.returncode == 2 and "file not found" in r.stderr and "Traceback" not in r.stderr


# ---- an ONNX file rnnc did not write ------------------------------------------------------

def foreign_model() -> onnx.ModelProto:
    """X [T, B, 4] -> GRU (linear_before_reset 0) -> LSTM (clip) -> RNN -> Reshape to [B, -1],
    the target shape computed from Shape(X)."""
    f32 = TensorProto.FLOAT
    rng = np.random.default_rng(0)
    init = [numpy_helper.from_array(rng.normal(size=s).astype(np.float32), n) for n, s in (
        ("Wg", (1, 9, 4)), ("Rg", (1, 9, 3)), ("Wl", (1, 12, 3)), ("Rl", (1, 12, 3)), ("Wr", (1, 3, 3)), ("Rr", (1, 3, 3)))]
    init += [numpy_helper.from_array(np.array(v, np.int64), n) for n, v in (("one", [1]), ("minus1", [-1]))]
    nodes = [
        helper.make_node("GRU", ["X", "Wg", "Rg"], ["Yg"], name="gru", hidden_size=3, linear_before_reset=0),
        helper.make_node("Squeeze", ["Yg", "one"], ["Xl"], name="sq1"),
        helper.make_node("LSTM", ["Xl", "Wl", "Rl"], ["Yl"], name="lstm", hidden_size=3, clip=3.0),
        helper.make_node("Squeeze", ["Yl", "one"], ["Xr"], name="sq2"),
        helper.make_node("RNN", ["Xr", "Wr", "Rr"], ["Yr"], name="rnn", hidden_size=3),
        helper.make_node("Shape", ["X"], ["shape"], name="shape"),
        helper.make_node("Gather", ["shape", "one"], ["b"], name="batch", axis=0),
        helper.make_node("Concat", ["b", "minus1"], ["target"], name="target", axis=0),
        helper.make_node("Transpose", ["Yr"], ["Yt"], name="tr", perm=[2, 0, 1, 3]),
        helper.make_node("Reshape", ["Yt", "target"], ["Y"], name="flat"),
    ]
    g = helper.make_graph(nodes, "foreign", [helper.make_tensor_value_info("X", f32, ["T", "B", 4])],
                          [helper.make_tensor_value_info("Y", f32, ["B", None])], initializer=init)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], producer_name="hand", producer_version="1")
    m.ir_version = 8
    onnx.checker.check_model(m, full_check=True)
    return m


def test_foreign_onnx_generic_table(tmp_path):
    path = tmp_path / "foreign.onnx"
    onnx.save(foreign_model(), path)
    x = np.random.default_rng(1).normal(size=(5, 2, 4)).astype(np.float32)   # it runs on ONNX Runtime
    assert ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"X": x})[0].shape == (2, 15)
    r = inspect_model(path).data
    assert r["written_by_rnnc"] is False and r["layers"] == []
    assert r["model"] == {"name": "foreign", "producer": "hand 1", "ir_version": 8, "opsets": {"ai.onnx": 17},
                          "rnnc_version": None, "target": None}
    assert r["inputs"] == [{"name": "X", "dtype": "float32", "shape": ["T", "B", 4]}]
    assert r["outputs"] == [{"name": "Y", "dtype": "float32", "shape": ["B", "?"]}]
    assert r["op_counts"] == {"Squeeze": 2, "GRU": 1, "LSTM": 1, "RNN": 1, "Shape": 1, "Gather": 1, "Concat": 1,
                              "Transpose": 1, "Reshape": 1}
    assert [n["name"] for n in r["nodes"]] == ["gru", "sq1", "lstm", "sq2", "rnn", "shape", "batch", "target", "tr",
                                               "flat"]
    assert next(n for n in r["nodes"] if n["name"] == "rnn")["outputs"][0]["shape"] == ["T", 1, "B", 3]
    place = {p["node"]: (p["device"], p["why"]) for p in r["placement"]}
    assert place["gru"][0] == "cpu" and "linear_before_reset = 0" in place["gru"][1]
    assert place["lstm"] == ("cpu", "clip = 3: cuDNN has no cell clip")
    assert place["rnn"] == ("cuda", "cuDNN RNN")
    # ONNX Runtime keeps Shape -> Gather -> Concat (a shape for Reshape) on the CPU
    assert [c["node"] for c in r["strict_gpu"]["cpu_nodes"]] == ["gru", "lstm", "batch", "target"]
    text = rnnc_cli("inspect", path)
    assert text.returncode == 0, text.stderr
    assert 'ONNX model "foreign" (no rnnc metadata: generic view)' in text.stdout
    assert "IR 8, opsets ai.onnx 17" in text.stdout and "inputs:  X float32 (T, B, 4)" in text.stdout
    assert re.search(r"^rnn\s+RNN\s+Yr \(T, 1, B, 3\)$", text.stdout, re.M)


# ---- DOT and pictures -------------------------------------------------------------------------

TOKEN = re.compile(r'\s*(?:(?P<q>"(?:[^"\\]|\\.)*")|(?P<id>[A-Za-z_][A-Za-z0-9_.]*|-?\d+(?:\.\d+)?)|'
                   r'(?P<p>->|[{}\[\]=;,]))')


def parse_dot(text: str) -> dict:
    """A small parser for the DOT subset inspect writes (DOT's grammar: graph, stmt_list, node,
    edge, attr and subgraph statements, ID = ID). Returns nodes with their cluster path,
    edges with attributes, and clusters; raises AssertionError on anything malformed."""
    toks, pos = [], 0
    text = text.rstrip()
    while pos < len(text):
        m = TOKEN.match(text, pos)
        assert m and m.end() > pos, f"bad DOT at {pos}: {text[pos:pos + 40]!r}"
        toks.append(m.group("q") and ("ID", m.group("q")[1:-1]) or m.group("id") and ("ID", m.group("id"))
                    or ("P", m.group("p")))
        pos = m.end()
    i = 0

    def take(kind=None, value=None):
        nonlocal i
        assert i < len(toks), "unexpected end of DOT"
        k, v = toks[i]
        assert (kind is None or k == kind) and (value is None or v == value), f"expected {value or kind}, got {v!r}"
        i += 1
        return v

    def attrs() -> dict:
        out = {}
        take("P", "[")
        while toks[i] != ("P", "]"):
            key = take("ID")
            take("P", "=")
            out[key] = take("ID")
            if toks[i] in (("P", ","), ("P", ";")):
                take()
        take("P", "]")
        return out

    g = {"nodes": {}, "edges": [], "clusters": {}}

    def stmts(path: tuple):
        while toks[i] != ("P", "}"):
            if toks[i] == ("ID", "subgraph"):
                take()
                name = take("ID")
                assert name.startswith("cluster_") and name not in g["clusters"], name
                g["clusters"][name] = path
                take("P", "{")
                stmts(path + (name,))
                take("P", "}")
            elif toks[i][1] in ("graph", "node", "edge") and toks[i + 1] == ("P", "["):
                take()
                attrs()
            elif toks[i + 1] == ("P", "="):
                take("ID")
                take()
                take("ID")
            else:
                ends = [take("ID")]
                while toks[i] == ("P", "->"):
                    take()
                    ends.append(take("ID"))
                a = attrs() if toks[i] == ("P", "[") else {}
                if len(ends) == 1:
                    assert ends[0] not in g["nodes"], f"node {ends[0]} declared twice"
                    g["nodes"][ends[0]] = {"cluster": path, **a}
                else:
                    g["edges"].append((ends, a))
            if toks[i] == ("P", ";"):
                take()
    take("ID", "digraph")
    take("ID")
    take("P", "{")
    stmts(())
    take("P", "}")
    assert i == len(toks), "text after the graph"
    for ends, a in g["edges"]:
        assert all(e in g["nodes"] for e in ends), f"edge to an undeclared node: {ends}"
        assert "lhead" not in a or a["lhead"] in g["clusters"]
    return g


def test_dot_groups_nodes_by_layer_with_loop_bodies_as_clusters(tmp_path):
    r = inspect_model(saved(tmp_path, MASKED))
    g = parse_dot(r.to_dot())
    clusters = g["clusters"]
    assert {"cluster_embedding", "cluster_rec"} <= set(clusters)
    labels = {n["label"].split("\\n")[1]: n for n in g["nodes"].values() if "\\n" in n.get("label", "")}
    assert labels["rec/If_right_padded"]["cluster"] == ("cluster_rec",)
    loop = labels["rec/Scan"]["cluster"]           # inside the If's else branch, inside the layer
    assert loop[0] == "cluster_rec" and loop[-1].endswith("_else_branch")
    body = [n for n in g["nodes"].values() if n["cluster"][-1:] and n["cluster"][-1].endswith("_body")]
    assert body and all(n["cluster"][:len(loop) + 1][:len(loop)] == loop for n in body)
    assert labels["rec/LSTM"]["fillcolor"] == "#c8e6c9" and labels["rec/If_right_padded"]["fillcolor"] == "#bbdefb"
    assert ("input:t" in g["nodes"] and "output:rec" in g["nodes"]
            and any(e[0][1] == "output:rec" for e in g["edges"]))
    # every main-graph node is drawn, subgraph nodes too (and the legend's entries)
    legend = [k for k, n in g["nodes"].items() if n["cluster"] == ("cluster_legend",)]
    assert legend and all(k.startswith("legend:") for k in legend)
    assert len(g["nodes"]) - len(legend) == r.data["node_count"]["all"] + 2


def test_dot_for_foreign_model_parses():
    r = inspect_model(foreign_model())
    g = parse_dot(r.to_dot())
    assert list(g["clusters"]) == ["cluster_legend"]
    assert len([n for n in g["nodes"].values() if n["cluster"] != ("cluster_legend",)]) == 10 + 2
    fills = {n["label"].split("\\n")[1]: n["fillcolor"] for n in g["nodes"].values() if n["label"].count("\\n") >= 1}
    assert (fills["gru"], fills["rnn"], fills["batch"], fills["tr"]) == ("#ffcdd2", "#c8e6c9", "#ffe0b2", "white")


def test_svg_and_png_render_or_say_how_to_install_graphviz(tmp_path, capsys):
    model = saved(tmp_path, MASKED)
    svg, png = tmp_path / "g.svg", tmp_path / "g.png"
    assert cli_main(["inspect", str(model), "--format", "json", "--svg", str(svg), "--png", str(png)]) == 0
    out, err = capsys.readouterr()
    json.loads(out)                                   # stdout stays pure JSON
    if shutil.which("dot"):
        assert err.splitlines() == [f"wrote {svg}", f"wrote {png}"]
        root = svg.read_text()
        assert "<svg" in root and "cluster_rec" in root and "rec/LSTM" in root
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    else:
        assert "Graphviz is not installed" in err and "apt-get install graphviz" in err
        assert not svg.exists() and parse_dot((tmp_path / "g.dot").read_text())


def test_missing_graphviz_writes_dot_and_says_so(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("rnnc.inspect.dot.shutil.which", lambda name: None)
    model = saved(tmp_path, MASKED)
    svg = tmp_path / "pic.svg"
    assert cli_main(["inspect", str(model), "--svg", str(svg)]) == 0
    out, err = capsys.readouterr()
    assert "Lowered as" in out and not svg.exists()
    assert err.strip() == (f"Graphviz is not installed (no `dot` program on PATH), so {svg} was not drawn; wrote the "
                           f"graph as {tmp_path / 'pic.dot'} instead. Install Graphviz (apt-get install graphviz on "
                           f"Debian/Ubuntu, brew install graphviz on macOS), then run: dot -Tsvg "
                           f"{tmp_path / 'pic.dot'} -o {svg}")
    parse_dot((tmp_path / "pic.dot").read_text())


# ---- --strict-gpu -------------------------------------------------------------------------------

def test_strict_gpu_on_this_machine(tmp_path):
    """CUDA either starts (then ONNX Runtime confirms strict placement of this all-cuDNN model)
    or it does not (then nothing extra: the session says why it runs on the CPU)."""
    path = saved(tmp_path, HEAD + "  - {type: LSTM, name: rec, units: 5}\n")
    assert inspect_model(path).data["strict_gpu"]["passes"]
    sess = Session(path, strict_gpu=True)
    on_cuda = "CUDAExecutionProvider" in sess.providers
    assert sess.strict_gpu == on_cuda and (sess.fallback is None) == on_cuda
    assert Session(path, providers="cpu", strict_gpu=True).strict_gpu is False


class FakeOrt:
    """ONNX Runtime's answers to a strict session, without a GPU: `cuda_starts` says whether
    CUDA would start; the strict session is refused either way (nodes on the CPU)."""

    def __init__(self, cuda_starts: bool):
        self.cuda_starts, self.calls, self.real = cuda_starts, [], ort.InferenceSession

    def __call__(self, data, sess_options=None, providers=None):
        try:
            strict = sess_options.get_session_config_entry(STRICT_GPU_KEY) == "1"
        except RuntimeError:           # ONNX Runtime raises for a key never set
            strict = False
        self.calls.append((strict, list(providers)))
        if strict:
            raise RuntimeError("[ONNXRuntimeError] : 1 : FAIL : This session contains graph nodes that are assigned "
                               "to the default CPU EP, but fallback to CPU EP has been explicitly disabled by the user.")
        sess = self.real(data, sess_options=sess_options, providers=["CPUExecutionProvider"])
        if self.cuda_starts:
            sess.get_providers = lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"]
        return sess


@pytest.fixture
def cuda_listed(monkeypatch):
    monkeypatch.setattr(session_mod.ort, "get_available_providers",
                        lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])


def test_strict_gpu_refusal_is_an_error_where_cuda_started(tmp_path, monkeypatch, cuda_listed, capsys):
    path = tmp_path / "foreign.onnx"
    onnx.save(foreign_model(), path)
    fake = FakeOrt(cuda_starts=True)
    monkeypatch.setattr(session_mod.ort, "InferenceSession", fake)
    with pytest.raises(StrictGpuError, match="expected every main-graph node on CUDAExecutionProvider"):
        Session(path, strict_gpu=True)
    # strict: the config entry set and the CPU not listed (ONNX Runtime refuses both together)
    assert fake.calls[0] == (True, ["CUDAExecutionProvider"])
    assert cli_main(["run", str(path), "--random", "--strict-gpu"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("strict-gpu error: --strict-gpu: expected every main-graph node on CUDAExecutionProvider")
    assert "predicted by rnnc inspect:\n  - gru (GRU): GRU linear_before_reset = 0" in err
    out = tmp_path / "m.onnx"
    assert cli_main(["compile", str(SPECS / "stacked_cells.yaml"), "-o", str(out), "--strict-gpu"]) == 2
    assert "  - stack/RNN (RNN): activations Relu" in capsys.readouterr().err and not out.exists()


def test_strict_gpu_without_cuda_is_not_an_error(tmp_path, monkeypatch, cuda_listed, capsys):
    path = saved(tmp_path, HEAD + "  - {type: GRU, name: rec, units: 5, reset_after: false}\n")
    monkeypatch.setattr(session_mod.ort, "InferenceSession", FakeOrt(cuda_starts=False))
    sess = Session(path, strict_gpu=True)
    assert sess.strict_gpu is False and "could not start" in sess.fallback
    assert cli_main(["run", str(path), "--random", "--strict-gpu", "--repeat", "1"]) == 0
    assert "provider: CPUExecutionProvider; CUDA could not start" in capsys.readouterr().out


PLAN_CASES = {
    # spec layer(s) after the input -> the plan fields inspect must show for the last layer
    "native": ("  - {type: GRU, units: 3}\n", dict(strategy="native", native_ops=["GRU"], fused=False, masked=False)),
    "stacked": ("  - {type: RNN, cell: [{type: LSTMCell, units: 3}, {type: SimpleRNNCell, units: 2}]}\n",
                dict(strategy="native", native_ops=["LSTM", "RNN"])),
    "fused": ("  - {type: Bidirectional, layer: {type: LSTM, units: 3}}\n",
              dict(strategy="native", native_ops=["LSTM"], fused=True, per_half=False)),
    "per_half": ("  - {type: Bidirectional, layer: {type: LSTM, units: 3}, backward_layer: "
                 "{type: GRU, units: 3, go_backwards: true}}\n",
                 dict(strategy="native", native_ops=["LSTM", "GRU"], fused=False, per_half=True)),
    "masked_native": ("  - {type: Masking}\n  - {type: LSTM, units: 3}\n",
                      dict(strategy="native", masked=True, time_loop="scan")),
    "loop": ("  - {type: SimpleRNN, units: 3, activation: gelu}\n",
             dict(strategy="loop", time_loop="scan", scan_free=False, why="activation 'gelu' has no form in ONNX's RNN op")),
    "requested_loop": ("  - {type: LSTM, units: 3, lowering: loop}\n",
                       dict(strategy="loop", requested="loop", time_loop="scan", why="requested")),
    "unroll": ("  - {type: GRU, units: 3, unroll: true}\n", dict(strategy="unroll", unroll_steps=5, time_loop=None)),
    "plain": ("  - {type: Dense, units: 3}\n", dict(strategy="plain", requested=None, native_ops=[])),
}


@pytest.mark.parametrize("case", sorted(PLAN_CASES))
def test_inspect_json_carries_each_layers_plan(case, tmp_path):
    layers, want = PLAN_CASES[case]
    spec = tmp_path / "m.yaml"
    spec.write_text("rnnc: 1\ninputs: {x: {shape: [batch, 5, 4]}}\nlayers:\n" + layers)
    out = tmp_path / "m.onnx"
    assert rnnc_cli("compile", spec, "-o", out).returncode == 0
    r = rnnc_cli("inspect", out, "--format", "json")
    assert r.returncode == 0, r.stderr
    layer = json.loads(r.stdout)["layers"][-1]
    assert {k: layer["plan"][k] for k in want} == want
    assert layer["lowering"] == want["strategy"]


def test_inspect_refuses_a_damaged_plan(tmp_path):
    out = tmp_path / "lc.onnx"
    assert rnnc_cli("compile", SPECS / "lstm_classifier.yaml", "-o", out).returncode == 0
    m = onnx.load(out)
    prop = next(p for p in m.metadata_props if p.key == "rnnc.model")
    meta = json.loads(prop.value)
    meta["layers"][1]["plan"]["native_ops"] = ["Conv"]
    prop.value = json.dumps(meta)
    onnx.save(m, out)
    r = rnnc_cli("inspect", out)
    assert r.returncode == 2 and "plan" in r.stderr and "Traceback" not in r.stderr
