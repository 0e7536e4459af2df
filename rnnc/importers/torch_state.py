"""A PyTorch `state_dict` (`torch.save(model.state_dict(), "model.pt")`) mapped onto a spec.

Loading: `torch.load(path, weights_only=True, map_location="cpu")`: PyTorch's restricted
unpickler, which builds tensors and plain containers only and refuses anything else, so no
pickled code is ever run. The result must be a flat dict of tensors.

Names: a spec layer takes the parameters of the torch module whose prefix is the layer's name,
with the prefix's dots written as underscores (`encoder.lstm.weight_ih_l0` → spec layer
`encoder_lstm`; an `nn.Sequential`'s `0.weight` → layer `"0"`).

| torch module | spec layer | mapping |
|---|---|---|
| nn.Embedding | Embedding | `weight` → `embeddings` |
| nn.Linear | Dense | `weight` [out, in] → `kernel` [in, out]; `bias` |
| nn.BatchNorm1d | BatchNormalization | `weight, bias, running_mean, running_var` → `gamma, beta, moving_mean, moving_variance` (set `epsilon: 1.0e-05`, PyTorch's default) |
| nn.LSTM | LSTM, or RNN with LSTMCells | `weight_ih_l{k}` [4u, in] → `kernel` [in, 4u], gates i f g o → i f c o; `weight_hh_l{k}` → `recurrent_kernel`; `bias_ih_l{k} + bias_hh_l{k}` → `bias` (Keras has one bias) |
| nn.GRU | GRU / GRUCell with `reset_after: true` | as LSTM with gates r z n → z r h; `bias` [2, 3u] = [`bias_ih`, `bias_hh`] (PyTorch's GRU is Keras's reset_after form) |
| nn.RNN | SimpleRNN / SimpleRNNCell | `kernel` = `weight_ih`ᵀ, `recurrent_kernel` = `weight_hh`ᵀ, `bias` = `bias_ih + bias_hh`; `activation` tanh or relu as `nonlinearity` |

`num_layers = N`: the module is either one spec `RNN` whose `cell` is a list of N cells (cell
k takes `_l{k}`), or N spec layers named `<name>_l0` ... `<name>_l{N-1}` (layer k takes
`_l{k}`). `bidirectional=True`: a spec `Bidirectional` (`_reverse` → the backward half); a
multi-layer bidirectional module is N Bidirectional layers `<name>_l{k}` with
`return_sequences: true` and `merge_mode: concat` (each torch layer reads both directions of
the one below). `bias=False` ↔ `use_bias: false`. `batch_first` is not in a state dict: rnnc
reads (batch, time, features), so feed a `batch_first=False` module's data transposed."""
from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np

from ..cells.gates import permute_gates
from ..errors import Problem, WeightsError
from ..ir.graph import Cell, Graph, Layer

GATES = {"LSTM": 4, "GRU": 3, "SimpleRNN": 1}
TORCH_CLASS = {"LSTM": "nn.LSTM", "GRU": "nn.GRU", "SimpleRNN": "nn.RNN"}
TORCH_LAYOUT = {"LSTM": "torch_lstm", "GRU": "torch_gru"}
KERAS_LAYOUT = {"LSTM": "keras_lstm", "GRU": "keras_gru"}
IGNORED = ("num_batches_tracked",)


def load_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """torch.load(weights_only=True) → {key: float array}; anything else → WeightsError."""
    p = Path(path)
    file = str(p)
    if not p.is_file():
        raise WeightsError(problems=[Problem("weights file not found", file=file)])
    try:
        import torch
    except ImportError:
        raise WeightsError(problems=[Problem("reading a PyTorch state_dict needs PyTorch (pip install torch)",
                                             file=file)]) from None
    try:
        with warnings.catch_warnings():   # torch's own warnings would leak into rnnc's output
            warnings.simplefilter("ignore")
            sd = torch.load(str(p), weights_only=True, map_location="cpu")
    except Exception as e:  # noqa: BLE001 - UnpicklingError, RuntimeError, EOFError, ...
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise WeightsError(problems=[Problem(
            "not a plain PyTorch state_dict: torch.load(weights_only=True) refused it "
            f"({type(e).__name__}: {first}). Save the weights with torch.save(model.state_dict(), path); "
            "rnnc never unpickles arbitrary objects (a whole pickled model would run code)", file=file)]) from None
    if not isinstance(sd, dict):
        raise WeightsError(problems=[Problem(f"expected a state_dict (a dict of tensors), got {type(sd).__name__}",
                                             file=file)])
    bad = [k for k, v in sd.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        nested = [k for k in bad if isinstance(sd[k], dict)]
        hint = (f" ({', '.join(map(str, nested))} hold dicts: a training checkpoint? save model.state_dict() itself)"
                if nested else "")
        raise WeightsError(problems=[Problem(f"expected a dict of tensors; {len(bad)} entr(y/ies) are not tensors: "
                                             f"{', '.join(map(str, bad[:8]))}{hint}", file=file)])
    odd = [f"{k} ({_odd(v)})" for k, v in sd.items() if _odd(v)]
    if odd:
        raise WeightsError(problems=[Problem(f"expected dense real tensors with values, got {', '.join(odd[:8])}: "
                                             "save the float model's state_dict", file=file)])
    return {k: v.detach().to(torch.float32).numpy() if v.is_floating_point() else v.numpy() for k, v in sd.items()}


def _odd(t) -> str | None:
    """What keeps a tensor from being plain weights: sparse, meta (no values), quantized, complex."""
    import torch
    if t.layout != torch.strided:
        return "sparse"
    if t.device.type == "meta":
        return "meta: no values"
    if t.is_quantized:
        return "quantized"
    return f"{t.dtype}" if t.is_complex() else None


def _group_of(key: str) -> str:
    """The spec layer a state_dict key belongs to: its module prefix, dots as underscores."""
    return key.rpartition(".")[0].replace(".", "_")


def module_groups(sd: dict[str, np.ndarray], file: str, problems: list[Problem]) -> dict[str, dict[str, str]]:
    """Normalized module prefix → {param name: full key}."""
    out: dict[str, dict[str, str]] = {}
    origin: dict[str, str] = {}
    for key in sd:
        prefix, _, param = key.rpartition(".")
        norm = _group_of(key)
        if norm in origin and origin[norm] != prefix:
            problems.append(Problem(f"modules {origin[norm]!r} and {prefix!r} both map to spec layer {norm!r}", file=file))
        origin[norm] = prefix
        out.setdefault(norm, {})[param] = key
    return out


class _Mapper:
    def __init__(self, sd: dict[str, np.ndarray], file: str):
        self.sd, self.file = sd, file
        self.problems: list[Problem] = []
        self.groups = module_groups(sd, file, self.problems)
        self.used: set[str] = set()
        self.out: dict[str, np.ndarray] = {}
        self.bidirectional_groups: set[str] = set()   # torch modules a spec Bidirectional maps
        self.failed_groups: set[str] = set()          # torch modules with a reported problem

    def bare_module(self, graph: Graph) -> None:
        """A bare module's state_dict (`torch.save(lstm.state_dict())`: keys without a prefix)
        fits a spec with one layer of parameters: that layer takes it."""
        if "" not in self.groups:
            return
        owners = [l.name for l in graph.layers.values() if l.params]
        if len(owners) == 1 and owners[0] not in self.groups:
            self.groups[owners[0]] = self.groups.pop("")
        else:
            keys = ", ".join(list(self.groups[""].values())[:4])
            self.err(f"state_dict keys without a module prefix ({keys}, ...): a bare module's state_dict fits a "
                     f"spec with one layer of parameters, and this spec has {len(owners)} ("
                     f"{', '.join(owners)}); save the parent module's state_dict, or prefix the keys with the "
                     "spec layer's name (`{f'lstm.{k}': v for k, v in sd.items()}`)")
            self.failed_groups.add("")

    def err(self, msg: str) -> None:
        self.problems.append(Problem(msg, file=self.file))

    def get(self, group: str, param: str) -> np.ndarray | None:
        key = self.groups.get(group, {}).get(param)
        if key is None:
            return None
        self.used.add(key)
        return self.sd[key]

    # -- layers -----------------------------------------------------------------------
    def layer(self, layer: Layer) -> None:
        name = layer.name
        if not layer.params:
            return
        if layer.kind == "Embedding":
            self.put(name, "embeddings", self.need(name, "weight", layer))
        elif layer.kind == "Dense":
            w = self.need(name, "weight", layer)
            self.put(name, "kernel", None if w is None else np.ascontiguousarray(w.T))
            self.bias_of(name, layer, "bias" in layer.params)
        elif layer.kind == "BatchNormalization":
            have = self.groups.get(name, {})
            if have and "running_mean" not in have and "running_var" not in have:
                self.err(f"layer {name!r} (BatchNormalization): {name} has no running_mean/running_var: "
                         "nn.BatchNorm1d(track_running_stats=False) normalizes with each batch's own statistics "
                         "at inference, which a Keras BatchNormalization (moving statistics) cannot reproduce")
                return
            (ch,) = layer.params["gamma"]
            for ours, theirs in (("gamma", "weight"), ("beta", "bias"), ("moving_mean", "running_mean"),
                                 ("moving_variance", "running_var")):
                if theirs in ("weight", "bias") and have and "weight" not in have and "bias" not in have:
                    # nn.BatchNorm1d(affine=False): no scale and shift, i.e. gamma 1 and beta 0
                    self.put(name, ours, np.full(ch, 1.0 if theirs == "weight" else 0.0, np.float32))
                    continue
                self.put(name, ours, self.need(name, theirs, layer))
            self.get(name, "num_batches_tracked")
        elif layer.kind == "Bidirectional":
            if len(layer.sublayers[0].cells) > 1:
                self.err(f"layer {name!r}: a Bidirectional of stacked cells runs each direction through its own "
                         "stack, but each layer of a multi-layer bidirectional PyTorch module reads both directions "
                         f"of the layer below: write it as Bidirectional layers {name}_l0, {name}_l1, ...")
                return
            group, index = self.resolve(layer)
            if group is None:
                return
            self.bidirectional_groups.add(group)
            for half, sub, suffix in (("forward", layer.sublayers[0], ""), ("backward", layer.sublayers[1], "_reverse")):
                if sub.config.get("go_backwards") != (half == "backward"):
                    self.err(f"layer {name!r}: its {half} half has go_backwards={sub.config.get('go_backwards')}; "
                             f"a PyTorch bidirectional module's {half} direction reads the sequence "
                             + ("from the end" if half == "backward" else "from the start"))
                    continue
                self.cells(f"{name}/{half}/", sub, group, index, suffix, where=f"layer {name!r} ({half} half)")
        elif layer.cells:
            if layer.config.get("go_backwards"):
                self.err(f"layer {name!r}: go_backwards=true has no PyTorch counterpart (flip the input instead)")
                return
            group, index = self.resolve(layer)
            if group is not None:
                self.cells(f"{name}/", layer, group, index, "")

    def need(self, group: str, param: str, layer: Layer) -> np.ndarray | None:
        a = self.get(group, param)
        if a is None:
            have = ", ".join(self.groups.get(group, {})) or "none"
            self.err(f"layer {layer.name!r} ({layer.kind}): missing {group}.{param} in the state_dict "
                     f"(parameters under {group!r}: {have})")
        return a

    def put(self, layer: str, param: str, a: np.ndarray | None) -> None:
        if a is not None:
            self.out[f"{layer}/{param}"] = a

    def bias_of(self, name: str, layer: Layer, wanted: bool) -> None:
        b = self.get(name, "bias")
        if wanted and b is None:
            self.err(f"layer {name!r}: the spec has a bias but {name}.bias is not in the state_dict "
                     "(bias=False in PyTorch: set use_bias: false)")
        elif not wanted and b is not None:
            self.err(f"layer {name!r}: the state_dict has {name}.bias but the spec says use_bias: false")
        elif b is not None:
            self.put(name, "bias", b)

    def resolve(self, layer: Layer) -> tuple[str | None, int | None]:
        """(torch group, torch layer index or None for "all, from 0")."""
        if any(k.startswith("weight_ih_l") for k in self.groups.get(layer.name, {})):
            return layer.name, None
        m = re.fullmatch(r"(.+)_l(\d+)", layer.name)
        if m and any(k.startswith("weight_ih_l") for k in self.groups.get(m.group(1), {})):
            n_cells = len(layer.sublayers[0].cells) if layer.sublayers else len(layer.cells)
            if n_cells != 1:
                self.err(f"layer {layer.name!r}: a layer named <module>_l{{k}} takes one PyTorch layer, so one cell; "
                         f"it has {n_cells}")
                return None, None
            return m.group(1), int(m.group(2))
        self.err(f"layer {layer.name!r} ({layer.kind}): no recurrent module {layer.name!r} in the state_dict "
                 f"(no {layer.name}.weight_ih_l0); modules there: {', '.join(sorted(self.groups)) or 'none'}")
        return None, None

    def cells(self, prefix: str, layer: Layer, group: str, index: int | None, suffix: str,
              where: str | None = None) -> None:
        for i, cell in enumerate(layer.cells):
            k = i if index is None else index
            at = (where or f"layer {layer.name!r}") + (f" cell {cell.prefix.strip('/')}" if cell.prefix else "")
            n = len(self.problems)
            self.cell(f"{prefix}{cell.prefix}", cell, group, k, suffix, at)
            if len(self.problems) > n:
                self.failed_groups.add(group)

    def cell(self, prefix: str, cell: Cell, group: str, k: int, suffix: str, where: str) -> None:
        tag = f"_l{k}{suffix}"
        if self.groups.get(group, {}).get(f"weight_hr{tag}"):
            self.get(group, f"weight_hr{tag}")
            self.err(f"{where}: {group}.weight_hr{tag}: LSTM projections (proj_size > 0) are not supported")
            return
        w_ih, w_hh = self.get(group, f"weight_ih{tag}"), self.get(group, f"weight_hh{tag}")
        if w_ih is None or w_hh is None:
            self.err(f"{where}: missing {group}.weight_ih{tag} / weight_hh{tag} in the state_dict "
                     f"(is the PyTorch module {'bidirectional' if suffix else 'deep enough'}?)")
            return
        kind, units = cell.kind, cell.units
        hidden = w_hh.shape[1]
        gates = w_hh.shape[0] // max(hidden, 1)
        if gates != GATES[kind]:
            found = {4: "nn.LSTM", 3: "nn.GRU", 1: "nn.RNN"}.get(gates, f"a module with {gates} gates")
            self.err(f"{where}: {group}{tag} looks like {found}, but the spec's cell is {kind} ({TORCH_CLASS[kind]})")
            return
        if hidden != units:
            self.err(f"{where}: {group}.weight_hh{tag} has hidden size {hidden}, the spec says units: {units}")
            return
        if w_ih.shape[1] != cell.input_size:
            self.err(f"{where}: {group}.weight_ih{tag} takes {w_ih.shape[1]} input features, the spec gives it "
                     f"{cell.input_size}")
            return
        act, rec = cell.config.get("activation"), cell.config.get("recurrent_activation")
        if kind in ("LSTM", "GRU") and (act != "tanh" or rec != "sigmoid"):
            self.err(f"{where}: {TORCH_CLASS[kind]} uses activation tanh and recurrent_activation sigmoid; the spec "
                     f"says {act} and {rec}")
            return
        if kind == "SimpleRNN" and act not in ("tanh", "relu"):
            self.err(f"{where}: nn.RNN's nonlinearity is tanh or relu; the spec says activation: {act}")
            return
        if kind == "GRU" and not cell.config.get("reset_after", True):
            self.err(f"{where}: PyTorch's nn.GRU applies the reset gate after the recurrent matmul "
                     "(n = tanh(W_in x + b_in + r * (W_hn h + b_hn))), which is Keras's reset_after=True: "
                     "set reset_after: true")
            return
        b_ih, b_hh = self.get(group, f"bias_ih{tag}"), self.get(group, f"bias_hh{tag}")
        use_bias = "bias" in cell.params
        if use_bias != (b_ih is not None and b_hh is not None):
            self.err(f"{where}: " + ("the spec has use_bias: true but the module has no biases (bias=False): set "
                                     "use_bias: false" if use_bias else
                                     "the module has biases but the spec says use_bias: false"))
            return
        perm = (lambda a: permute_gates(a, TORCH_LAYOUT[kind], KERAS_LAYOUT[kind], axis=-1)) \
            if kind in TORCH_LAYOUT else (lambda a: a)
        # torch W [G*u, in] (rows in torch gate order) → Keras kernel [in, G*u] (Keras order)
        self.out[f"{prefix}kernel"] = np.ascontiguousarray(perm(w_ih.T))
        self.out[f"{prefix}recurrent_kernel"] = np.ascontiguousarray(perm(w_hh.T))
        if use_bias:
            if kind == "GRU":   # reset_after: the input and recurrent biases stay apart, [2, 3u]
                self.out[f"{prefix}bias"] = np.stack([perm(b_ih), perm(b_hh)])
            else:               # one Keras bias: the two PyTorch biases are only ever added
                self.out[f"{prefix}bias"] = perm(b_ih + b_hh)


def torch_weights_for_graph(path: str | Path, graph: Graph) -> dict[str, np.ndarray]:
    """Map a PyTorch state_dict file onto `graph`'s parameters (keys `<layer>/<param>`)."""
    file = str(path)
    m = _Mapper(load_state_dict(path), file)
    m.bare_module(graph)
    for layer in graph.layers.values():
        m.layer(layer)
    unused = [k for k in m.sd if k not in m.used and k.rpartition(".")[2] not in IGNORED
              and _group_of(k) not in m.failed_groups]
    if unused:
        hint = (" (`_reverse` keys: wrap the spec layer in Bidirectional)"
                if any("_reverse" in k and _group_of(k) not in m.bidirectional_groups for k in unused) else "")
        m.err(f"{len(unused)} state_dict entr(y/ies) match no spec layer: {', '.join(unused)}{hint}")
    if m.problems:
        raise WeightsError(problems=m.problems)
    return m.out
