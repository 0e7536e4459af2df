"""`rnnc import keras`: a Keras 3 `.keras` file → an rnnc spec and its weights.

A `.keras` file is a zip of `config.json` (the model's architecture), `metadata.json` and
`model.weights.h5`. They are read as data (zipfile, json, h5py): Keras need not be
installed, and nothing in the file is deserialized into objects or executed.

Functional models: each layer's single inbound node gives its inputs (`args`), its
`initial_state` and the `mask` Keras computed for it; the model's `input_layers` and
`output_layers` give the spec's inputs and outputs. Keras records the mask computations as
`keras.ops` nodes (NotEqual, Any, LogicalOr, ...): they are not layers, and each mask that
reaches a recurrent layer is checked against the one rnnc derives (rnnc/ir/build.py), so a
model whose masks rnnc would compute differently is refused rather than imported wrong."""
from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import networkx as nx

from ..errors import Problem, SpecError
from ..ir import build_graph
from ..layers import LAYER_DEFS
from ..spec import load_spec, load_spec_text
from ..spec import schema as S
from .common import Imported, ImportProblem, check_spec_text, render_spec
from .keras_config import ATTENTION_KINDS, RECURRENT, LayerConverter, attention_call, ports
from .keras_config import tensors as _tensors
from .keras_h5 import open_h5, weights_from_h5
from .keras_masks import MaskFacts, check_masks

MAX_JSON = 64 << 20
MASK_KEY_LAYERS = (*RECURRENT, "Bidirectional", "BatchNormalization")


def _reads_mask(kind: str) -> bool:
    d = LAYER_DEFS.get(kind)
    return d is not None and d.masking in ("consume", "infer") and d.inputs[1] == 1
SPEC_DTYPES = ("float32", "int32", "int64", "bool")


def read_archive(path: str | Path) -> tuple[dict, dict, bytes]:
    """(config, metadata, weights h5 bytes) of a .keras file."""
    p = Path(path)
    file = str(p)
    if not p.is_file():
        raise ImportProblem(problems=[Problem("file not found", file=file)])
    if not zipfile.is_zipfile(p):
        raise ImportProblem(problems=[Problem("not a Keras 3 .keras file (a zip archive); a Keras 2 .h5 model or "
                                              "a SavedModel folder cannot be imported: load it in Keras 3 and "
                                              "save it with model.save('model.keras')", file=file)])
    try:
        with zipfile.ZipFile(p) as z:
            names = set(z.namelist())
            if "config.json" not in names:
                raise ImportProblem(problems=[Problem(f"no config.json in the archive (found: "
                                                      f"{', '.join(sorted(names)) or 'nothing'})", file=file)])
            config = _json(z, "config.json", file)
            meta = _json(z, "metadata.json", file) if "metadata.json" in names else {}
            if "model.weights.h5" not in names:
                other = sorted(n for n in names if "weights" in n)
                raise ImportProblem(problems=[Problem(
                    "no model.weights.h5 in the archive" + (f" (found {', '.join(other)}: sharded or npz weights are "
                                                             "not supported; save without max_shard_size)" if other else ""),
                    file=file)])
            weights = z.read("model.weights.h5")
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise ImportProblem(problems=[Problem(f"cannot read the archive: {e}", file=file)]) from None
    if not isinstance(config, dict):
        raise ImportProblem(problems=[Problem("config.json: expected a model config (a JSON object)", file=file)])
    return config, meta if isinstance(meta, dict) else {}, weights


def _json(z: zipfile.ZipFile, name: str, file: str) -> Any:
    info = z.getinfo(name)
    if info.file_size > MAX_JSON:
        raise ImportProblem(problems=[Problem(f"{name}: {info.file_size} bytes, more than a model config can be", file=file)])
    try:
        return json.loads(z.read(name).decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise ImportProblem(problems=[Problem(f"{name}: not valid JSON: {e}", file=file)]) from None
    except RecursionError:
        raise ImportProblem(problems=[Problem(f"{name}: nested too deeply to be a model config", file=file)]) from None


def _flat_outputs(v: Any) -> list[tuple[str, int, int]]:
    """`output_layers` / `input_layers`: [name, node, index] or a nested list of them."""
    if isinstance(v, list) and len(v) == 3 and isinstance(v[0], str) and isinstance(v[1], int):
        return [(v[0], v[1], v[2])]
    if isinstance(v, list):
        return [t for x in v for t in _flat_outputs(x)]
    if isinstance(v, dict):           # dict outputs: Keras flattens them in sorted key order
        return [t for k in sorted(v) for t in _flat_outputs(v[k])]
    return []


class ModelConverter:
    """config.json → (spec inputs, spec layers, outputs) for a Functional or Sequential model."""

    def __init__(self, config: dict, file: str, *, fixed_shapes: bool = False):
        self.config, self.file, self.fixed_shapes = config, file, fixed_shapes
        self.refused: set[str] = set()                     # Keras layers refused (their problem reported)
        self.fixed: dict[str, list] = {}                   # each input's shape as Keras stored it
        self.conv = LayerConverter(file)
        self.inputs: dict[str, dict] = {}
        self.layers: list[dict] = []
        self.where: dict[str, str] = {}                    # spec layer name → config locator
        self.ports: dict[str, list[str]] = {}              # Keras layer → refs by tensor index
        self.nodes: dict[str, dict] = {}                   # Keras layer → its inbound node
        self.ops: dict[str, tuple[str, dict, dict]] = {}   # keras.ops node → (class, config, node)
        self.input_of: dict[str, tuple[str, int, int]] = {}  # layer → the Keras tensor it reads
        self.outputs: list[str] = []

    def err(self, where: str, message: str) -> None:
        self.conv.err(where, message)

    def run(self) -> None:
        cls = self.config.get("class_name")
        cfg = self.config.get("config")
        if cls in ("Functional", "Model") and isinstance(cfg, dict) and "layers" in cfg:
            self.functional(cfg)
        elif cls == "Sequential" and isinstance(cfg, dict):
            self.sequential(cfg)
        else:
            self.err("class_name", f"model class {cls}: rnnc imports Functional and Sequential models (a subclassed "
                                   "model's call() is Python code, which rnnc never runs; rebuild it as a Functional "
                                   "model)")
        if self.conv.problems:
            raise ImportProblem(problems=self.conv.problems)

    # -- inputs -----------------------------------------------------------------------
    def input_layer(self, cfg: dict, where: str, fallback_name: str = "input_layer") -> str | None:
        name = cfg.get("name") or fallback_name
        loc = f"{where} ({name}, InputLayer)"
        self.conv.options({k: v for k, v in cfg.items() if k not in ("batch_shape", "batch_input_shape", "dtype")},
                          {}, loc, {}, set())
        shape = cfg.get("batch_shape", cfg.get("batch_input_shape"))
        dtype = cfg.get("dtype", "float32")
        dtype = dtype.get("config", {}).get("name") if isinstance(dtype, dict) else dtype
        if not isinstance(shape, list) or not shape:
            self.err(loc, f"expected a batch_shape list, got {shape!r}")
            return None
        if dtype not in SPEC_DTYPES:
            self.err(loc, f"input dtype {dtype!r} is not supported: expected one of {', '.join(SPEC_DTYPES)}")
            return None
        dims: list[int | str] = []
        for i, d in enumerate(shape):
            if d is None:
                dims.append("batch" if i == 0 else ("time" if i == 1 else f"{name}_dim{i}"))
            else:
                dims.append(int(d))
        self.inputs[name] = {"shape": dims, **({"dtype": dtype} if dtype != "float32" else {})}
        self.ports[name] = [name]
        return name

    def _symbolic_shapes(self) -> None:
        """A Sequential model runs on any batch and length whatever batch_shape it stored
        (built by its first call, it stores that call's shape; Sequential.call does not check
        it, unlike a Functional model's __call__): batch and time are imported symbolic, unless
        --fixed-shapes, a stateful layer (it needs its batch) or an unrolled one (it needs its
        length). Time is axis 1 of a rank-3+ input, or of a rank-2 integer / bool one (token
        ids, a mask)."""
        self.fixed = {n: list(d["shape"]) for n, d in self.inputs.items()}
        if self.fixed_shapes:
            return
        def flag(key: str) -> bool:
            return any(l.get(key) or (l.get("layer") or {}).get(key) for l in self.layers)
        stateful, unrolled = flag("stateful"), flag("unroll")
        for decl in self.inputs.values():
            dims = decl["shape"]
            if not stateful and isinstance(dims[0], int):
                dims[0] = "batch"
            timed = len(dims) >= 3 or (len(dims) == 2 and decl.get("dtype", "float32") != "float32")
            if timed and not unrolled and isinstance(dims[1], int):
                dims[1] = "time"
        changed = [n for n in self.inputs if self.inputs[n]["shape"] != self.fixed[n]]
        if changed:
            self.conv.notes.append(
                "batch and time imported as symbolic dims (Keras runs any batch and length): "
                + ", ".join(f"{n} {self.fixed[n]} -> {self.inputs[n]['shape']}" for n in changed)
                + "; pass --fixed-shapes to keep Keras's stored shapes")

    def _distinct_time_dims(self) -> None:
        """Keras's None time dims are independent per input: name them apart."""
        timed = [n for n, d in self.inputs.items() if len(d["shape"]) > 1 and d["shape"][1] == "time"]
        for n in timed[1:]:
            self.inputs[n]["shape"][1] = f"{n}_time"

    def _tokens_as_ints(self, consumers: dict[str, list[str]]) -> None:
        """A float32 input read only by Embeddings holds token ids (Keras casts them): int32."""
        kinds = {l["name"]: l["type"] for l in self.layers}
        for name, decl in self.inputs.items():
            users = consumers.get(name, [])
            if "dtype" not in decl and users and all(kinds.get(u) == "Embedding" for u in users):
                decl["dtype"] = "int32"
                self.conv.notes.append(f"input {name}: float32 in Keras, read only by Embedding: imported as int32 "
                                       "token ids")

    # -- Sequential -----------------------------------------------------------------
    def sequential(self, cfg: dict) -> None:
        entries = cfg.get("layers") or []
        first = 0
        if entries and entries[0].get("class_name") == "InputLayer":
            inp = self.input_layer(entries[0].get("config") or {}, "config.layers[0]")
            first = 1
        else:
            shape = cfg.get("build_input_shape")
            if shape is None:
                self.err("config", "the Sequential model was never built (no input shape): build or call it once "
                                   "before saving")
                return
            dtype = "int32" if entries and entries[0].get("class_name") == "Embedding" else "float32"
            inp = self.input_layer({"batch_shape": shape, "dtype": dtype, "name": "input_layer"}, "config")
        for i, e in enumerate(entries[first:], start=first):
            spec = self.conv.layer(e, f"config.layers[{i}]")
            if spec is not None:
                self.layers.append(spec)
                self.where[spec["name"]] = f"config.layers[{i}] ({spec['name']}, {spec['type']})"
        if not self.layers:
            if not self.conv.problems:
                self.err("config.layers", "the model has no layers")
            return
        self.outputs = ports(self.layers[-1])
        if inp is not None:
            self._tokens_as_ints({inp: [self.layers[0]["name"]]})
        self._symbolic_shapes()

    # -- Functional -------------------------------------------------------------------
    def functional(self, cfg: dict) -> None:
        entries = cfg.get("layers") or []
        order = [_flat_outputs(cfg.get("input_layers"))]
        for i, e in enumerate(entries):
            where = f"config.layers[{i}]"
            name = e.get("name") or (e.get("config") or {}).get("name")
            if e.get("class_name") == "InputLayer":
                self.input_layer(e.get("config") or {}, where, name)
                continue
            nodes = e.get("inbound_nodes") or []
            if str(e.get("module", "")).startswith("keras.src.ops"):
                if len(nodes) == 1:
                    self.ops[name] = (e.get("class_name"), e.get("config") or {}, nodes[0])
                continue
            spec = self.conv.layer(e, where)
            if spec is None:
                self.refused.add(name)
                continue
            loc = f"{where} ({name}, {e.get('class_name')})"
            if len(nodes) != 1:
                self.err(loc, f"the layer is called {len(nodes)} times: rnnc gives each call its own layer (and "
                              "weights); call each layer once" if nodes else "the layer is not connected")
                self.refused.add(name)
                continue
            self.nodes[name] = nodes[0]
            self.where[name] = loc
            self.ports[name] = ports(spec)
            self.layers.append(spec)
        # inputs in the model's order (input_layers), as Keras takes them
        ordered = [n for n, _, _ in order[0] if n in self.inputs]
        self.inputs = {n: self.inputs[n] for n in ordered + [n for n in self.inputs if n not in ordered]}
        self._distinct_time_dims()
        consumers: dict[str, list[str]] = {}
        for spec in self.layers:
            self.connect(spec, consumers)
        self.outputs = [r for t in _flat_outputs(cfg.get("output_layers")) if (r := self.ref(t, "config.output_layers"))]
        self._tokens_as_ints(consumers)
        self.fixed = {n: list(d["shape"]) for n, d in self.inputs.items()}   # Keras checks them: kept
        self._toposort()
        self._drop_implicit_inputs()

    def mask_facts(self) -> MaskFacts:
        return MaskFacts(self.file, tuple((l["name"], l["type"]) for l in self.layers), self.nodes, self.ops,
                         self.where, self.input_of, tuple(self.inputs))

    def _toposort(self) -> None:
        """Keep Keras's order, moving a layer after the layers it reads (a spec refers back only)."""
        names = {l["name"] for l in self.layers}

        def deps(l: dict) -> set[str]:
            refs = l.get("input", [])
            refs = [refs] if isinstance(refs, str) else list(refs)
            return {r.partition(".")[0] for r in refs + list(l.get("initial_state", []))} & names

        g = nx.DiGraph()
        index = {l["name"]: i for i, l in enumerate(self.layers)}
        g.add_nodes_from(index)
        g.add_edges_from((d, l["name"]) for l in self.layers for d in deps(l))
        try:
            order = list(nx.lexicographical_topological_sort(g, key=index.__getitem__))
        except nx.NetworkXUnfeasible:
            cycle = [u for u, _ in nx.find_cycle(g)]
            self.err("config.layers", f"the layers form a cycle: {' -> '.join(cycle + cycle[:1])}")
            return
        by_name = {l["name"]: l for l in self.layers}
        self.layers = [by_name[n] for n in order]

    def ref(self, t: tuple[str, int, int], loc: str) -> str | None:
        """A Keras tensor → an rnnc reference."""
        name, _, index = t
        if name in self.refused:
            return None   # one problem, one message: the refused layer's own
        if name in self.ops:
            self.err(loc, f"operation {self.ops[name][0]} ({name}, a keras.ops call) feeds a layer: rnnc imports "
                          "layers only (keras.ops nodes are accepted only where they compute masks)")
            self.refused.add(name)
            return None
        refs = self.ports.get(name)
        if refs is None:
            if name not in self.where and name not in self.inputs:
                self.err(loc, f"unknown tensor source {name!r}")
                self.refused.add(name)
            return None   # its own problem is already reported
        if index >= len(refs):
            self.err(loc, f"output {index} of {name!r}: the layer has {len(refs)} output(s)")
            return None
        return refs[index]

    def connect(self, spec: dict, consumers: dict[str, list[str]]) -> None:
        name = spec["name"]
        loc = self.where[name]
        node = self.nodes[name]
        args, kwargs = node.get("args") or [], node.get("kwargs") or {}
        if spec["type"] in ATTENTION_KINDS:     # their call arguments → inputs and keys
            args, kwargs, why = attention_call(spec, args, kwargs)
            if why:
                self.err(loc, why)
                return
            self.ports[name] = ports(spec)      # return_attention_scores: the scores are output 1
        if not args:
            self.err(loc, "the layer's call has no input")
            return
        main = _tensors(args[0])
        takes_state = spec["type"] in (*RECURRENT, "Bidirectional")
        init = _tensors(args[1]) if len(args) > 1 and takes_state else []
        if len(args) > (2 if takes_state else 1):
            self.err(loc, f"the layer is called with {len(args)} positional arguments: expected its input"
                          + (" and initial_state" if takes_state else ""))
        mask = None
        for k, v in kwargs.items():
            if k == "training":
                continue
            if k == "mask":
                mask = self.explicit_mask(v, spec, loc)
                if mask is False:
                    return
                continue
            if k == "initial_state" and takes_state:
                init = _tensors(v)
            elif v is not None:
                self.err(loc, f"the layer is called with {k}=...: not supported by rnnc")
        if main:
            self.input_of[name] = main[0]
        refs = [self.ref(t, loc) for t in main]
        states = [self.ref(t, loc) for t in init]
        if None in refs or None in states:
            return
        for t in main:
            consumers.setdefault(t[0], []).append(name)
        spec["input"] = refs[0] if len(refs) == 1 else refs
        if states:
            spec["initial_state"] = states
        if mask:
            spec["mask"] = mask
        # keep key order readable: type, name, input, then the options
        reordered = {k: spec[k] for k in ("type", "name", "input") if k in spec}
        reordered.update({k: v for k, v in spec.items() if k not in reordered})
        spec.clear()
        spec.update(reordered)

    def explicit_mask(self, v: Any, spec: dict, loc: str) -> str | None | bool:
        """A layer's `mask=` that is a model input (Keras's `layer(x, mask=m)` with m a bool
        Input) → the spec's `mask:` key. A mask Keras computed (keras.ops nodes) is no key:
        check_masks compares it with the one rnnc derives. None: no key; False: refused."""
        ts = _tensors(v)
        if len(ts) != 1 or ts[0][0] not in self.inputs:
            return None
        name = ts[0][0]
        if self.inputs[name].get("dtype") != "bool":
            self.err(loc, f"the layer is called with mask={name}, a {self.inputs[name].get('dtype', 'float32')} "
                          "input: expected a bool mask input (keras.Input(..., dtype='bool'))")
            return False
        if spec["type"] not in MASK_KEY_LAYERS and "mask" not in S.LAYER_KEYS.get(spec["type"], {}) \
                and not _reads_mask(spec["type"]):
            self.err(loc, f"the layer is called with mask={name}: rnnc takes an explicit mask only on a layer "
                          "that reads one (recurrent layers, Bidirectional, BatchNormalization, ...)")
            return False
        return name

    def drop_redundant_masks(self, graph) -> bool:
        """Keras records the mask it passed on in each recurrent layer's call (`mask=` in its
        inbound node) as if given: a `mask:` key the layer would get from its input anyway is
        dropped. True if any was."""
        dropped = False
        for spec in self.layers:
            name = spec.get("mask")
            layer = graph.layers.get(spec["name"])
            if name is None or layer is None:
                continue
            src = layer.inputs[0]
            carried = None if src.port == "input" else graph.layers[src.layer].mask_out
            if carried is not None and carried.layer == name and carried.port == "input":
                del spec["mask"]
                dropped = True
        return dropped

    def _drop_implicit_inputs(self) -> None:
        """`input:` only where a layer does not simply take the previous one's main output."""
        prev = next(iter(self.inputs)) if len(self.inputs) == 1 else None
        for spec in self.layers:
            if spec.get("input") == prev and prev is not None:
                del spec["input"]
            p = ports(spec)
            prev = p[0] if p[0] == spec["name"] else None


def import_keras(path: str | Path, *, spec_file: str = "model.yaml", fixed_shapes: bool = False) -> Imported:
    """Read a .keras file into a checked (compiled in memory) spec and weights. Batch and
    time are symbolic unless `fixed_shapes` (ModelConverter._symbolic_shapes)."""
    file = str(path)
    config, meta, h5bytes = read_archive(path)
    mc = ModelConverter(config, file, fixed_shapes=fixed_shapes)
    try:
        mc.run()
    except (AttributeError, TypeError, KeyError, IndexError, ValueError, RecursionError) as e:
        # the converter reads a well-formed Keras config; anything else is the file's fault
        raise ImportProblem(problems=[Problem(
            f"config.json does not have the structure of a Keras 3 model config ({type(e).__name__}: {e}); "
            "save the model with model.save('model.keras')", file=file)]) from None
    model_name = (config.get("config") or {}).get("name") or Path(path).stem
    version = meta.get("keras_version", "?")
    header = f"imported by `rnnc import keras` from {Path(path).name} (Keras {version})"
    text = render_spec(str(model_name), mc.inputs, mc.layers, mc.outputs, header=header)
    try:
        graph = build_graph(load_spec_text(text, spec_file))
    except SpecError as e:
        symbolic = {n: d for n, d in mc.inputs.items() if d["shape"] != mc.fixed[n]}
        if not symbolic:
            raise _spec_problems(e, mc, file) from None
        # a layer needs a size Keras stored (e.g. a fixed length): keep Keras's shapes
        for n in symbolic:
            mc.inputs[n]["shape"] = list(mc.fixed[n])
        mc.conv.notes[:] = [n for n in mc.conv.notes if not n.startswith("batch and time imported as symbolic")]
        text = render_spec(str(model_name), mc.inputs, mc.layers, mc.outputs, header=header)
        try:
            graph = build_graph(load_spec_text(text, spec_file))
        except SpecError as e2:
            raise _spec_problems(e2, mc, file) from None
        mc.conv.notes.append(f"input shapes kept as Keras stored them: with symbolic batch and time, "
                             f"{e.problems[0].message}")
    if mc.drop_redundant_masks(graph):
        text = render_spec(str(model_name), mc.inputs, mc.layers, mc.outputs, header=header)
        graph = build_graph(load_spec_text(text, spec_file))
    with open_h5(h5bytes, f"{file}:model.weights.h5") as h5:
        weights = weights_from_h5(h5, graph, file=f"{file}:model.weights.h5", bn_flags=mc.conv.bn_flags)
    try:
        compiled = check_spec_text(text, weights, spec_file)
    except SpecError as e:
        raise _spec_problems(e, mc, file) from None
    problems = check_masks(mc.mask_facts(), compiled.graph)
    if problems:
        raise ImportProblem(problems=problems)
    return Imported(text, weights, compiled, list(mc.conv.notes), file)


def _spec_problems(e: SpecError, mc: ModelConverter, file: str) -> ImportProblem:
    """rnnc's own spec errors, pointed back at the Keras config."""
    out = []
    for p in e.problems:
        where = p.path or ""
        if where.startswith("layers["):
            i = int(where[len("layers["):where.index("]")])
            if i < len(mc.layers):
                where = f"{mc.where.get(mc.layers[i]['name'], where)} (spec {p.path})"
        out.append(Problem(f"rnnc cannot compile this: {p.message}", file=file, path=where))
    return ImportProblem(problems=out)


def bn_flags_of(config: dict) -> dict[str, tuple[bool, bool]]:
    """BatchNormalization (center, scale) by layer name, from a model config."""
    out = {}
    for e in (config.get("config") or {}).get("layers") or []:
        if e.get("class_name") == "BatchNormalization":
            c = e.get("config") or {}
            out[c.get("name") or e.get("name")] = (bool(c.get("center", True)), bool(c.get("scale", True)))
    return out


def keras_weights_for_graph(path: str | Path, graph) -> dict:
    """A Keras 3 `.weights.h5` (model.save_weights) or the weights inside a `.keras` file,
    mapped onto a spec's graph by layer name (keys `<layer>/<param>`)."""
    p = Path(path)
    if not p.is_file():
        raise ImportProblem(problems=[Problem("file not found", file=str(p))])
    if zipfile.is_zipfile(p):
        config, _, h5bytes = read_archive(p)
        with open_h5(h5bytes, f"{p}:model.weights.h5") as h5:
            return weights_from_h5(h5, graph, file=f"{p}:model.weights.h5", bn_flags=bn_flags_of(config))
    with open_h5(p, str(p)) as h5:
        return weights_from_h5(h5, graph, file=str(p))


def import_keras_weights(path: str | Path, spec_path: str | Path) -> Imported:
    """`rnnc import keras MODEL.weights.h5 --spec SPEC.yaml`: the spec as written, with the
    Keras weights mapped onto it (checked by compiling in memory)."""
    from ..pipeline import compile_spec  # lazy: onnx (the CLI's parser loads this module)

    spec = load_spec(spec_path)
    weights = keras_weights_for_graph(path, build_graph(spec))
    compiled = compile_spec(spec, weights=weights)
    text = Path(spec_path).read_text(encoding="utf-8")
    if not any(line.startswith("rnnc:") for line in text.splitlines()):
        import yaml  # a JSON or flow-style spec: written again as block YAML

        text = yaml.safe_dump({k: v for k, v in spec.source.data.items() if k != "weights"}, sort_keys=False)
    return Imported(text, weights, compiled, [], str(path))
