"""`rnnc export triton`: a Triton model repository for a compiled model.

DIR/NAME/config.pbtxt and DIR/NAME/1/model.onnx, platform onnxruntime_onnx. The export takes
the model as compiled (an .onnx file holds no spec to recompile from):

- the serving form (states `(batch, ...)`, every input and output with a symbolic first dim:
  rnnc/serve/serving.py): `max_batch_size: N` (default 8); Triton's sequence batcher
  (strategy `oldest`) batches the requests of up to N sequences, each in its own batch row.
  Every request of a sequence has batch 1; requests batch together only when their shapes
  (chunk lengths) match.
- a fixed-batch stateful model (`[20, time, 50]`): `max_batch_size: 0`: one sequence carries
  its 20 streams in lockstep (every request has all 20, the same number of steps), and
  sequences never batch together.
- no states: a plain model, batched by the dynamic batcher when every first dim is symbolic.

Carried states are Triton's implicit state (`sequence_batching.state`, zeros at START), never
listed as inputs or outputs. Strategy `oldest`, not `direct`: under concurrent load `direct`
fills empty batch slots with uninitialized input memory, and token ids from it made ONNX
Runtime's Gather fail the whole batch. Triton pairs output states with input states by sorted
name (triton-inference-server/server#8586): the export refuses state names whose two lists
sort differently, and says how to rename."""
from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from .. import metadata as rnnc_metadata
from ..errors import ModelFileError, RnncError
from ..fileio import write_atomic

TRITON_TYPES = {1: "TYPE_FP32", 6: "TYPE_INT32", 7: "TYPE_INT64", 9: "TYPE_BOOL", 11: "TYPE_FP64",
                10: "TYPE_FP16", 2: "TYPE_UINT8", 3: "TYPE_INT8"}
DEFAULT_MAX_BATCH = 8
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*")


@dataclass
class Tensor:
    name: str
    data_type: str
    dims: list[int | str]          # the model's dims: ints, or symbolic names


@dataclass
class TritonModel:
    """What the config says, before it is written as text."""

    name: str
    max_batch_size: int
    inputs: list[Tensor]
    outputs: list[Tensor]
    states: list[tuple[Tensor, Tensor]] = field(default_factory=list)   # (input, output)
    notes: list[str] = field(default_factory=list)

    def dims(self, t: Tensor) -> list[int]:
        """Config dims: -1 for symbolic ones; without the batch dim when the model batches."""
        d = t.dims[1:] if self.max_batch_size > 0 else t.dims
        return [x if isinstance(x, int) else -1 for x in d]


def _tensors(values) -> list[Tensor]:
    out = []
    for v in values:
        tt = v.type.tensor_type
        if tt.elem_type not in TRITON_TYPES:
            raise RnncError(f"{v.name}: ONNX element type {tt.elem_type} has no Triton type here")
        dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in tt.shape.dim]
        out.append(Tensor(v.name, TRITON_TYPES[tt.elem_type], dims))
    return out


def describe(model_path: str | Path, *, name: str, max_batch_size: int | None = None) -> TritonModel:
    """Read the model (rnnc's checks: rnnc/metadata.py load_model) and decide its config."""
    import onnx

    path = Path(model_path)
    if not path.is_file():
        raise ModelFileError(f"model file not found: {path}")
    if not _NAME.fullmatch(name):
        raise RnncError(f"--name {name!r}: expected letters, digits, '_', '-' or '.' (a folder name Triton loads)")
    model = onnx.load(str(path), load_external_data=False)
    props = {p.key: p.value for p in model.metadata_props}
    meta = rnnc_metadata.parse(props[rnnc_metadata.KEY], str(path)) if rnnc_metadata.KEY in props else {}
    inits = {i.name for i in model.graph.initializer}
    ins = {t.name: t for t in _tensors(i for i in model.graph.input if i.name not in inits)}
    outs = {t.name: t for t in _tensors(model.graph.output)}
    states = []
    for s in meta.get("states", []):
        if s["input"] not in ins or s["output"] not in outs:
            raise ModelFileError(f"{path}: rnnc's metadata names state {s['input']!r} / {s['output']!r}, which the "
                                 "graph does not have as an input and an output; recompile the model")
        states.append((ins.pop(s["input"]), outs.pop(s["output"])))
    inputs, outputs = list(ins.values()), list(outs.values())
    check_state_names([(i.name, o.name) for i, o in states])
    every = inputs + outputs + [t for pair in states for t in pair]
    batched = all(t.dims and isinstance(t.dims[0], str) for t in every) and \
        len({t.dims[0] for t in every}) == 1
    notes = []
    if max_batch_size is None:
        max_batch_size = DEFAULT_MAX_BATCH if batched else 0
    if max_batch_size < 0:
        raise RnncError(f"--max-batch-size: expected 0 or more, got {max_batch_size}")
    if max_batch_size > 0 and not batched:
        fixed = sorted({f"{t.name} {t.dims}" for t in every if not (t.dims and isinstance(t.dims[0], str))})
        raise RnncError(f"--max-batch-size {max_batch_size}: Triton batches on a symbolic first dim of every input "
                        f"and output (and state), but {', '.join(fixed[:3])} {'has' if len(fixed) == 1 else 'have'} "
                        "none; compile the serving form (rnnc export triton SPEC.yaml, or "
                        "rnnc.serve.compile_serving) or pass --max-batch-size 0")
    if states and max_batch_size == 0 and isinstance(states[0][0].dims[0], int):
        b = states[0][0].dims[0]
        notes.append(f"max_batch_size: 0: this model's states have a fixed batch ({b}): one sequence carries {b} "
                     f"streams in lockstep (every request has all {b}, each the same number of steps) and "
                     "sequences never batch together; compile the serving form to batch streams across sequences")
    return TritonModel(name, max_batch_size, inputs, outputs, states, notes)


def check_state_names(pairs: list[tuple[str, str]]) -> None:
    """Triton pairs output states with input states by sorted name (server#8586): refuse
    names whose input list and output list sort into different pairs."""
    by_in = [o for _, o in sorted(pairs)]
    by_out = sorted(o for _, o in pairs)
    if by_in != by_out:
        k = next(i for i, (a, b) in enumerate(zip(by_in, by_out)) if a != b)
        ins = {o: i for i, o in pairs}
        raise RnncError(f"Triton pairs state outputs with state inputs by sorted name (server issue 8586), and these "
                        f"sort differently: input {ins[by_in[k]]!r} sorts with output {by_out[k]!r}, not with its own "
                        f"{by_in[k]!r}; rename the layers (or a custom cell's states) so that no name is another "
                        "one's prefix followed by a character between 'i' and 'o' (e.g. `x` and `x_j`: rename "
                        "`x_j` to `x2_j` or `x` to `x0`), then recompile")


def _q(s: str) -> str:
    return json.dumps(s)


def _dims(d: list[int]) -> str:
    return "[ " + ", ".join(map(str, d)) + " ]" if d else "[ ]"


def render(m: TritonModel, *, idle_us: int = 60_000_000, queue_delay_us: int = 1000) -> str:
    """config.pbtxt text (Triton's ModelConfig, protobuf text format)."""
    lines = [f"name: {_q(m.name)}", 'platform: "onnxruntime_onnx"', f"max_batch_size: {m.max_batch_size}"]
    for key, ts in (("input", m.inputs), ("output", m.outputs)):
        lines.append(f"{key} [")
        lines.append(",\n".join(f"  {{ name: {_q(t.name)} data_type: {t.data_type} dims: {_dims(m.dims(t))} }}"
                                for t in ts))
        lines.append("]")
    if m.states:
        lines.append("sequence_batching {")
        lines.append(f"  max_sequence_idle_microseconds: {idle_us}")
        slots = max(1, m.max_batch_size)
        lines.append(f"  oldest {{ max_candidate_sequences: {4 * slots} preferred_batch_size: [ {slots} ] "
                     f"max_queue_delay_microseconds: {queue_delay_us} }}")
        lines.append("  state [")
        parts = []
        for i, o in m.states:
            d = _dims(m.dims(i))
            parts.append(f"    {{ input_name: {_q(i.name)} output_name: {_q(o.name)} data_type: {i.data_type} "
                         f"dims: {d}\n      initial_state {{ data_type: {i.data_type} dims: {d} zero_data: true "
                         f"name: {_q('zeros')} }} }}")
        lines.append(",\n".join(parts))
        lines.append("  ]")
        lines.append("}")
    elif m.max_batch_size > 0:
        lines.append("dynamic_batching { }")
    return "\n".join(lines) + "\n"


def export(model_path: str | Path, repo: str | Path, *, name: str | None = None,
           max_batch_size: int | None = None) -> tuple[Path, TritonModel]:
    """Write REPO/NAME/config.pbtxt and REPO/NAME/1/model.onnx (plus its .data file, if the
    model has external data); returns the model folder and the config decided."""
    model_path = Path(model_path)
    name = name or model_path.stem
    m = describe(model_path, name=name, max_batch_size=max_batch_size)
    repo = Path(repo)
    if repo.exists() and not repo.is_dir():
        raise RnncError(f"--repo {repo}: not a folder")
    folder = repo / name
    (folder / "1").mkdir(parents=True, exist_ok=True)
    data = model_path.with_name(model_path.name + ".data")
    if data.is_file():
        shutil.copyfile(data, folder / "1" / data.name)
    write_atomic({folder / "1" / "model.onnx": model_path.read_bytes(),
                  folder / "config.pbtxt": render(m).encode()})
    return folder, m
