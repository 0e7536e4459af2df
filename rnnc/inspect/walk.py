"""Reading an ONNX model for `inspect`: every node with where it sits (main graph or inside
a Loop/If/Scan subgraph), tensor shapes from ONNX shape inference, op counts, and which
rnnc layer emitted a node (node names are prefixed by the layer: `lstm/LSTM`)."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterator

import onnx
from onnx import helper

from .. import metadata

RNN_OPS = ("LSTM", "GRU", "RNN")
CONTROL_OPS = ("Loop", "If", "Scan")
META_KEY = metadata.KEY
DTYPES = {v: k for k, v in {
    "float32": onnx.TensorProto.FLOAT, "float16": onnx.TensorProto.FLOAT16, "float64": onnx.TensorProto.DOUBLE,
    "bfloat16": onnx.TensorProto.BFLOAT16, "int8": onnx.TensorProto.INT8, "uint8": onnx.TensorProto.UINT8,
    "int16": onnx.TensorProto.INT16, "int32": onnx.TensorProto.INT32, "int64": onnx.TensorProto.INT64,
    "bool": onnx.TensorProto.BOOL, "string": onnx.TensorProto.STRING}.items()}


@dataclass
class Scope:
    """One graph (the main graph, or a subgraph attribute of a control-flow node).
    `owner` is the control-flow node's name and `attr` the attribute (body, then_branch...)."""

    graph: onnx.GraphProto
    owner: str | None = None
    attr: str | None = None
    parent: "Scope | None" = None
    children: list["Scope"] = field(default_factory=list)

    @property
    def path(self) -> list[str]:
        """["lstm/If_right_padded", "else_branch", "lstm/Loop", "body"] for a nested Loop body."""
        if self.parent is None:
            return []
        return self.parent.path + [self.owner or "", self.attr or ""]

    def initializer_size(self, name: str) -> int | None:
        """Elements of initializer `name`, looked up here and in the enclosing graphs (as
        ONNX Runtime does for a subgraph), or None when it is not an initializer."""
        s: Scope | None = self
        while s is not None:
            for t in s.graph.initializer:
                if t.name == name:
                    n = 1
                    for d in t.dims:
                        n *= d
                    return n
            s = s.parent
        return None


def scopes(model: onnx.ModelProto) -> Scope:
    """The tree of graphs: main graph at the root, subgraphs as children."""
    def build(g: onnx.GraphProto, owner: str | None, attr: str | None, parent: Scope | None) -> Scope:
        s = Scope(g, owner, attr, parent)
        for n in g.node:
            for a in n.attribute:
                if a.type == onnx.AttributeProto.GRAPH:
                    s.children.append(build(a.g, n.name, a.name, s))
                elif a.type == onnx.AttributeProto.GRAPHS:
                    for i, sub in enumerate(a.graphs):
                        s.children.append(build(sub, n.name, f"{a.name}[{i}]", s))
        return s
    return build(model.graph, None, None, None)


def all_scopes(root: Scope) -> Iterator[Scope]:
    yield root
    for c in root.children:
        yield from all_scopes(c)


def subscopes_of(scope: Scope, node: onnx.NodeProto) -> list[Scope]:
    return [c for c in scope.children if c.owner == node.name]


def op_counts(root: Scope) -> Counter:
    """Op types over every graph, subgraphs included."""
    return Counter(n.op_type for s in all_scopes(root) for n in s.graph.node)


def attrs(node: onnx.NodeProto) -> dict[str, Any]:
    """A node's non-graph attributes as Python values (bytes decoded)."""
    out: dict[str, Any] = {}
    for a in node.attribute:
        if a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS, onnx.AttributeProto.TENSOR):
            continue
        v = helper.get_attribute_value(a)
        if isinstance(v, bytes):
            v = v.decode("utf-8", "replace")
        elif isinstance(v, list):
            v = [x.decode("utf-8", "replace") if isinstance(x, bytes) else x for x in v]
        out[a.name] = v
    return out


# ---- shapes -----------------------------------------------------------------------

def _dims(t: onnx.TypeProto) -> list[int | str] | None:
    if not t.HasField("tensor_type") or not t.tensor_type.HasField("shape"):
        return None
    # Shape inference names the dims it cannot tie to an input "unk__N": show those as "?".
    return [d.dim_value if d.HasField("dim_value") else
            ("?" if not d.dim_param or d.dim_param.startswith("unk__") else d.dim_param)
            for d in t.tensor_type.shape.dim]


def value_type(v: onnx.ValueInfoProto) -> dict[str, Any]:
    t = v.type
    dtype = DTYPES.get(t.tensor_type.elem_type, "?") if t.HasField("tensor_type") else t.WhichOneof("value") or "?"
    return {"dtype": dtype, "shape": _dims(t)}


def tensor_types(model: onnx.ModelProto) -> dict[str, dict[str, Any]]:
    """name -> {dtype, shape} for every tensor ONNX shape inference can type (subgraphs too).
    Inference failing (an unknown op, say) only loses intermediate shapes."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model, check_type=False, strict_mode=False)
    except Exception:  # noqa: BLE001 - a model shape inference cannot handle still inspects
        inferred = model
    out: dict[str, dict[str, Any]] = {}
    for s in all_scopes(scopes(inferred)):
        g = s.graph
        for v in (*g.input, *g.output, *g.value_info):
            if v.name and v.name not in out:
                out[v.name] = value_type(v)
        for t in g.initializer:
            out.setdefault(t.name, {"dtype": DTYPES.get(t.data_type, "?"), "shape": list(t.dims)})
    return out


def show_shape(shape: list | None) -> str:
    if shape is None:
        return "?"
    return "(" + ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


# ---- rnnc metadata and layers ----------------------------------------------------------

def rnnc_metadata(model: onnx.ModelProto, file: str | None = None) -> dict[str, Any] | None:
    """The layer table rnnc stores in the model (see rnnc/emit/model.py), or None."""
    props = {p.key: p.value for p in model.metadata_props}
    if META_KEY not in props:
        return None
    meta = metadata.parse(props[META_KEY], file)
    meta["_version"] = props.get("rnnc.version")
    meta["_target"] = props.get("rnnc.target")
    return meta


def is_output_rename(node: onnx.NodeProto, outputs: set[str]) -> bool:
    """rnnc ends the graph with Identity nodes named `output/<name>` that give each model
    output its spec name."""
    return (node.op_type == "Identity" and len(node.output) == 1 and node.output[0] in outputs
            and node.name == f"output/{node.output[0]}")


def layer_of(node: onnx.NodeProto, layers: set[str]) -> str | None:
    head = node.name.split("/", 1)[0]
    return head if "/" in node.name and head in layers else None
