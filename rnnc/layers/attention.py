"""Attention layers (Keras 3 semantics; one LayerDef each, the ONNX forms are in
rnnc/lower/attention.py).

The layers take several inputs the way merges do: `input: [query, value]` or
`[query, value, key]` (key defaults to value), each (batch, time, features). Keras's call
arguments `use_causal_mask` and `return_attention_scores` are keys of the layer; with
`return_attention_scores: true` the softmaxed scores are a second output port, `<layer>.scores`.

Attention (Luong) and AdditiveAttention (Bahdanau), keras/src/layers/attention/attention.py:
scores (batch, Tq, Tv) are `q . k` (times `scale`) for score_mode dot, `w * sum(tanh(scale *
(q + k)))` for score_mode concat, `sum(scale * tanh(q + k))` for AdditiveAttention. A masked key
(the value's mask; the key's own mask is ignored, as in Keras) and, with use_causal_mask, a
later key get `score - 1e9` (float32, Keras's arithmetic: a row whose keys are all masked keeps
the float32 rounding of that sum); then softmax over the keys, times value; a masked query's
output row is zeros. The output carries the query's mask.

MultiHeadAttention, keras/src/layers/attention/multi_head_attention.py: query, key and value
are projected with kernels [dim, heads, key_dim|value_dim] and biases [heads, key_dim|value_dim];
scores (batch, heads, Tq, Tv) = (q / sqrt(key_dim)) . k; the attention mask is the AND of the
explicit attention_mask (`attention_mask: true`: the last input, (Tq, Tv) or (batch, Tq, Tv),
non-zero = attend, as Keras casts it to bool), the query's mask (batch, Tq, 1), the value's
and the key's masks (batch, 1, Tv) and the causal mask; masked scores become -1e9 before the
softmax, so a row with every key masked (e.g. a masked query) averages the values uniformly, as
Keras's fused dot_product_attention does. With return_attention_scores Keras takes its
Softmax-layer path instead, which zeros the masked probabilities (a fully masked row gives
zeros): rnnc does the same. The output kernel is [heads, value_dim, *output_shape]; the output
carries the query's mask (not zeroed)."""
from __future__ import annotations

from typing import Any

import numpy as np

from ..ir.types import TensorType
from ..spec import schema as S
from ..spec.schema import Key
from .base import InferCtx, Inferred, LayerDef, RefCall, define

KERAS_BIG = 1e9          # Keras's large negative for masked scores (float32; 65504 in float16)
ATTENTION_KINDS = ("Attention", "AdditiveAttention", "MultiHeadAttention")


def _axes_check(v: Any) -> tuple[bool, Any, str]:
    """Keras's attention_axes: null, an axis or a list of axes (normalized to a tuple)."""
    if v is None:
        return True, None, ""
    vals = [v] if isinstance(v, int) and not isinstance(v, bool) else v
    ok = isinstance(vals, (list, tuple)) and len(vals) > 0 and all(
        isinstance(a, int) and not isinstance(a, bool) for a in vals)
    return ok, tuple(vals) if ok else v, "null, an axis or a list of axes"


def _output_shape_check(v: Any) -> tuple[bool, Any, str]:
    if v is None:
        return True, None, ""
    vals = [v] if isinstance(v, int) and not isinstance(v, bool) else v
    ok = isinstance(vals, (list, tuple)) and len(vals) > 0 and all(
        isinstance(a, int) and not isinstance(a, bool) and a > 0 for a in vals)
    return ok, tuple(vals) if ok else v, "null, a positive integer or a list of them"


CALL_KEYS = {"use_causal_mask": Key(S.boolean, False), "return_attention_scores": Key(S.boolean, False)}


# -- shapes ----------------------------------------------------------------------------

def _qvk(ctx: InferCtx, n_tensors: int) -> tuple[TensorType, TensorType, TensorType]:
    """query, value, key (the key: value when not given), each checked (batch, time, features)."""
    names = ("query", "value", "key")
    types = ctx.types[:n_tensors]
    for i, t in enumerate(types):
        if t.rank != 3:
            raise ctx.fail("input", f"{ctx.kind} expects (batch, time, features) inputs: its {names[i]} "
                           f"({ctx.refs[i]}) is {t}")
        if not isinstance(t.dims[-1], int):
            raise ctx.fail("input", f"{ctx.kind} needs a fixed feature size (last dim): its {names[i]} "
                           f"({ctx.refs[i]}) is {t}")
    q, v = types[0], types[1]
    k = types[2] if n_tensors > 2 else v
    for i, t in enumerate(types[1:], start=1):
        if not ctx.same_dim(q.dims[0], t.dims[0], f"the batch of its query and {names[i]}"):
            raise ctx.fail("input", f"{ctx.kind}: the query {q} and the {names[i]} {t} have different batch sizes")
    if n_tensors > 2 and not ctx.same_dim(v.dims[1], k.dims[1], "the time of its value and key"):
        raise ctx.fail("input", f"{ctx.kind}: the value {v} and the key {k} must have the same time dim")
    return q, v, k


def _luong_infer(ctx: InferCtx) -> Inferred:
    c = ctx.config
    q, v, k = _qvk(ctx, len(ctx.types))
    if q.dims[-1] != k.dims[-1]:
        what = "the dot product of" if ctx.kind == "Attention" and c.get("score_mode") == "dot" else "adding"
        raise ctx.fail("input", f"{ctx.kind}: {what} query and key needs the same feature size, got query {q} and "
                       f"key {k}")
    params: dict[str, tuple[int, ...]] = {}
    if ctx.kind == "AdditiveAttention":
        if c["use_scale"]:
            params["scale"] = (q.dims[-1],)
    else:
        if c["use_scale"]:
            params["scale"] = ()
        if c["score_mode"] == "concat":
            params["concat_score_weight"] = ()
    outs = {"output": TensorType("float32", (q.dims[0], q.dims[1], v.dims[-1]))}
    if c["return_attention_scores"]:
        outs["scores"] = TensorType("float32", (q.dims[0], q.dims[1], v.dims[1]))
    notes = (f"dropout={c['dropout']} ignored at inference",) if c["dropout"] else ()
    return Inferred(outs, params, notes=notes)


def mha_heads(cfg: dict) -> tuple[int, int, int]:
    """(num_heads, key_dim, value_dim) of a MultiHeadAttention config."""
    return cfg["num_heads"], cfg["key_dim"], cfg["value_dim"] or cfg["key_dim"]


def _mha_infer(ctx: InferCtx) -> Inferred:
    c = ctx.config
    n_t = len(ctx.types) - (1 if c["attention_mask"] else 0)
    for i, t in enumerate(ctx.types[1:n_t], start=1):     # only the attention mask may be bool
        if t.dtype != "float32":
            raise ctx.fail("input", f"MultiHeadAttention's {('value', 'key')[i - 1]} must be float32, got {t.dtype} "
                           f"from {ctx.refs[i]}")
    if n_t < 2:
        raise ctx.fail("input", "MultiHeadAttention with attention_mask: true takes [query, value, attention_mask] "
                       "or [query, value, key, attention_mask] (the attention mask last)")
    if n_t > 3:
        raise ctx.fail("input", f"MultiHeadAttention takes [query, value] or [query, value, key] (and the attention "
                       f"mask last with attention_mask: true), got {len(ctx.types)} inputs")
    q, v, k = _qvk(ctx, n_t)
    axes = c["attention_axes"]
    if axes is not None and tuple(a if a >= 0 else a + 3 for a in axes) != (1,):
        raise ctx.fail("attention_axes", f"attention_axes={list(axes)} is not supported: rnnc attends over the time "
                       "axis of (batch, time, features) inputs (attention_axes null, 1 or -2)")
    if c["attention_mask"]:
        m, mref = ctx.types[-1], ctx.refs[-1]
        if m.rank not in (2, 3):
            raise ctx.fail("attention_mask", f"the attention mask ({mref}) is {m}: expected (query time, value time) "
                           "or (batch, query time, value time)")
        ok = (ctx.same_dim(m.dims[-2], q.dims[1], "the query time and the attention mask's")
              and ctx.same_dim(m.dims[-1], v.dims[1], "the value time and the attention mask's")
              and (m.rank == 2 or ctx.same_dim(m.dims[0], q.dims[0], "the batch of the query and attention mask")))
        if not ok:
            raise ctx.fail("attention_mask", f"the attention mask ({mref}) {m} does not fit query {q} and value {v}: "
                           "expected (batch, query time, value time)")
    h, kd, vd = mha_heads(c)
    out = c["output_shape"] or (q.dims[-1],)
    params: dict[str, tuple[int, ...]] = {}
    for part, x, d in (("query", q, kd), ("key", k, kd), ("value", v, vd)):
        params[f"{part}/kernel"] = (x.dims[-1], h, d)
        if c["use_bias"]:
            params[f"{part}/bias"] = (h, d)
    params["attention_output/kernel"] = (h, vd, *out)
    if c["use_bias"]:
        params["attention_output/bias"] = tuple(out)
    outs = {"output": TensorType("float32", (q.dims[0], q.dims[1], *out))}
    if c["return_attention_scores"]:
        outs["scores"] = TensorType("float32", (q.dims[0], h, q.dims[1], v.dims[1]))
    notes = (f"dropout={c['dropout']} ignored at inference",) if c["dropout"] else ()
    return Inferred(outs, params, notes=notes)


# -- reference (NumPy) -------------------------------------------------------------------

def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - np.max(x, axis=-1, keepdims=True))
    return e / np.sum(e, axis=-1, keepdims=True)


def causal(tq: int, tv: int) -> np.ndarray:
    """Keras's causal mask: query i attends to keys j <= i (1, Tq, Tv)."""
    return (np.arange(tq)[:, None] >= np.arange(tv)[None, :])[None]


def _luong_ref(c: RefCall) -> dict[str, np.ndarray]:
    cfg, w = c.config, c.w
    q, v = c.xs[0], c.xs[1]
    k = c.xs[2] if len(c.xs) > 2 else v
    qm = c.masks[0] if c.masks else None
    vm = c.masks[1] if len(c.masks) > 1 else None
    if c.layer.kind == "AdditiveAttention":
        t = np.tanh(q[:, :, None, :] + k[:, None, :, :])
        scores = np.sum((w["scale"] if "scale" in w else 1.0) * t, axis=-1)
    elif cfg["score_mode"] == "dot":
        scores = q @ np.swapaxes(k, -1, -2) * (w["scale"] if "scale" in w else 1.0)
    else:
        s = q[:, :, None, :] + k[:, None, :, :]
        scores = w["concat_score_weight"] * np.sum(np.tanh(w["scale"] * s if "scale" in w else s), axis=-1)
    keep = vm[:, None, :] if vm is not None else None
    if cfg["use_causal_mask"]:
        cm = causal(q.shape[1], k.shape[1])
        keep = cm if keep is None else keep & cm
    if keep is not None:   # Keras: scores - 1e9 in float32
        low = (scores.astype(np.float32) - np.float32(KERAS_BIG)).astype(np.float64)
        scores = np.where(keep, scores, low)
    weights = softmax(scores)
    out = weights @ v
    if qm is not None:
        out = np.where(qm[..., None], out, 0.0)
    res = {"output": out}
    if cfg["return_attention_scores"]:
        res["scores"] = weights
    return res


def mha_mask(cfg: dict, q: np.ndarray, v: np.ndarray, masks: list, attn: np.ndarray | None,
             n_tensors: int) -> np.ndarray | None:
    """The (batch|1, Tq|1, Tv|1) bool mask Keras's _compute_attention_mask makes, or None."""
    parts = []
    if attn is not None:
        parts.append(attn != 0)
    qm = masks[0] if masks else None
    if qm is not None:
        parts.append(qm[:, :, None])
    for i in range(1, n_tensors):
        m = masks[i] if len(masks) > i else None
        if m is not None:
            parts.append(m[:, None, :])
    if cfg["use_causal_mask"]:
        parts.append(causal(q.shape[1], v.shape[1]))
    if not parts:
        return None
    out = parts[0]
    for p in parts[1:]:
        out = out & p
    return out


def _mha_ref(c: RefCall) -> dict[str, np.ndarray]:
    cfg, w = c.config, c.w
    n_t = len(c.xs) - (1 if cfg["attention_mask"] else 0)
    q, v = c.xs[0], c.xs[1]
    k = c.xs[2] if n_t > 2 else v
    attn = c.xs[-1] if cfg["attention_mask"] else None
    if attn is not None and attn.ndim == 2:
        attn = attn[None]

    def proj(x, part):
        y = np.einsum("btd,dnh->btnh", x, w[f"{part}/kernel"])
        return y + w[f"{part}/bias"] if f"{part}/bias" in w else y

    _, kd, _ = mha_heads(cfg)
    qp, kp, vp = proj(q, "query") / np.sqrt(float(kd)), proj(k, "key"), proj(v, "value")
    scores = np.einsum("bsnh,btnh->bnts", kp, qp)
    mask = mha_mask(cfg, q, v, c.masks, attn, n_t)
    if mask is not None:
        scores = np.where(mask[:, None], scores, -KERAS_BIG)
    probs = softmax(scores)
    if mask is not None and cfg["return_attention_scores"]:
        probs = np.where(mask[:, None], probs, 0.0)
    o = np.einsum("bnts,bsnh->btnh", probs, vp)
    ko = w["attention_output/kernel"]
    y = np.tensordot(o, ko, axes=([2, 3], [0, 1]))
    if "attention_output/bias" in w:
        y = y + w["attention_output/bias"]
    res = {"output": y}
    if cfg["return_attention_scores"]:
        res["scores"] = probs
    return res


# -- Keras import checks ------------------------------------------------------------------

def _mha_keras_check(cfg: dict[str, Any]) -> list[str]:
    out = []
    if cfg.get("use_gate"):
        out.append("use_gate=True (gated attention) is not supported")
    if cfg.get("sliding_window") is not None:
        out.append(f"sliding_window={cfg['sliding_window']} is not supported")
    return out


ATTENTION = define(LayerDef(
    "Attention",
    keys={"use_scale": Key(S.boolean, False), "score_mode": Key(S.enum("dot", "concat"), "dot"),
          "dropout": Key(S.rate, 0.0), **CALL_KEYS},
    infer=_luong_infer, reference=_luong_ref, default_name="attention", masking="pass", inputs=(2, 3),
    keras_ignore=frozenset({"seed"}), initializers={"scale": "ones", "concat_score_weight": "ones"}))

ADDITIVE_ATTENTION = define(LayerDef(
    "AdditiveAttention",
    keys={"use_scale": Key(S.boolean, True), "dropout": Key(S.rate, 0.0), **CALL_KEYS},
    infer=_luong_infer, reference=_luong_ref, default_name="additive_attention", masking="pass", inputs=(2, 3),
    keras_ignore=frozenset({"seed"}), initializers={"scale": "glorot_uniform"}))

MULTI_HEAD_ATTENTION = define(LayerDef(
    "MultiHeadAttention",
    keys={"num_heads": Key(S.positive_int, required=True), "key_dim": Key(S.positive_int, required=True),
          "value_dim": Key(S.optional(S.positive_int), None), "dropout": Key(S.rate, 0.0),
          "use_bias": Key(S.boolean, True), "output_shape": Key(_output_shape_check, None),
          "attention_axes": Key(_axes_check, None), "attention_mask": Key(S.boolean, False), **CALL_KEYS},
    infer=_mha_infer, reference=_mha_ref, default_name="multi_head_attention", masking="pass", inputs=(2, 4),
    keras_ignore=frozenset({"seed", "use_gate", "sliding_window", "flash_attention"}),
    keras_check=_mha_keras_check, other_dtypes=("float32", "bool")))
