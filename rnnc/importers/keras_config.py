"""A Keras 3 layer config (`config.json` of a `.keras` file) → an rnnc spec layer mapping.

Each Keras option is either mapped to the spec key of the same name (written only where it
differs from rnnc's default), ignored because it only matters in training (initializers
silently; regularizers and constraints with a note), or required to have the one value that
rnnc reproduces (anything else is an error that names the layer, its place in the config and
the option). An option this table does not know is an error unless it is null or false."""
from __future__ import annotations

from typing import Any

from ..cells.builtin import CELL_TYPES
from ..cells.builtin import CELLS as CELL_DEFS
from ..errors import Problem
from ..ir.semantics import state_ports as ir_state_ports
from ..layers import LAYER_DEFS
from ..layers.attention import ATTENTION_KINDS
from ..layers.conv import keras_channels_last
from ..spec import schema as S

BUILT_IN = ("Embedding", "Masking", "LSTM", "GRU", "SimpleRNN", "RNN", "Bidirectional", "Dense",
            "BatchNormalization", "Dropout", "Activation", "Concatenate", "Add", "Subtract", "Multiply", "Average",
            "Maximum", "Minimum", "Dot", *S.CONV_LSTM_LAYERS)


def supported() -> tuple[str, ...]:
    """The Keras layer classes rnnc imports: the built-in ones and every kind defined in
    rnnc/layers/ (a LayerDef's keys are Keras's)."""
    return (*BUILT_IN, *LAYER_DEFS)
RECURRENT = ("LSTM", "GRU", "SimpleRNN", "RNN", *S.CONV_LSTM_LAYERS)
CELLS = ("LSTMCell", "GRUCell", "SimpleRNNCell")
IGNORED = {"name", "trainable", "seed", "build_config", "use_cudnn", "implementation", "lora_alpha",
           "momentum", "synchronized", "renorm_clipping", "renorm_momentum", "noise_shape"}

# option → (value rnnc reproduces, why another value cannot be)
REQUIRED: dict[str, tuple[Any, str]] = {
    "time_major": (False, "rnnc reads (batch, time, features); transpose the input instead"),
    "quantization_config": (None, "quantized layers are not supported; import the float model"),
    "lora_rank": (None, "LoRA layers are not supported; merge the LoRA weights into the kernel first"),
    "renorm": (False, "batch renormalization is not supported"),
    "sparse": (False, "sparse tensors are not supported"),
    "ragged": (False, "ragged tensors are not supported"),
    "optional": (False, "optional inputs are not supported"),
    "constants": (None, "RNN constants are not supported"),
}


class LayerConverter:
    """Converts one layer config at a time; collects problems and notes."""

    def __init__(self, file: str):
        self.file = file
        self.problems: list[Problem] = []
        self.notes: list[str] = []
        self.bn_flags: dict[str, tuple[bool, bool]] = {}

    def err(self, where: str, message: str) -> None:
        self.problems.append(Problem(message, file=self.file, path=where))

    # -- one layer ------------------------------------------------------------------
    def layer(self, entry: dict, where: str, *, inner: bool = False) -> dict | None:
        """A Keras layer entry ({class_name, config, ...}) → a spec mapping (without
        `input`), or None with the problem recorded."""
        cls = entry.get("class_name")
        cfg = entry.get("config") or {}
        name = cfg.get("name") if isinstance(cfg, dict) else None
        loc = f"{where} ({name}, {cls})"
        if cls not in supported() or not str(entry.get("module", "keras")).startswith("keras"):
            self.err(loc, f"layer type {cls} is not supported by rnnc: expected one of {', '.join(supported())}")
            return None
        if inner and cls not in S.RECURRENT_LAYERS:     # not ConvLSTM (rnnc's Bidirectional is over time only)
            self.err(loc, f"expected a recurrent layer ({', '.join(S.RECURRENT_LAYERS)}) inside Bidirectional, "
                          f"got {cls}")
            return None
        if not isinstance(name, str) or not name or "/" in name or "." in name:
            self.err(loc, f"layer name {name!r}: rnnc needs a non-empty name without '/' or '.'")
            return None
        out: dict[str, Any] = {"type": cls} if inner else {"type": cls, "name": name}
        keys = dict(S.LAYER_KEYS[cls])
        handled: set[str] = set()
        if cls in S.CONV_LSTM_LAYERS:
            for why in keras_channels_last(cfg):
                self.err(loc, why)
            if any(p.path == loc for p in self.problems):
                return None
        if cls in RECURRENT:
            if cls in S.CELL_OF_LAYER:
                keys.update(S.CELL_KEYS[S.CELL_OF_LAYER[cls]])
            if inner:
                # Keras's Bidirectional forces zero_output_for_mask = return_sequences on both
                # halves, whatever the layer says: rnnc's IR decides it the same way
                # (rnnc.ir.semantics.bidirectional_zero_output), so the key is not carried.
                handled.add("zero_output_for_mask")
        keys.pop("initial_state", None)
        keys.pop("lowering", None)
        keys.pop("mask", None)          # a call argument (the inbound node's mask=), not a config option
        ldef = LAYER_DEFS.get(cls)
        if ldef is not None:
            handled |= ldef.keras_ignore
            for why in (ldef.keras_check(cfg) if ldef.keras_check else []):
                self.err(loc, why)
            if self.problems and ldef.keras_check and any(p.path == loc for p in self.problems):
                return None
        if cls == "RNN":
            cell = self.cell(cfg.get("cell"), f"{where}.config.cell", loc)
            if cell is None:
                return None
            out["cell"] = cell
            handled.add("cell")
        if cls == "Bidirectional":
            if not self.bidirectional(cfg, where, loc, out):
                return None
            handled |= {"layer", "backward_layer"}
        if ldef is not None and ldef.wraps:
            if not self.wrapped(cfg, where, loc, out, name):
                return None
            handled.add("layer")
        if cls == "BatchNormalization":
            self.bn_flags[name] = (bool(cfg.get("center", True)), bool(cfg.get("scale", True)))
            handled |= {"center", "scale"}
            axis = cfg.get("axis", -1)
            if isinstance(axis, list):
                if len(axis) != 1:
                    self.err(loc, f"axis={axis}: rnnc normalizes over one axis")
                    return None
                cfg = {**cfg, "axis": axis[0]}
        if cls == "LayerNormalization" and isinstance(cfg.get("axis"), list) and len(cfg["axis"]) == 1:
            cfg = {**cfg, "axis": cfg["axis"][0]}   # Keras writes its built axis as a list: [-1] is -1
        self.options(cfg, keys, loc, out, handled)
        return out

    def bidirectional(self, cfg: dict, where: str, loc: str, out: dict) -> bool:
        fwd = self.layer(cfg.get("layer") or {}, f"{where}.config.layer", inner=True)
        bwd_entry = cfg.get("backward_layer")
        bwd = self.layer(bwd_entry, f"{where}.config.backward_layer", inner=True) if bwd_entry else None
        if fwd is None or (bwd_entry and bwd is None):
            return False
        out["layer"] = fwd
        # Keras 3 writes backward_layer even when it made it itself (a copy of `layer` with
        # go_backwards set to true): keep it only where it differs from that copy.
        if bwd is not None and _norm(bwd) != _norm({**fwd, "go_backwards": True}):
            out["backward_layer"] = bwd
        return True

    def wrapped(self, cfg: dict, where: str, loc: str, out: dict, name: str) -> bool:
        """A wrapper's layer (TimeDistributed): any layer rnnc imports but a recurrent one,
        written without its name (the spec names it `layer`; its weights are the wrapper's)."""
        entry = cfg.get("layer")
        cls = entry.get("class_name") if isinstance(entry, dict) else None
        if cls in (*RECURRENT, "Bidirectional"):
            self.err(loc, f"{out['type']} around a recurrent layer ({cls}) is not supported: the recurrent layer "
                          "already runs over time")
            return False
        inner = self.layer(entry if isinstance(entry, dict) else {}, f"{where}.config.layer")
        if inner is None:
            return False
        inner_name = inner.pop("name")
        if inner_name in self.bn_flags:   # its weights are found under the wrapper's name
            self.bn_flags[name] = self.bn_flags.pop(inner_name)
        out["layer"] = inner
        return True

    def cell(self, entry: Any, where: str, loc: str) -> dict | list | None:
        if not isinstance(entry, dict):
            self.err(loc, f"{where}: expected a cell config, got {type(entry).__name__}")
            return None
        cls = entry.get("class_name")
        cfg = entry.get("config") or {}
        if cls == "StackedRNNCells":
            cells = [self.cell(c, f"{where}.config.cells[{i}]", loc) for i, c in enumerate(cfg.get("cells") or [])]
            if not cells or any(c is None for c in cells):
                if not cells:
                    self.err(loc, f"{where}: StackedRNNCells without cells")
                return None
            self.options(cfg, {}, f"{loc} {where}", {}, {"cells"})
            return cells
        if cls not in CELLS:
            self.err(loc, f"{where}: cell class {cls} is not supported: expected one of {', '.join(CELLS)} "
                          "(rnnc imports no Python code; write a custom cell under `cells:` in a spec)")
            return None
        out: dict[str, Any] = {"type": cls}
        self.options(cfg, dict(S.CELL_KEYS[cls]), f"{loc} {where}", out, set())
        return out

    # -- options ----------------------------------------------------------------------
    def options(self, cfg: dict, keys: dict[str, S.Key], loc: str, out: dict, handled: set[str]) -> None:
        """Map, ignore or require each option of `cfg` (see the module docstring)."""
        for k in keys:                  # mapped keys first, in the spec's order (units first)
            if k in cfg and k not in handled:
                v = cfg[k]
                ok, normalized, expected = keys[k].check(v)
                if not ok:
                    hint = " (rnnc's activations)" if "activation" in k else ""
                    self.err(loc, f"{k}={_shown(v)} is not supported: expected {expected}{hint}")
                elif _differs(normalized, keys[k].default):   # [1] and the default (1,) are one value
                    out[k] = v
        for k, v in cfg.items():
            if k in keys or k in handled or k in IGNORED or k.endswith("_initializer"):
                continue
            if k == "dtype":
                self.dtype_policy(v, loc)
            elif k.endswith("_regularizer") or k.endswith("_constraint"):
                if v is not None:
                    self.notes.append(f"{loc}: {k} ignored (it only acts in training)")
            elif k in REQUIRED:
                want, why = REQUIRED[k]
                if v != want and not (want is None and v is False):
                    self.err(loc, f"{k}={_shown(v)} is not supported: {why}")
            elif v not in (None, False):
                self.err(loc, f"option {k}={_shown(v)} is not known to rnnc's Keras importer")

    def dtype_policy(self, v: Any, loc: str) -> None:
        name = v.get("config", {}).get("name") if isinstance(v, dict) else v
        if name not in (None, "float32"):
            self.err(loc, f"dtype policy {name!r} is not supported: rnnc computes in float32")


def _norm(layer: dict) -> dict:
    return {k: v for k, v in layer.items() if not (k == "go_backwards" and v is False)}


def _differs(value: Any, default: Any) -> bool:
    if isinstance(value, bool) or isinstance(default, bool):
        return value is not default
    if isinstance(value, (int, float)) and isinstance(default, (int, float)):
        return float(value) != float(default)
    return value != default


def _shown(v: Any) -> str:
    if isinstance(v, dict):
        return str(v.get("class_name", "a mapping"))
    return repr(v)


# -- ports: the references a Keras layer's output tensors become --------------------

def _cell_list(entry: dict) -> list[dict]:
    if entry["type"] in S.CELL_OF_LAYER:
        return [{"type": S.CELL_OF_LAYER[entry["type"]]}]
    cell = entry["cell"]
    return cell if isinstance(cell, list) else [cell]


def state_ports(entry: dict) -> list[str]:
    """rnnc's state ports of a recurrent spec layer, as the IR names them."""
    if entry["type"] in S.CONV_LSTM_LAYERS:
        return ir_state_ports([CELL_DEFS["ConvLSTM"].state_names])
    return ir_state_ports([CELL_DEFS[CELL_TYPES[c["type"]]].state_names for c in _cell_list(entry)])


def ports(entry: dict) -> list[str]:
    """The references of a spec layer's outputs, in Keras's flattened output order."""
    name, t = entry["name"], entry["type"]
    if t in RECURRENT:
        states = state_ports(entry) if entry.get("return_state") else []
        return [name] + [f"{name}.{p}" for p in states]
    if t == "Bidirectional":
        inner = entry["layer"]
        back = entry.get("backward_layer", inner)
        main = [f"{name}.forward", f"{name}.backward"] if entry.get("merge_mode", "concat") is None else [name]
        if not inner.get("return_state"):
            return main
        return main + [f"{name}.forward_{p}" for p in state_ports({**inner, "name": ""})] + \
            [f"{name}.backward_{p}" for p in state_ports({**back, "name": ""})]
    if t in ATTENTION_KINDS and entry.get("return_attention_scores"):
        return [name, f"{name}.scores"]
    return [name]


def attention_call(spec: dict, args: list, kwargs: dict) -> tuple[list, dict, str | None]:
    """An attention layer's call (rnnc/layers/attention.py) → (args, kwargs) as a merge's
    (one list of inputs: query, value[, key][, attention mask]), its call options set as keys
    of `spec`; or a reason it cannot be imported."""
    kwargs = dict(kwargs)
    for k in ("use_causal_mask", "return_attention_scores"):
        if kwargs.pop(k, False):
            spec[k] = True
    if spec["type"] != "MultiHeadAttention":
        if tensors(kwargs.pop("mask", None)):
            return [], {}, ("the layer is called with mask=[...]: rnnc takes an attention layer's masks from its "
                            "inputs (Embedding mask_zero, Masking, ...), not as an argument")
        return list(args), kwargs, None
    ins = [a for a in args]
    if kwargs.get("key") is not None:
        ins.append(kwargs.pop("key"))
    kwargs.pop("key", None)
    kwargs.pop("query_mask", None)      # Keras 3 reads the query's own mask, whatever is passed
    for k in ("value_mask", "key_mask"):
        if tensors(kwargs.pop(k, None)):
            return [], {}, (f"the layer is called with {k}=...: rnnc takes MultiHeadAttention's masks from its "
                            "inputs (Embedding mask_zero, Masking, ...); pass an explicit mask as attention_mask")
    attn = kwargs.pop("attention_mask", None)
    if tensors(attn):
        ins.append(attn)
        spec["attention_mask"] = True
    if len(ins) > 4 or any(len(tensors(a)) != 1 for a in ins):
        return [], {}, "expected MultiHeadAttention called on query, value[, key] tensors"
    return [ins], kwargs, None


# -- Keras tensors in inbound nodes ---------------------------------------------------

def _is_tensor(v: Any) -> bool:
    return isinstance(v, dict) and v.get("class_name") == "__keras_tensor__"


def _history(v: dict) -> tuple[str, int, int]:
    h = v.get("config", {}).get("keras_history")
    return (str(h[0]), int(h[1]), int(h[2]))


def tensors(v: Any) -> list[tuple[str, int, int]]:
    """Every Keras tensor in a (nested) argument, in order."""
    if _is_tensor(v):
        return [_history(v)]
    if isinstance(v, (list, tuple)):
        return [t for x in v for t in tensors(x)]
    return []
