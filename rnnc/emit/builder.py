"""GraphBuilder: accumulates ONNX nodes and initializers with unique, readable names.
Node names are prefixed by the layer that emitted them (`lstm/LSTM`), which reads well
in Netron and lets `inspect` group nodes by layer."""
from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

DTYPES = {"float32": TensorProto.FLOAT, "int32": TensorProto.INT32, "int64": TensorProto.INT64,
          "bool": TensorProto.BOOL}

# The main graph's tensors of this many bytes or more stay NumPy arrays (`GraphBuilder.arrays`)
# until the model is written or asked for whole (rnnc/pipeline.py Compiled, rnnc/emit/model.py
# write_model): a weight is
# then held once, not once as an array and again as a TensorProto (and a third time serialized)
DEFER_BYTES = 1 << 16
LITTLE_ENDIAN = sys.byteorder == "little"
DEFERRABLE = frozenset(np.dtype(t) for t in ("float32", "float16", "float64", "int8", "uint8", "int16", "int32",
                                             "int64", "bool"))


class GraphBuilder:
    def __init__(self, *, parent: GraphBuilder | None = None):
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        # the main graph's large tensors, kept as arrays (DEFER_BYTES), in the order they came
        self.arrays: dict[str, np.ndarray] = {}
        self.parent = parent
        self._names: set[str] = parent._names if parent else set()            # tensors
        self._next: dict[tuple[bool, str], int] = parent._next if parent else {}  # base -> next suffix to try
        self._node_names: set[str] = parent._node_names if parent else set()  # nodes: their own
        # counter, so node `lstm/Squeeze_2` writes tensor `lstm/Squeeze_2` (reads well in Netron)
        self._consts: dict[tuple, str] = {}
        self.memo: dict[tuple, str] = {}   # values a lowering computes once per graph (e.g. [x, 1])
        self.scope = parent.scope if parent else ""

    # -- names ------------------------------------------------------------------
    def fresh(self, base: str, *, node: bool = False) -> str:
        base = f"{self.scope}/{base}" if self.scope and "/" not in base else base
        names = self._node_names if node else self._names
        i = self._next.get((node, base), 0)     # suffixes already taken for this base are skipped at once
        name = base if i == 0 else f"{base}_{i}"
        while name in names:
            i += 1
            name = f"{base}_{i}"
        self._next[(node, base)] = i + 1
        names.add(name)
        return name

    def reserve(self, name: str) -> str:
        if name in self._names:
            raise ValueError(f"name {name!r} used twice")
        self._names.add(name)
        return name

    @contextmanager
    def layer_scope(self, name: str) -> Iterator[None]:
        old, self.scope = self.scope, name
        try:
            yield
        finally:
            self.scope = old

    # -- nodes ------------------------------------------------------------------
    def op(self, op_type: str, inputs: Sequence[str], *, outputs: int | Sequence[str] = 1,
           name: str | None = None, domain: str = "", **attrs: Any) -> Any:
        """Add a node. Returns its output name (one output) or a list of names."""
        if isinstance(outputs, int):
            outs = [self.fresh(f"{name or op_type}_out{i}" if outputs > 1 else (name or op_type)) for i in range(outputs)]
        else:
            outs = list(outputs)
        node = helper.make_node(op_type, list(inputs), outs, name=self.fresh(name or op_type, node=True), domain=domain,
                                **{k: v for k, v in attrs.items() if v is not None})
        self.nodes.append(node)
        return outs[0] if len(outs) == 1 else outs

    # -- constants --------------------------------------------------------------
    def initializer(self, base: str, array: np.ndarray) -> str:
        name = self.fresh(base)
        arr = np.asarray(array, order="C")      # no copy of an array that is already contiguous
        if (self.parent is None and arr.nbytes >= DEFER_BYTES and arr.dtype in DEFERRABLE and arr.ndim
                and LITTLE_ENDIAN and arr.dtype.isnative):     # ONNX's raw data is little-endian
            self.arrays[name] = arr     # held as it is (often the caller's own weight: not copied)
        else:
            self.initializers.append(numpy_helper.from_array(arr, name))
        return name

    def initializer_dims(self) -> dict[str, onnx.TensorProto]:
        """Every initializer of this graph by name, the large ones (`arrays`) as a TensorProto
        with their type and dims and no data: for the passes that read an initializer's shape."""
        out = {t.name: t for t in self.initializers}
        for name, arr in self.arrays.items():
            out[name] = tensor_header(name, arr)
        return out


    def const(self, value: Any, dtype: str = "int64") -> str:
        """A small shared constant (shape vectors, axes, scalars)."""
        arr = np.asarray(value, dtype=dtype)
        key = (arr.dtype.str, arr.shape, arr.tobytes())
        root = self
        while root.parent is not None:  # constants live in the main graph (visible in subgraphs)
            root = root.parent
        if key not in root._consts:
            text = "_".join(str(v) for v in arr.ravel()[:4]) if arr.size <= 4 else f"{arr.size}"
            root._consts[key] = root.initializer_global(f"const_{arr.dtype.name}_{text}".replace("-", "m"), arr)
        return root._consts[key]

    def initializer_global(self, base: str, array: np.ndarray) -> str:
        old, self.scope = self.scope, ""
        try:
            return self.initializer(base, array)
        finally:
            self.scope = old


def value_info(name: str, dtype: str, dims: Sequence[int | str | None]) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, DTYPES[dtype], [d if d is not None else None for d in dims])


def tensor_header(name: str, arr: np.ndarray) -> onnx.TensorProto:
    """A TensorProto of `arr`'s name, type and dims, without its data."""
    t = TensorProto(name=name, data_type=helper.np_dtype_to_tensor_dtype(arr.dtype))
    t.dims.extend(arr.shape)
    return t
