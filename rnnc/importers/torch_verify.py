"""`rnnc compile --weights-from torch --verify`: PyTorch's own modules on the user's tensors.

A state_dict carries no architecture, so the equivalent PyTorch computation is rebuilt from
the spec, where the spec is a plain stack (one input, each layer reading the previous one, one
output, no masks, states or go_backwards): nn.Embedding, nn.LSTM / nn.GRU / nn.RNN (several
stacked cells of one kind and size become one module with num_layers), bidirectional modules,
F.linear with the Dense activation, dropout as identity, BatchNormalization from the running
statistics. The modules load the state_dict's own tensors under the same naming rules as the
mapping (rnnc/importers/torch_state.py), so the gate permutations, transposes and bias sums
of the mapping are what is checked. Other specs: "not available", with the reason."""
from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import numpy as np

from ..ir.graph import Graph, Layer
from ..ir.types import Ref
from .torch_state import load_state_dict, module_groups
from .verify import Report, VerifyUnavailable, compare_outputs, random_feeds


def _acts(F: Any, torch: Any) -> dict[str, Callable]:
    return {"linear": lambda x: x, "tanh": torch.tanh, "sigmoid": torch.sigmoid, "relu": F.relu,
            "softmax": lambda x: F.softmax(x, dim=-1), "elu": F.elu, "selu": F.selu, "softplus": F.softplus,
            "softsign": F.softsign, "silu": F.silu, "gelu": F.gelu, "hard_sigmoid": lambda x: F.relu6(x + 3) / 6}


class _Builder:
    def __init__(self, sd: dict[str, np.ndarray], torch: Any):
        import torch.nn.functional as F

        self.torch, self.F, self.nn = torch, F, torch.nn
        self.sd = sd
        self.groups = module_groups(sd, "", [])
        self.acts = _acts(F, torch)

    def t(self, group: str, param: str) -> Any:
        key = self.groups.get(group, {}).get(param)
        if key is None:
            raise VerifyUnavailable(f"no {group}.{param} in the state_dict")
        return self.torch.from_numpy(np.asarray(self.sd[key], dtype=np.float32))

    def act(self, name: str) -> Callable:
        if name not in self.acts:
            raise VerifyUnavailable(f"activation {name} has no PyTorch counterpart here")
        return self.acts[name]

    def step(self, layer: Layer) -> Callable:
        F, k, n = self.F, layer.kind, layer.name
        if layer.mask_in is not None or (k == "Embedding" and layer.config["mask_zero"]):
            raise VerifyUnavailable(f"layer {n!r} uses a mask (PyTorch modules take no masks)")
        if k == "Embedding":
            w = self.t(n, "weight")
            return lambda x: F.embedding(x.long(), w)
        if k == "Dense":
            w, b = self.t(n, "weight"), (self.t(n, "bias") if "bias" in layer.params else None)
            act = self.act(layer.config["activation"])
            return lambda x: act(F.linear(x, w, b))
        if k == "Dropout":
            return lambda x: x
        if k == "Activation":
            return self.act(layer.config["activation"])
        if k == "BatchNormalization":
            rank = len(layer.outputs["output"].dims)
            if layer.config["axis"] % rank != rank - 1:
                raise VerifyUnavailable(f"layer {n!r}: BatchNormalization on an axis other than the last")
            g, b, m, v = (self.t(n, p) for p in ("weight", "bias", "running_mean", "running_var"))
            eps = layer.config["epsilon"]
            return lambda x: (x - m) / self.torch.sqrt(v + eps) * g + b
        if k == "Bidirectional":
            return self.recurrent(layer, layer.sublayers[0], bidirectional=True)
        if layer.cells:
            return self.recurrent(layer, layer, bidirectional=False)
        raise VerifyUnavailable(f"layer {n!r} ({k}) has no PyTorch counterpart here")

    def recurrent(self, outer: Layer, layer: Layer, *, bidirectional: bool) -> Callable:
        cfg, cells = layer.config, layer.cells
        n = outer.name
        if cfg.get("go_backwards") or cfg.get("return_state") or cfg.get("stateful") or outer.initial_state:
            raise VerifyUnavailable(f"layer {n!r}: go_backwards, return_state, stateful or initial_state")
        if len({(c.kind, c.units) for c in cells}) != 1:
            raise VerifyUnavailable(f"layer {n!r}: stacked cells of different kinds or sizes (one PyTorch module "
                                    "has one kind and size)")
        merge = outer.config.get("merge_mode", "concat") if bidirectional else None
        if bidirectional and merge is None:
            raise VerifyUnavailable(f"layer {n!r}: merge_mode null")
        group, index = n, None
        if not any(p.startswith("weight_ih_l") for p in self.groups.get(n, {})):
            m = re.fullmatch(r"(.+)_l(\d+)", n)
            if not m:
                raise VerifyUnavailable(f"no recurrent module {n!r} in the state_dict")
            group, index = m.group(1), int(m.group(2))
        c = cells[0]
        kw: dict[str, Any] = {"num_layers": len(cells), "bias": "bias" in c.params, "batch_first": True,
                              "bidirectional": bidirectional}
        if c.kind == "SimpleRNN":
            kw["nonlinearity"] = c.config["activation"]
        module = {"LSTM": self.nn.LSTM, "GRU": self.nn.GRU, "SimpleRNN": self.nn.RNN}[c.kind](c.input_size, c.units, **kw)
        state = {}
        for name in module.state_dict():
            mm = re.fullmatch(r"(\w+)_l(\d+)(_reverse)?", name)
            j = int(mm.group(2)) if index is None else index
            state[name] = self.t(group, f"{mm.group(1)}_l{j}{mm.group(3) or ''}")
        module.load_state_dict(state)
        module.eval()
        seqs, u = cfg["return_sequences"], c.units

        def run(x: Any) -> Any:
            y, _ = module(x)                                   # [B, T, dirs * u]
            if not bidirectional:
                return y if seqs else y[:, -1]
            f, b = (y[..., :u], y[..., u:]) if seqs else (y[:, -1, :u], y[:, 0, u:])
            return {"concat": lambda: self.torch.cat([f, b], -1), "sum": lambda: f + b,
                    "mul": lambda: f * b, "ave": lambda: (f + b) / 2}[merge]()
        return run


def _plan(graph: Graph) -> tuple[str, list[Layer]]:
    if len(graph.inputs) != 1:
        raise VerifyUnavailable("the spec has several inputs")
    (inp,) = graph.inputs
    layers = list(graph.layers.values())
    prev = Ref(inp, "input")
    for layer in layers:
        if layer.inputs != (prev,):
            raise VerifyUnavailable(f"layer {layer.name!r} does not simply read the previous layer")
        prev = Ref(layer.name, "output")
    if [o.ref for o in graph.outputs] != [prev]:
        raise VerifyUnavailable("the outputs are not just the last layer's output")
    return inp, layers


def verify_torch(path: str, compiled: Any, *, batch: int = 3, time: int = 7, seed: int = 0) -> Report:
    try:
        import torch
    except ImportError:
        raise VerifyUnavailable("PyTorch is not installed") from None
    from ..runtime import Session  # lazy: onnxruntime

    graph = compiled.graph
    inp, layers = _plan(graph)
    b = _Builder(load_state_dict(path), torch)
    steps = [b.step(layer) for layer in layers]
    feeds, sizes = random_feeds(graph, batch=batch, time=time, seed=seed)
    with torch.no_grad():
        x = torch.from_numpy(feeds[inp])
        for s in steps:
            x = s(x)
    sess = Session(compiled, providers="cpu")
    got = sess.run(feeds)
    report = Report(f"PyTorch {torch.__version__}", sizes)
    names = list(sess.output_names)
    compare_outputs(names, [got[n] for n in names], [x.numpy()], report)
    return report
