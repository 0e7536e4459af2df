"""rnnc.Session: an ONNX Runtime session with provider choice (CUDA when present, else the
CPU) and input validation that names what was expected.

A model from a file or bytes is checked before ONNX Runtime sees it (rnnc/metadata.py
load_model: protobuf, UTF-8 text, onnx.checker's full check, rnnc's table), so that a damaged
file is a clear error, never a crash in ONNX Runtime or its Python binding. Providers:
`auto` takes CUDA when it starts and else the CPU, and says so in `fallback`; an explicit
request (`cuda`, or a list) that ONNX Runtime cannot meet is an error."""
from __future__ import annotations

import contextlib
import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from .. import metadata
from ..errors import InputError, ModelFileError, Problem, RnncError

ORT_DTYPES = {"tensor(float)": np.float32, "tensor(int32)": np.int32, "tensor(int64)": np.int64,
              "tensor(bool)": np.bool_, "tensor(double)": np.float64}


def choose_providers(providers: str | list[str]) -> list[str]:
    available = ort.get_available_providers()
    if isinstance(providers, list):
        missing = [p for p in providers if p not in available]
        if missing:
            raise RnncError(f"providers {missing} are not available; ONNX Runtime has {available}")
        return providers
    if providers == "auto":
        return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
    if providers == "cpu":
        return ["CPUExecutionProvider"]
    if providers == "cuda":
        if "CUDAExecutionProvider" not in available:
            raise RnncError(f"providers=cuda: ONNX Runtime has no CUDAExecutionProvider (it has {available})")
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    raise RnncError(f"providers: expected auto, cpu, cuda or a list, got {providers!r}")


CUDA_DID_NOT_START = "CUDA could not start (no GPU, or CUDA/cuDNN libraries missing)"
NO_CUDA_BUILD = "CUDA is not available (this ONNX Runtime has no CUDA provider)"


class Session:
    """Run a compiled model. `run({name: array})` returns {output name: array} in the
    spec's output order."""

    def __init__(self, model: Any, providers: str | list[str] = "auto", *, threads: int | None = None,
                 strict_gpu: bool = False):
        if threads is not None and (not isinstance(threads, int) or isinstance(threads, bool) or threads < 0):
            raise RnncError(f"threads: expected a non-negative integer (0: ONNX Runtime's default), got {threads!r}")
        data, self.path = _model_bytes(model)

        def options() -> ort.SessionOptions:
            opts = ort.SessionOptions()
            opts.log_severity_level = 4      # rnnc reports ONNX Runtime's errors itself, without its log lines
            if threads:
                opts.intra_op_num_threads = threads
            return opts
        wanted = choose_providers(providers)
        ort.set_default_logger_severity(4)   # we report provider fallbacks ourselves
        try:
            # strict_gpu: True when ONNX Runtime confirmed that no main-graph node is on the CPU
            self._sess, self.strict_gpu = _open(data, options, wanted, strict_gpu=strict_gpu, where=self.path)
        finally:
            ort.set_default_logger_severity(2)
        self.providers: list[str] = self._sess.get_providers()
        # auto and CUDA did not start (or this ONNX Runtime has none): why the CPU runs it
        self.fallback: str | None = None
        # (a strict session leaves the CPU out on purpose: _open)
        lost = [p for p in wanted if p not in self.providers and not (self.strict_gpu and p == "CPUExecutionProvider")]
        if lost and providers != "auto":          # an explicit request that cannot be met
            why = CUDA_DID_NOT_START if "CUDAExecutionProvider" in lost else "it could not start"
            raise RnncError(f"providers={providers if isinstance(providers, str) else list(providers)}: "
                            f"{', '.join(lost)} was requested but {why}; ONNX Runtime would run on "
                            f"{', '.join(self.providers)} (pass auto to fall back to the CPU)")
        if providers == "auto" and "CUDAExecutionProvider" not in self.providers:
            self.fallback = CUDA_DID_NOT_START if "CUDAExecutionProvider" in wanted else NO_CUDA_BUILD
        meta = self._sess.get_modelmeta().custom_metadata_map
        self.metadata: dict[str, Any] = metadata.parse(meta[metadata.KEY], self.path) if metadata.KEY in meta else {}
        self._inputs = {i.name: i for i in self._sess.get_inputs()}
        # stateful layers: their states are graph inputs/outputs that the session carries
        self._state_io: list[dict] = self.metadata.get("states", [])
        self._outputs = {o.name: o for o in self._sess.get_outputs()}
        outs = set(self._outputs)
        for st in self._state_io:
            i = self._inputs.get(st["input"])
            if i is None or st["output"] not in outs or list(i.shape) != st["dims"]:
                raise ModelFileError(f"{self.path or 'the model'}: rnnc's metadata names state {st['input']!r} "
                                     f"of shape {st['dims']}, which the graph does not have; recompile the model")
        state_ins = {s["input"] for s in self._state_io}
        state_outs = {s["output"] for s in self._state_io}
        self._all_outputs = [o.name for o in self._sess.get_outputs()]
        self.input_names: list[str] = [i.name for i in self._sess.get_inputs() if i.name not in state_ins]
        self.output_names: list[str] = [o for o in self._all_outputs if o not in state_outs]
        self._states: dict[str, np.ndarray] = {}
        self.reset_states()

    @property
    def provider(self) -> str:
        """The provider that runs the model (the first one ONNX Runtime kept)."""
        return self.providers[0]

    def input_spec(self, name: str) -> tuple[type, list[int | str | None]]:
        """An input's NumPy dtype and dims (an int, a symbolic name, or None)."""
        i = self._inputs[name]
        return ORT_DTYPES.get(i.type, np.float32), list(i.shape)

    def output_spec(self, name: str) -> tuple[type, list[int | str | None]]:
        """An output's NumPy dtype and dims, as ONNX Runtime reports them (for any name in
        output_names)."""
        if name not in self.output_names:
            raise RnncError(f"output_spec: unknown output {name!r}: expected one of {', '.join(self.output_names)}")
        o = self._outputs[name]
        return ORT_DTYPES.get(o.type, np.float32), list(o.shape)

    # -- stateful models -----------------------------------------------------------------
    @property
    def stateful(self) -> bool:
        return bool(self._state_io)

    @property
    def states(self) -> dict[str, np.ndarray]:
        """The carried states, keyed `layer.port` (e.g. `lstm.state_h`); copies. A model in the
        serving form (states with a symbolic batch) has none until its first chunk or until
        they are set: then {}."""
        if not self._states:
            return {}
        return {f"{s['layer']}.{s['port']}": self._states[s["input"]].copy() for s in self._state_io}

    @property
    def state_batch(self) -> int | None:
        """The batch of the carried states: fixed by the model, or (the serving form, states
        `(batch, ...)`) by the first chunk or the states set, until reset_states(); None before."""
        if self._states:
            return int(next(iter(self._states.values())).shape[0])
        fixed = [s["dims"][0] for s in self._state_io if isinstance(s["dims"][0], int)]
        return fixed[0] if fixed else None

    @property
    def _symbolic_states(self) -> bool:
        return any(isinstance(s["dims"][0], str) for s in self._state_io)

    @states.setter
    def states(self, values: Mapping[str, Any]) -> None:
        self.reset_states(values, _zero_rest=False)

    def reset_states(self, values: Mapping[str, Any] | None = None, *, _zero_rest: bool = True) -> None:
        """Zero every state, then set the given ones ({`layer.port`: array}). The serving form
        (states with a symbolic batch): zeroing forgets the batch too (the next chunk, or the
        states given, fix it again)."""
        new = dict(self._states)
        symbolic = self._symbolic_states
        if _zero_rest or not new:
            new = {} if symbolic else {s["input"]: np.zeros(s["dims"], np.float32) for s in self._state_io}
        # the batch every given state must have: the carried one, else the first given state's
        batch: int | None = int(next(iter(new.values())).shape[0]) if new else None
        by_key = {f"{s['layer']}.{s['port']}": s for s in self._state_io}
        if values is not None and not isinstance(values, Mapping):
            raise InputError(f"states: expected a dict {{state name: array}} with names from "
                             f"{', '.join(by_key) or '(none: not stateful)'}, got {type(values).__name__}")
        problems = []
        for key, value in (values or {}).items():
            if key not in by_key:
                problems.append(f"unknown state {key!r}: expected one of {', '.join(by_key) or '(none: not stateful)'}")
                continue
            try:
                a = np.asarray(value, dtype=np.float32)
            except (TypeError, ValueError) as e:
                problems.append(f"state {key!r}: expected a float32 array of shape {tuple(by_key[key]['dims'])}, "
                                f"got a {type(value).__name__} that is not one ({e})")
                continue
            dims = list(by_key[key]["dims"])
            if symbolic and isinstance(dims[0], str) and a.ndim == len(dims) and a.shape[0] > 0:
                if batch is None:
                    batch = int(a.shape[0])
                dims[0] = batch
            if list(a.shape) != dims:
                problems.append(f"state {key!r}: expected shape {tuple(dims)}, got {a.shape}"
                                + (" (the batch of the states carried or set with it)" if symbolic else ""))
                continue
            new[by_key[key]["input"]] = a.copy()
        if problems:
            raise InputError(problems[0] if len(problems) == 1 else None,
                             problems=[Problem(p) for p in problems] if len(problems) > 1 else None)
        if symbolic and new:       # some states given: the others start from zeros of that batch
            new = self._zero_states(batch or 1, new)
        self._states = new

    def _zero_states(self, batch: int, given: Mapping[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
        given = given or {}
        return {s["input"]: given[s["input"]] if s["input"] in given else
                np.zeros([batch if isinstance(d, str) else d for d in s["dims"]], np.float32)
                for s in self._state_io}

    def validate(self, feeds: Mapping[str, Any]) -> dict[str, np.ndarray]:
        if not isinstance(feeds, Mapping):
            raise InputError(f"expected a dict {{input name: array}} with {', '.join(self.input_names)}, "
                             f"got {type(feeds).__name__}")
        problems: list[str] = []
        carried = [k for k in feeds if k in self._inputs and k not in self.input_names]
        if carried:
            problems.append(f"input(s) {', '.join(map(repr, carried))} are states the session carries: "
                            "set them with Session.states or reset_states(), not as inputs")
        unknown = [k for k in feeds if k not in self._inputs]
        if unknown:
            problems.append(f"unknown input(s) {', '.join(map(repr, unknown))}: expected {', '.join(self.input_names)}")
        missing = [k for k in self.input_names if k not in feeds]
        if missing:
            problems.append(f"missing input(s) {', '.join(map(repr, missing))}")
        out: dict[str, np.ndarray] = {}
        sizes: dict[str, tuple[int, str]] = {}
        for name in self.input_names:
            if name not in feeds:
                continue
            dtype, dims = self.input_spec(name)
            try:
                a = np.asarray(feeds[name])
            except (TypeError, ValueError) as e:
                problems.append(f"input {name!r}: expected an array, got a {type(feeds[name]).__name__} that is not "
                                f"one ({e})")
                continue
            if a.dtype.kind in "biuf" and not a.dtype.isnative:   # big-endian data, e.g. from another machine
                a = a.astype(a.dtype.newbyteorder("="))
            shown = "(" + ", ".join(str(d) for d in dims) + ")"
            if a.dtype != dtype:
                problems.append(f"input {name!r}: expected dtype {np.dtype(dtype).name}, got {a.dtype.name} "
                                f"(convert with .astype(np.{np.dtype(dtype).name}))")
                continue
            if a.ndim != len(dims):
                problems.append(f"input {name!r}: expected rank {len(dims)} {shown}, got shape {a.shape}")
                continue
            for axis, (want, got) in enumerate(zip(dims, a.shape)):
                if got == 0:
                    # ONNX Runtime's recurrent ops do not take an empty batch or sequence (its GRU
                    # aborts the process; LSTM and RNN return garbage states)
                    problems.append(f"input {name!r}: axis {axis} ({want}) has size 0 in shape {a.shape}: expected "
                                    "at least 1 (an empty batch or sequence cannot run)")
                    break
                if isinstance(want, int) and want != got:
                    problems.append(f"input {name!r}: expected size {want} on axis {axis} {shown}, got shape {a.shape}")
                elif isinstance(want, str):
                    if want in sizes and sizes[want][0] != got:
                        first, where = sizes[want]
                        problems.append(f"input {name!r}: dim {want!r} is {got} on axis {axis}, but {first} in {where}: "
                                        f"every use of {want!r} must have the same size")
                    sizes.setdefault(want, (got, f"input {name!r}"))
            out[name] = a
            problems += self._check_token_ids(name, a)
        def size(d: int | str) -> int | None:
            return d if isinstance(d, int) else sizes.get(d, (None,))[0]

        def shown(d: int | str) -> str:
            return f"{d!r} = {size(d)}" if isinstance(d, str) else str(d)

        for a, b, why in self.metadata.get("equal_dims", []):
            # dims written differently that a layer combines (Keras's None and None)
            if size(a) is not None and size(b) is not None and size(a) != size(b):
                problems.append(f"dims {shown(a)} and {shown(b)} differ, but {why}")
        if problems:
            raise InputError("; ".join(problems) if len(problems) == 1 else None,
                             problems=[Problem(p) for p in problems] if len(problems) > 1 else None)
        return out

    def _states_for(self, checked: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The serving form: the carried states, or zeros of the chunk's batch before the
        first chunk; a chunk of another batch than the carried states' is an error."""
        syms = {s["dims"][0] for s in self._state_io if isinstance(s["dims"][0], str)}
        firsts = {n: self.input_spec(n)[1][:1] for n in checked}     # each input's first dim, if any
        sized = [a.shape[0] for n, a in checked.items() if firsts[n] and firsts[n][0] in syms] or \
            [a.shape[0] for a in checked.values() if a.ndim]
        if not sized:
            raise InputError("the serving form's states take their batch from the inputs, and no input has one")
        batch = int(sized[0])
        if not self._states:
            return self._zero_states(batch)
        have = self.state_batch
        if have != batch:
            raise InputError(f"this chunk has batch {batch}, but the session carries states for batch {have} "
                             "(the first chunk's, or the states set): call reset_states() to start a new batch")
        return self._states

    def _check_token_ids(self, name: str, a: np.ndarray) -> list[str]:
        """Token ids feeding an Embedding must lie in [0, input_dim) (ONNX's Gather would
        silently wrap negative ids)."""
        out = []
        for layer in self.metadata.get("layers", []):
            if layer["kind"] == "Embedding" and layer.get("inputs") == [name] and a.size:
                n = layer["config"]["input_dim"]
                lo, hi = int(a.min()), int(a.max())
                if lo < 0 or hi >= n:
                    bad = lo if lo < 0 else hi
                    out.append(f"input {name!r}: token id {bad} is outside [0, {n}) of embedding {layer['name']!r}")
        return out

    def run(self, feeds: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Run on {input name: array}; returns {output name: array}. A stateful model starts
        from the carried states and keeps its final states for the next call; on any error the
        states are left untouched."""
        checked = self.validate(feeds)
        states = self._states
        if self._symbolic_states:   # the serving form: the first chunk fixes the batch
            states = self._states_for(checked)
        try:
            values = self._sess.run(None, {**checked, **states})
        except Exception as e:  # noqa: BLE001 - e.g. a token id outside the embedding table
            raise InputError(f"ONNX Runtime could not run the model on these inputs: {e}") from None
        out = dict(zip(self._all_outputs, values))
        if self._state_io:
            self._states = {s["input"]: out[s["output"]] for s in self._state_io}
        return {k: out[k] for k in self.output_names}


STRICT_GPU_KEY = "session.disable_cpu_ep_fallback"
_REFUSED = "fallback to CPU EP has been explicitly disabled"


class StrictGpuError(RnncError):
    """strict_gpu: CUDA started, but ONNX Runtime assigns some main-graph nodes to the CPU."""

    kind = "strict-gpu error"


def _open(data: bytes | str, options, wanted: list[str], *, strict_gpu: bool, where: str | None
          ) -> tuple[ort.InferenceSession, bool]:
    """Create the ONNX Runtime session; returns (session, whether strict GPU placement holds).

    strict_gpu with CUDA among the providers: ONNX Runtime's session.disable_cpu_ep_fallback
    (the CPU must then not be listed, or ONNX Runtime refuses the configuration). ONNX Runtime
    gives the same refusal when CUDA cannot start at all, since every node then lands on the
    CPU; strict-gpu is an error only where CUDA is present, so in that case the plain session
    is opened and Session.fallback says why."""
    def create(opts: ort.SessionOptions, providers: list[str]) -> ort.InferenceSession:
        try:
            # ONNX Runtime's Python wrapper prints an "EP Error" banner to stdout when a provider
            # fails and it retries on the CPU: rnnc's stdout carries only rnnc's output
            with contextlib.redirect_stdout(io.StringIO()):
                return ort.InferenceSession(data, sess_options=opts, providers=providers)
        except Exception as e:  # ORT raises several unrelated types
            if _REFUSED in str(e):
                raise
            raise ModelFileError(f"ONNX Runtime cannot load {where or 'the model'}: {e}") from None

    if not (strict_gpu and "CUDAExecutionProvider" in wanted):
        return create(options(), wanted), False
    strict = options()
    strict.log_severity_level = 4        # the refusal is reported below, as an rnnc error
    strict.add_session_config_entry(STRICT_GPU_KEY, "1")
    try:
        return create(strict, [p for p in wanted if p != "CPUExecutionProvider"]), True
    except ModelFileError:
        raise
    except Exception as e:  # noqa: BLE001 - the refusal, recognised by its message in create()
        refusal = str(e).split(" : ")[-1].strip()
    plain = create(options(), wanted)
    if "CUDAExecutionProvider" not in plain.get_providers():
        return plain, False              # CUDA could not start: Session.fallback reports it
    raise StrictGpuError(f"--strict-gpu: expected every main-graph node on CUDAExecutionProvider, got nodes that "
                         f"ONNX Runtime assigns to the CPU ({refusal}); `rnnc inspect {where or 'MODEL.onnx'}` "
                         "lists them and says why")


def _model_bytes(model: Any) -> tuple[bytes | str, str | None]:
    """The model for ONNX Runtime (its bytes, or its path where its tensors are ONNX external
    data: ONNX Runtime finds `<model>.data` beside the model only when it opens the path), checked
    first (metadata.load_model) unless it is an rnnc.Compiled, which rnnc.compile_spec has just
    checked."""
    if isinstance(model, (str, Path)):
        p = Path(model)
        if metadata.is_large_file(p):   # checked without reading its weights; ONNX Runtime reads the file
            metadata.load_model(p)
            return str(p.resolve()), str(p)
        data = metadata.read_model_file(p)
        proto = metadata.load_model(data, str(p), path=p)
        external = any(t.data_location == 1 for t in proto.graph.initializer)   # TensorProto.EXTERNAL
        return (str(p.resolve()) if external else data), str(p)
    if hasattr(model, "model") and hasattr(model, "graph"):    # rnnc.Compiled
        return model.serialize(), None       # no whole ModelProto made first
    if hasattr(model, "SerializeToString"):
        metadata.check_model(model)
        return model.SerializeToString(), None
    if isinstance(model, (bytes, bytearray)):
        metadata.load_model(bytes(model))
        return bytes(model), None
    raise RnncError(f"Session: expected a path, bytes, an onnx.ModelProto or rnnc.Compiled, got {type(model).__name__}")
