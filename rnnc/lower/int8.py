"""int8 matmuls for rnnc's own lowering (`compile --quantize int8`): x @ W with W an int8
initializer and x quantized at run time.

    xq, xs, xz = DynamicQuantizeLinear(x)            # uint8, per tensor, from x's own range
    y = Cast(MatMulInteger(xq, Wq, xz), float) * (xs * Ws)     (+ bias, in float)

Only standard ONNX ops (onnx.reference runs them: --target portable). The pattern is the one
ONNX Runtime's own quantize_dynamic writes for a MatMul, and its graph optimizer fuses it into
one DynamicQuantizeMatMul kernel (MatMulIntegerToFloat with the quantization folded in), in
Scan/Loop bodies too: rnnc writes no com.microsoft op itself and still gets ORT's fused kernel
under --target ort (checked by tests/test_precision.py on the optimized model).

Weights are symmetric int8 (zero point 0, range ±127) with one scale per output column
(per-channel): a gate block's columns keep their own range, which matters when the kernel's
columns differ in scale (the i/f/c/o blocks do after training). The gate arithmetic, biases and
states stay float32.

The switch is the lowering context's `int8` attribute (set by rnnc/pipeline.py with
quantize="int8"; absent: float32, nothing here runs)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
from onnx import TensorProto

from ..emit.builder import GraphBuilder
from ..ir.graph import Layer


@dataclass
class Int8:
    """The int8 options of one compile, and what was quantized (by layer, for the metadata)."""

    per_channel: bool = True
    dense: bool = True                     # Dense kernels too, from DENSE_MIN_WEIGHTS up
    weights: dict[str, tuple[str, str]] = field(default_factory=dict)   # float initializer -> (int8, scale)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)         # float initializer -> its array
    layers: dict[str, list[str]] = field(default_factory=dict)          # layer -> what became int8
    labels: dict[str, str] = field(default_factory=dict)                # initializer -> its name in notes

    def register(self, name: str, w: np.ndarray) -> None:
        """Mark float initializer `name` (a [k, n] kernel) as one to multiply in int8."""
        if w.ndim == 2 and w.size:
            self.arrays[name] = w

    def register_slice(self, name: str, of: str, index: Any) -> None:
        """`name` is a constant slice of registered kernel `of` (a custom cell's gate block,
        rnnc/passes/sink_slices.py): register the slice's array too."""
        if of not in self.arrays:
            return
        key: list[Any] = []
        for s in index:
            if s[0] == "slice":
                start, stop, step = s[1], s[2], s[3]
                key.append(slice(start, None if step < 0 and stop < 0 else stop, step))
            elif s[0] == "index":
                key.append(s[1])
            elif s[0] == "all":
                key.append(slice(None))
            else:
                return
        self.register(name, self.arrays[of][tuple(key)])
        self.labels[name] = f"{self.labels.get(of, of.rsplit('/', 1)[-1])} (gate blocks)"

    def quantized(self, b: GraphBuilder, name: str) -> tuple[str, str] | None:
        """(int8 weights, their scale) of a registered kernel, made once in the main graph."""
        if name not in self.arrays:
            return None
        if name not in self.weights:
            q, s = quantize_weight(self.arrays[name], self.per_channel)
            root = b
            while root.parent is not None:
                root = root.parent
            self.weights[name] = (root.initializer_global(f"{name}_int8", q),
                                  root.initializer_global(f"{name}_scale", s))
        return self.weights[name]

    def note(self, layer: str, what: str) -> None:
        items = self.layers.setdefault(layer, [])
        if what not in items:
            items.append(what)


# Measured on the CPU provider, 2 threads, 3200 rows (README "Reduced precision"): int8 pays for
# a 128x128 kernel (0.39x) and 512x512 (0.39x), not for 256x10 (1.02x: the quantization of the
# input costs what the small product saves), so smaller Dense kernels stay float32. Embedding
# stays float32: a Gather of int8 rows plus the dequantization measured 13-15x slower than
# the float Gather (a table lookup has no arithmetic for int8 to save).
DENSE_MIN_WEIGHTS = 128 * 128


def options(ctx: Any) -> Int8 | None:
    """The compile's int8 options (LowerCtx.int8), or None (float32)."""
    return ctx.int8


def quantize_weight(w: np.ndarray, per_channel: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 weights and their scale ([n] per column, or a scalar): w ≈ q * scale."""
    w = np.asarray(w, dtype=np.float64)
    amax = np.abs(w).max(axis=0) if per_channel else np.abs(w).max()
    scale = np.where(amax > 0, amax / 127.0, 1.0)
    q = np.clip(np.rint(w / scale), -127, 127).astype(np.int8)
    return q, np.asarray(scale, dtype=np.float32)


def matmul(b: GraphBuilder, x: str, wq: str, scale: str, bias: str | None = None) -> str:
    """x @ W (+ bias) in int8, x [..., k] float32, W [k, n] int8, scale [n] or scalar."""
    if ("quant_x", x) not in b.memo:    # one quantization of x however many products read it
        b.memo[("quant_x", x)] = b.op("DynamicQuantizeLinear", [x], outputs=3, name="quant_x")
    xq, xs, xz = b.memo[("quant_x", x)]
    acc = b.op("MatMulInteger", [xq, wq, xz], name="MatMulInteger")
    y = b.op("Mul", [b.op("Cast", [acc], to=TensorProto.FLOAT), b.op("Mul", [xs, scale], name="scale")],
             name="dequant")
    return b.op("Add", [y, bias]) if bias else y


def maybe(q: Int8 | None, b: GraphBuilder, x: str, w: str, bias: str | None = None) -> str | None:
    """x @ w (+ bias) in int8 when w is a registered kernel, else None (the float path)."""
    if q is None:
        return None
    qw = q.quantized(b, w)
    if qw is None:
        return None
    q.note(b.scope, q.labels.get(w, w.rsplit("/", 1)[-1]))
    return matmul(b, x, *qw, bias)


def supports_int8(base: Callable[[str, str, Layer, str], "str | None"]) -> Callable[[str, str, Layer, str], "str | None"]:
    """choose-lowering's `supports` under --quantize int8: ONNX's GRU and RNN ops have no int8
    form, so those layers take the time loop with int8 matmuls (and so does LSTM on
    --target portable: DynamicQuantizeLSTM is ONNX Runtime's com.microsoft op). LSTM on
    --target ort stays native and goes through ONNX Runtime's quantize_dynamic."""
    from ..passes.choose_lowering import onnx_op

    def supports(kind: str, strategy: str, layer: Layer, target: str) -> str | None:
        why = base(kind, strategy, layer, target)
        if why is not None or strategy != "native":
            return why
        ops = list(dict.fromkeys(onnx_op(c) for half in (layer.sublayers or (layer,)) for c in half.cells))
        if target == "portable":
            return (f"--quantize int8 --target portable: ONNX's {'/'.join(ops)} op has no int8 form in standard "
                    "ONNX; a time loop with int8 matmuls (DynamicQuantizeLinear + MatMulInteger)")
        if layer.mask_in is not None:
            return ("--quantize int8: a masked layer's native op sits in an If, which ONNX Runtime's quantization "
                    "tool does not rewrite correctly (its subgraph mode breaks the graph's order); a time loop with "
                    "int8 matmuls (DynamicQuantizeLinear + MatMulInteger)")
        other = [o for o in ops if o != "LSTM"]
        if other:
            return (f"--quantize int8: ONNX's {'/'.join(other)} op has no int8 form; a time loop with int8 matmuls "
                    "(DynamicQuantizeLinear + MatMulInteger)")
        return None
    return supports
