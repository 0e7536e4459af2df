"""The layer table rnnc stores in a compiled model (metadata key "rnnc.model", written by
rnnc/emit/model.py), read back by the runtime and by `inspect`. A model file is data from
anywhere: the table is checked field by field, and a damaged one is refused with a clear
error instead of being trusted.

check_model / load_model: every command that reads a model file (inspect, run, rnnc.Session)
checks it here first: protobuf that parses, text fields that are UTF-8, onnx.checker's full
check, then this table. onnx is imported inside them, so importing this module stays light."""
from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .errors import ModelFileError
from .ir.plan import Plan, PlanError

KEY = "rnnc.model"
MAX_STATE_ELEMENTS = 1 << 31


def _fail(where: str | None, what: str) -> ModelFileError:
    return ModelFileError(f"{where or 'the model'}: rnnc's metadata ({KEY}) is damaged: {what}; recompile the model "
                          "with rnnc compile")


def _strs(v: Any) -> bool:
    return isinstance(v, list) and all(isinstance(x, str) for x in v)


def _dim(d: Any) -> bool:
    return (isinstance(d, int) and not isinstance(d, bool) and d > 0) or isinstance(d, str)


def parse(text: str, where: str | None = None) -> dict[str, Any]:
    """The checked table: {name, layers, states, inputs, outputs, equal_dims}. A layer's
    `plan` (rnnc/ir/plan.py) must be a valid plan that agrees with its lowering and reason."""
    try:
        meta = json.loads(text)
    except (ValueError, RecursionError):
        raise _fail(where, "not JSON") from None
    if not isinstance(meta, dict):
        raise _fail(where, f"expected a JSON object, got {type(meta).__name__}")
    layers = meta.get("layers", [])
    if not isinstance(layers, list):
        raise _fail(where, "`layers` is not a list")
    for i, l in enumerate(layers):
        if not (isinstance(l, dict) and isinstance(l.get("name"), str) and isinstance(l.get("kind"), str)
                and isinstance(l.get("config", {}), dict) and _strs(l.get("inputs", []))
                and _strs(l.get("notes", [])) and _strs(l.get("nodes", []))
                and isinstance(l.get("outputs", {}), dict) and isinstance(l.get("params", 0), int)
                and isinstance(l.get("reason", ""), str) and isinstance(l.get("lowering", ""), (str, type(None)))):
            raise _fail(where, f"layer {i} is not a {{name, kind, config, inputs, ...}} record")
        if l.get("plan") is not None:
            try:
                plan = Plan.from_json(l["plan"])
            except PlanError as e:
                raise _fail(where, f"layer {l['name']!r}: its plan: {e}") from None
            if plan.strategy != l.get("lowering") or plan.reason != l.get("reason", ""):
                raise _fail(where, f"layer {l['name']!r}: its lowering and reason disagree with its plan")
        if l["kind"] == "Embedding":
            n = l.get("config", {}).get("input_dim")
            if not (isinstance(n, int) and not isinstance(n, bool) and n > 0):
                raise _fail(where, f"layer {l['name']!r}: Embedding without a positive input_dim")
    states = meta.get("states", [])
    if not isinstance(states, list):
        raise _fail(where, "`states` is not a list")
    for i, s in enumerate(states):
        if not (isinstance(s, dict) and all(isinstance(s.get(k), str) for k in ("layer", "port", "input", "output"))
                and isinstance(s.get("dims"), list) and s["dims"]
                and all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in s["dims"][1:])
                and _dim(s["dims"][0])):
            # dims: positive ints; the batch (first) may be symbolic: the serving form (rnnc/serve)
            raise _fail(where, f"state {i} is not a {{layer, port, input, output, dims}} record")
        n = 1
        for d in s["dims"][1:] if isinstance(s["dims"][0], str) else s["dims"]:
            n *= d
        if n > MAX_STATE_ELEMENTS:
            raise _fail(where, f"state {i} has {n:,} elements")
    equal = meta.get("equal_dims", [])
    if not (isinstance(equal, list) and all(isinstance(c, list) and len(c) == 3 and _dim(c[0]) and _dim(c[1])
                                            and isinstance(c[2], str) for c in equal)):
        raise _fail(where, "`equal_dims` is not a list of [dim, dim, why]")
    for k in ("inputs", "outputs"):
        if not _strs(meta.get(k, [])):
            raise _fail(where, f"`{k}` is not a list of names")
    if meta.get("precision") is not None:
        what = _precision_problem(meta["precision"])
        if what:
            raise _fail(where, f"`precision` {what}")
    return {**meta, "layers": layers, "states": states, "equal_dims": equal}


PRECISION_MODES = ("int8", "fp16")


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v == v and v >= 0


def _precision_problem(p: Any) -> str | None:
    """What is wrong with a reduced-precision record (rnnc/runtime/precision.py writes it):
    {mode, layers {layer: how}, calibration, drift {output: {max_abs, mean_abs, argmax_agree}}
    or null, and for fp16 provider, kept_fp32, not_measured}; None when it holds together."""
    if not isinstance(p, dict):
        return "is not an object"
    extra = sorted(set(p) - {"mode", "layers", "calibration", "drift", "provider", "kept_fp32", "not_measured"})
    if extra:
        return f"has unknown field(s) {', '.join(map(repr, extra))}"
    if p.get("mode") not in PRECISION_MODES:
        return f"mode {p.get('mode')!r} is not one of {', '.join(PRECISION_MODES)}"
    layers = p.get("layers", {})
    if not (isinstance(layers, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in layers.items())):
        return "layers is not a {layer: description} object"
    for k in ("calibration", "provider", "not_measured"):
        if not isinstance(p.get(k, ""), str):
            return f"{k} is not a string"
    if not _strs(p.get("kept_fp32", [])):
        return "kept_fp32 is not a list of node names"
    drift = p.get("drift")
    if drift is None:
        return None
    if not isinstance(drift, dict):
        return "drift is not an object"
    for name, d in drift.items():
        if not (isinstance(d, dict) and _number(d.get("max_abs")) and _number(d.get("mean_abs"))
                and (d.get("argmax_agree") is None or (_number(d["argmax_agree"]) and d["argmax_agree"] <= 1))
                and set(d) <= {"max_abs", "mean_abs", "argmax_agree"}):
            return f"drift of output {name!r} is not {{max_abs, mean_abs, argmax_agree}} (non-negative numbers)"
    return None


# ---- the model file itself -----------------------------------------------------------------

MAX_PROTO = 2 << 30     # protobuf's limit: bigger models keep their weights in external data


def _damaged(where: str | None, what: str) -> ModelFileError:
    return ModelFileError(f"{where or 'the model'}: not a valid ONNX model: {what}")


def _first_line(e: BaseException, limit: int = 300) -> str:
    text = " ".join(str(e).split("\n")[0].split()) or type(e).__name__
    return text if len(text) <= limit else text[:limit - 1] + "…"


def bad_text_field(msg: Any) -> str | None:
    """The path of the first string field that is not UTF-8, or None. protobuf hands such a
    proto2 `string` back as bytes (and ONNX Runtime's Python binding fails decoding it); the
    big fields (raw_data, *_data) are not strings and are not read."""
    stack = [(msg, "model")]
    while stack:
        m, where = stack.pop()
        for fd in m.DESCRIPTOR.fields:
            # is_repeated: protobuf >= 5.29 (where `label` is deprecated); label before it
            repeated = fd.is_repeated if hasattr(fd, "is_repeated") else fd.label == fd.LABEL_REPEATED
            if fd.type == fd.TYPE_STRING:
                values = list(getattr(m, fd.name)) if repeated else \
                    [getattr(m, fd.name)] if m.HasField(fd.name) else []
                if any(isinstance(v, bytes) for v in values):
                    return f"{where}.{fd.name}"
            elif fd.type == fd.TYPE_MESSAGE:
                if repeated:
                    stack += [(x, f"{where}.{fd.name}[{i}]") for i, x in enumerate(getattr(m, fd.name))]
                elif m.HasField(fd.name):
                    stack.append((getattr(m, fd.name), f"{where}.{fd.name}"))
    return None


def check_model(model: Any, where: str | None = None, *, path: str | Path | None = None,
                stripped: list[int] | None = None) -> dict[str, Any] | None:
    """Check a parsed onnx.ModelProto before anything reads it: UTF-8 text fields,
    onnx.checker's full check (structure, types, shape inference), and rnnc's table if the
    model has one (returned, parsed; None for a model rnnc did not write). `path`: the file
    it came from, for models whose weights live in external data (checked from the file).
    `stripped`: the initializers read without their data (load_model of a large file; their
    sizes are checked there): the checker sees them as graph inputs of their type and dims."""
    import onnx  # lazy: see the module docstring

    bad = bad_text_field(model)
    if bad is not None:
        raise _damaged(where, f"{bad} is not UTF-8 text (the file is damaged)")
    external = any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)
    try:
        if path is not None and (external or model.ByteSize() >= MAX_PROTO):
            onnx.checker.check_model(str(path), full_check=True)
        elif stripped:
            onnx.checker.check_model(as_inputs(model, stripped), full_check=True)
        else:
            onnx.checker.check_model(model, full_check=True)
    except Exception as e:  # noqa: BLE001 - ValidationError, InferenceError, ValueError, ...
        raise _damaged(where, f"onnx.checker refuses it: {_first_line(e)}") from None
    props = {}
    for prop in model.metadata_props:
        if prop.key in props:
            raise _damaged(where, f"metadata key {prop.key!r} appears twice")
        props[prop.key] = prop.value
    return parse(props[KEY], where) if KEY in props else None


def as_inputs(model: Any, stripped: Iterable[int]) -> Any:
    """A copy of the model with the initializers at `stripped` (without their data: read so
    from a large file, or held apart as arrays by rnnc.Compiled) made graph inputs of their type
    and dims (an input already of that name stays as it is): what onnx.checker is shown, as
    it cannot check a tensor that has no data."""
    import onnx  # lazy: see the module docstring
    from onnx import helper

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    g = probe.graph
    gone = set(stripped)
    inputs = {i.name for i in g.input}
    keep = [t for i, t in enumerate(g.initializer) if i not in gone]
    moved = [t for i, t in enumerate(g.initializer) if i in gone]
    del g.initializer[:]
    g.initializer.extend(keep)
    g.input.extend(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in moved
                   if t.name not in inputs)
    return probe


def _model_path(path: str | Path) -> Path:
    """A file that must be an ONNX model: a missing file, a directory, or a file of another
    kind (a spec, a .npy ...: rnnc/fileio.py sniff) is refused and named."""
    from .fileio import expect_kind

    p = Path(path)
    if not p.exists():
        raise ModelFileError(f"model file not found: {p}")
    expect_kind(p, ("onnx", "binary"), "an ONNX model", error=ModelFileError)
    return p


def read_model_file(path: str | Path) -> bytes:
    """The bytes of a file that must be an ONNX model (_model_path)."""
    p = _model_path(path)
    try:
        return p.read_bytes()
    except OSError as e:
        raise ModelFileError(f"cannot read {p}: {e.strerror or e}") from None


# A model file this big is read without its large initializers' data (rnnc/protowire.py): the
# checks and `inspect` need their types and dims only, and ONNX Runtime reads the file itself
LARGE_FILE = 64 << 20
STRIP_MIN = 1 << 16     # initializers of this many bytes or more are measured, not read


def is_large_file(path: str | Path) -> bool:
    try:
        return Path(path).stat().st_size >= LARGE_FILE
    except OSError:
        return False        # read_model_file names the problem


def _parse(data: bytes, where: str | None) -> Any:
    import onnx  # lazy: see the module docstring
    from google.protobuf.message import DecodeError

    if not data:
        raise _damaged(where, "the file is empty")
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except (DecodeError, ValueError, RuntimeError) as e:
        raise _damaged(where, f"its protobuf cannot be parsed ({_first_line(e, 120)}): the file is damaged, "
                              "truncated or not an ONNX model") from None
    if not model.HasField("graph"):
        raise _damaged(where, "it has no graph (the file is damaged, truncated or not an ONNX model)")
    return model


def load_model(data: bytes | str | Path, where: str | None = None, *, path: str | Path | None = None) -> Any:
    """Parse and check a model (bytes, or a path: read_model_file); returns the
    onnx.ModelProto. Every problem is a ModelFileError that says what is wrong. External
    weights are not loaded (nothing here needs them). A large file (LARGE_FILE) is read
    without its large initializers' data: they come back with their type and dims only."""
    if isinstance(data, (str, Path)):
        path = Path(data)
        where = where or str(path)
        if is_large_file(path):
            return _load_large(path, where)
        data = read_model_file(path)
    model = _parse(data, where)
    check_model(model, where, path=path)
    return model


# the types whose raw data is a whole number of bytes per element (TensorProto.DataType: FLOAT ..
# BFLOAT16, and the four FLOAT8s); a large file with another kind of stripped tensor is read whole
_BYTE_TYPES = frozenset(range(1, 21)) - {8}       # not STRING


def strip_weights(data: Any, where: str | None) -> tuple[Any, list[int]] | None:
    """Parse the model in `data` (bytes or an mmap) without its main graph's large
    initializers' data (rnnc/protowire.py); each one's size is checked against its type and
    dims. Returns the model and the indices of those initializers (None where one is of a type
    packed below a byte, whose size is left to onnx.checker)."""
    import math

    from onnx import helper

    from .protowire import WireError, strip_raw_data

    try:
        skeleton, stripped = strip_raw_data(data, STRIP_MIN)
    except WireError as e:
        raise _damaged(where, f"its protobuf cannot be parsed ({e}): the file is damaged, truncated or not an "
                              "ONNX model") from None
    model = _parse(skeleton, where)
    inits = model.graph.initializer
    for i, size in stripped:
        t = inits[i]
        if t.data_type not in _BYTE_TYPES:
            return None
        need = math.prod(t.dims) * helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
        if any(d < 0 for d in t.dims) or need != size:
            raise _damaged(where, f"initializer {t.name!r} has {size:,} bytes of data; its type and dims "
                                  f"{list(t.dims)} need {need:,}")
    return model, [i for i, _ in stripped]


def _load_large(path: Path, where: str) -> Any:
    import mmap

    p = _model_path(path)
    try:
        with open(p, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            read = strip_weights(mm, where)
    except OSError as e:
        raise ModelFileError(f"cannot read {p}: {e.strerror or e}") from None
    if read is None:
        model = _parse(read_model_file(p), where)
        check_model(model, where, path=path)
        return model
    model, stripped = read
    check_model(model, where, path=path, stripped=stripped)
    return model
