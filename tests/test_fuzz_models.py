"""Damaged model files: bytes flipped, files truncated, pieces spliced in, from two small
compiled models (one with If/Scan subgraphs). Every command that reads a model (inspect as
text, JSON and DOT, run --random, and summary/check, which must say that it is not a spec)
exits 0 or 2 with one clear message: never 1, never a traceback. Seeded and bounded (60
variants), so a failure reproduces."""
from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import onnx
import pytest

from helpers import compile_text
from rnnc.cli import main as cli_main

SMALL = ("rnnc: 1\nname: small\ninputs: {t: {shape: [batch, time], dtype: int32}}\nlayers:\n"
         "  - {type: Embedding, name: emb, input_dim: 7, output_dim: 3}\n"
         "  - {type: GRU, name: rec, units: 2}\n  - {type: Dense, name: out, units: 2}\n")
MASKED = ("rnnc: 1\nname: masked\ninputs: {x: {shape: [batch, time, 2]}}\nlayers:\n"
          "  - {type: Masking, name: m}\n  - {type: LSTM, name: rec, units: 2, return_sequences: true}\n")
VARIANTS = 60
COMMANDS = [["inspect"], ["inspect", "--format", "json"], ["inspect", "--format", "dot"],
            ["run", "--random", "--repeat", "1"], ["summary"], ["check"]]
KINDS = ("file error:", "error:", "input error:", "spec error:", "weights error:")


def _variants() -> list[tuple[str, bytes]]:
    models = [compile_text(t).model.SerializeToString() for t in (SMALL, MASKED)]
    rng = random.Random(20240607)
    out = []
    for k in range(VARIANTS):
        data = bytearray(models[k % 2])
        how = ("flip", "truncate", "splice")[k % 3]
        if how == "flip":
            for _ in range(rng.choice([1, 2, 5, 20, 200])):
                data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        elif how == "truncate":
            data = data[:rng.randrange(1, len(data))]
        else:                          # a piece of either model copied over another place
            src = models[rng.randrange(2)]
            n = rng.randrange(1, 64)
            a, b = rng.randrange(len(src) - n), rng.randrange(len(data))
            data[b:b + n] = src[a:a + n]
        out.append((f"{k:02d}-{how}", bytes(data)))
    # and per model one damage that leaves it valid (a mantissa bit of a weight): some variants
    # must run, or the test could pass on a reader that refuses everything
    for m, data in enumerate(models):
        model = onnx.ModelProto.FromString(data)
        big = max(model.graph.initializer, key=lambda t: len(t.raw_data))
        raw = bytearray(big.raw_data)
        raw[len(raw) // 2 - (len(raw) // 2) % 4] ^= 1        # the lowest mantissa bit of a float32
        big.raw_data = bytes(raw)
        out.append((f"benign-{m}", model.SerializeToString()))
    return out


def _check_outcome(code: int, out: str, err: str, what: str) -> None:
    assert code in (0, 2), f"{what}: exit {code}\n{err}"
    assert "Traceback" not in err and "internal error" not in err, f"{what}:\n{err}"
    if code == 2:
        assert err.strip() and err.startswith(KINDS), f"{what}: no clear message: {err!r}"
        # one message (a numbered list only for several problems of one kind)
        assert len(err.strip().splitlines()) == 1 or "problems" in err.splitlines()[0], f"{what}:\n{err}"


@pytest.mark.parametrize("reader", ["whole", "large"])
def test_damaged_models_exit_0_or_2_with_one_message(tmp_path, capsys, monkeypatch, reader):
    """reader "large": every file is read as a large one is, without its weights' data
    (rnnc/protowire.py; rnnc/metadata.py LARGE_FILE), down to 16-byte tensors."""
    if reader == "large":
        import rnnc.metadata
        monkeypatch.setattr(rnnc.metadata, "LARGE_FILE", 0)
        monkeypatch.setattr(rnnc.metadata, "STRIP_MIN", 16)
    seen = {0: 0, 2: 0}
    for name, data in _variants():
        path = tmp_path / f"{name}.onnx"
        path.write_bytes(data)
        for command in COMMANDS:
            argv = [command[0], str(path), *command[1:]]
            code = cli_main(argv)
            out, err = capsys.readouterr()
            _check_outcome(code, out, err, f"{name}: rnnc {' '.join(argv)}")
            seen[code] += 1
            if command[0] in ("summary", "check"):
                # an ONNX file (damaged or not) is never read as a spec
                assert code == 2 and ("not a spec" in err or "empty" in err), err
            if code == 0 and "json" in command:
                json.loads(out)
    assert seen[2] > 0 and seen[0] > 0     # the variants reach both outcomes


@pytest.mark.parametrize("index", [0, 1, 4, 9, 14])
def test_damaged_models_through_the_real_cli(tmp_path, index):
    """The same through a subprocess: the process's own exit status (a crash in ONNX
    Runtime would be a signal, not 0 or 2)."""
    name, data = _variants()[index]
    path = tmp_path / f"{name}.onnx"
    path.write_bytes(data)
    for command in (["inspect", "--format", "json"], ["run", "--random", "--repeat", "1"]):
        r = subprocess.run([sys.executable, "-m", "rnnc", command[0], str(path), *command[1:]], capture_output=True,
                           text=True, timeout=120, cwd=Path(__file__).resolve().parents[1])
        _check_outcome(r.returncode, r.stdout, r.stderr, f"{name}: {command}")
