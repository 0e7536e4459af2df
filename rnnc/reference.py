"""A NumPy interpreter of the IR: the test oracle for every lowering. It follows Keras 3's
inference semantics directly (docs/semantics.md) and shares nothing with rnnc/lower/ but the
cell equations in rnnc/cells/ and the decisions rnnc/ir/build.py records in the IR (each
layer's Recurrence, input masks and merged-mask rule); the arithmetic is its own. Computes in
float64, returns float32."""
from __future__ import annotations

import functools

import numpy as np

from .cells.activations import apply as activation
from .cells.builtin import CELLS, NumpyOps
from .cells.custom import numpy_node
from .cells.lang import evaluate
from .ir.graph import Graph, Layer
from .ir.semantics import KERAS_EPSILON, MERGE_LAYERS, dot_axes
from .ir.types import Ref
from .layers import LAYER_DEFS, RefCall


def run_reference(graph: Graph, weights: dict[str, np.ndarray], feeds: dict[str, np.ndarray]
                  ) -> dict[str, np.ndarray]:
    """Evaluate `graph` on `feeds`; returns {output name: array} in the graph's output order,
    then each stateful layer's final states `<layer>/<port>_out` (their inputs are in `feeds`
    as `<layer>/<port>_in`)."""
    env: dict[Ref, np.ndarray] = {}
    for name in (*graph.inputs, *(io[1] for io in graph.state_io())):
        env[Ref(name, "input")] = np.asarray(feeds[name])
    for layer in graph.layers.values():
        w = {k.split("/", 1)[1]: v.astype(np.float64) for k, v in weights.items()
             if k.split("/", 1)[0] == layer.name}
        outs = run_layer(layer, w, env)
        for port, value in outs.items():
            env[Ref(layer.name, port)] = value
    result = {o.name: np.asarray(env[o.ref]).astype(np.float32 if env[o.ref].dtype.kind == "f" else env[o.ref].dtype)
              for o in graph.outputs}
    for layer in graph.layers.values():
        for port, _, name_out, _ in layer.state_io():
            result[name_out] = env[Ref(layer.name, f"_final_{port}")].astype(np.float32)
    return result


def run_layer(layer: Layer, w: dict[str, np.ndarray], env: dict[Ref, np.ndarray]) -> dict[str, np.ndarray]:
    """One layer on the values in `env` (w: its weights, float64, without the layer prefix)."""
    if layer.kind in LAYER_DEFS:
        xs = [np.asarray(env[r]) for r in layer.inputs]
        xs = [x.astype(np.float64) if x.dtype.kind == "f" else x for x in xs]
        masks = [None if m is None else np.asarray(env[m], dtype=bool)
                 for m in (layer.input_masks or (layer.mask_in,))]
        return LAYER_DEFS[layer.kind].reference(RefCall(layer, w, xs, masks))
    if layer.kind in _LAYERS:
        return _LAYERS[layer.kind](layer, w, env)
    return _recurrent_layer(layer, w, env)


def _x(layer: Layer, env: dict) -> np.ndarray:
    return np.asarray(env[layer.inputs[0]], dtype=np.float64)


def _mask(layer: Layer, env: dict) -> np.ndarray | None:
    return None if layer.mask_in is None else np.asarray(env[layer.mask_in], dtype=bool)


def _embedding(layer, w, env):
    tokens = np.asarray(env[layer.inputs[0]])
    out = {"output": w["embeddings"][tokens]}
    if layer.config["mask_zero"]:
        out["mask"] = tokens != 0
    return out


def _masking(layer, w, env):
    x = _x(layer, env)
    keep = np.any(x != layer.config["mask_value"], axis=-1)   # [B, T]
    return {"output": x * keep[..., None], "mask": keep}


def _dense(layer, w, env):
    y = _x(layer, env) @ w["kernel"]
    if "bias" in w:
        y = y + w["bias"]
    return {"output": activation(layer.config["activation"], y)}


def _batchnorm(layer, w, env):
    x = _x(layer, env)
    axis = layer.config["axis"] % x.ndim
    shape = [1] * x.ndim
    shape[axis] = x.shape[axis]
    mean, var, gamma, beta = (w[k].reshape(shape) for k in ("moving_mean", "moving_variance", "gamma", "beta"))
    y = (x - mean) / np.sqrt(var + layer.config["epsilon"]) * gamma + beta
    return {"output": y}


def _merge(layer, w, env):
    xs = [np.asarray(env[r], dtype=np.float64) for r in layer.inputs]
    k = layer.kind
    masks = [None if m is None else np.asarray(env[m], dtype=bool) for m in layer.input_masks]
    if k == "Dot":
        return {"output": _dot(layer, xs)}
    if k != "Concatenate":   # Keras's Merge.call: lower-rank inputs get size-1 dims at axis 1
        top = max(x.ndim for x in xs)
        xs = [x.reshape(x.shape[:1] + (1,) * (top - x.ndim) + x.shape[1:]) for x in xs]
    ms = [None if m is None else m[..., None] for m in masks]   # each mask over its input's features
    if k == "Concatenate":
        y = np.concatenate(xs, axis=layer.config["axis"])
    elif k in ("Add", "Average"):
        y = sum(xs[1:], xs[0])
        if k == "Average":
            y = y / len(xs)
    elif k == "Subtract":
        y = xs[0] - xs[1]
    elif k == "Multiply":
        # Keras 3: a masked input counts as 1 at its masked steps; with every input masked,
        # the product is zeroed where no input is unmasked
        y = np.ones_like(xs[0])
        for v, m in zip(xs, ms):
            y = y * (v if m is None else np.where(m, v, 1.0))
        if all(m is not None for m in ms):
            y = np.where(functools.reduce(np.logical_or, ms), y, 0.0)
    else:
        # Maximum / Minimum: Merge._apply_merge_op_and_or_mask, input by input
        f = np.maximum if k == "Maximum" else np.minimum
        y, ym = xs[0], ms[0]
        for v, m in zip(xs[1:], ms[1:]):
            if m is not None:
                v = np.where(m, v, y)
            if ym is not None:
                y = np.where(ym, y, v)
            ym = (ym | m) if m is not None and ym is not None else None
            y = f(y, v)
    out = {"output": y}
    if layer.mask_merge == "concat":   # each mask broadcast over its input (none: all true), concat, any(-1)
        full = [np.ones(x.shape, bool) if m is None else np.broadcast_to(m[..., None], x.shape)
                for m, x in zip(masks, xs)]
        out["mask"] = np.any(np.concatenate(full, axis=layer.config["axis"]), axis=-1)
    elif layer.mask_merge == "or":     # the OR of the masks (broadcast as the inputs are)
        out["mask"] = np.logical_or.reduce(np.broadcast_arrays(*masks))
    return out


def _dot(layer, xs):
    """Keras 3's Dot: optionally l2-normalized along the axes, then batch_dot."""
    x, y = xs
    ax, ay = dot_axes(layer.config["axes"], x.ndim, y.ndim)
    if layer.config["normalize"]:
        with np.errstate(divide="ignore"):
            x, y = (v * np.minimum(1.0 / np.sqrt(np.sum(v * v, axis=a, keepdims=True)), 1.0 / KERAS_EPSILON)
                    for v, a in ((x, ax), (y, ay)))
    xm = np.moveaxis(x, ax, -1)                       # [B, ..., D]
    ym = np.moveaxis(y, ay, 1)                        # [B, D, ...]
    out = np.einsum("bxd,bdy->bxy", xm.reshape(xm.shape[0], -1, xm.shape[-1]),
                    ym.reshape(ym.shape[0], ym.shape[1], -1))
    dims = xm.shape[1:-1] + ym.shape[2:]
    return out.reshape(x.shape[0], *(dims or (1,)))


def _cell_steppers(layer: Layer, w: dict) -> list:
    """Per cell: a function (inputs at t, states) -> (outputs, new states), on NumPy arrays."""
    out = []
    for c in layer.cells:
        p = {k: w[c.prefix + k] for k in c.params}
        if c.custom:
            prog = c.program

            def step(xs, states, prog=prog, p=p):
                seed = {i: x for (_, i), x in zip(prog.inputs, xs)}
                seed.update({i: s for (_, i), s in zip(prog.states, states)})
                seed.update({i: p[n] for n, i in prog.params})
                vals = evaluate(prog, numpy_node, seed, [*prog.outputs, *prog.next_states])
                return vals[:len(prog.outputs)], vals[len(prog.outputs):]
        else:
            cdef = CELLS[c.kind]
            ops = NumpyOps(cdef.prepare(p, c.units, c.config))

            def step(xs, states, c=c, cdef=cdef, ops=ops):
                h, ns = cdef.step(ops, cdef.project(ops, xs[0], c.units, c.config), tuple(states), c.units, c.config)
                return [h], list(ns)
        out.append(step)
    return out


def run_cells(layer: Layer, w: dict, xs: list[np.ndarray], mask: np.ndarray | None,
              init: list[np.ndarray] | None) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """Keras's RNN loop over time, as the (half-)layer's Recurrence says. Returns (sequences
    in processing order, last outputs, states)."""
    rec = layer.recurrence
    assert rec is not None
    zero_output_for_mask = rec.zero_output_for_mask
    if rec.go_backwards:
        xs = [x[:, ::-1] for x in xs]
        mask = None if mask is None else mask[:, ::-1]
    batch, steps = xs[0].shape[0], xs[0].shape[1]
    steppers = _cell_steppers(layer, w)
    flat = list(init) if init is not None else [np.zeros((batch, *s)) for c in layer.cells for _, s in c.states]
    states = [np.asarray(s, dtype=np.float64) for s in flat]
    shapes = layer.cells[-1].output_shapes
    prev = [np.zeros((batch, *s)) for s in shapes]
    seqs: list[list[np.ndarray]] = [[] for _ in shapes]
    for t in range(steps):
        inp = [x[:, t] for x in xs]
        new_states: list[np.ndarray] = []
        i = 0
        for c, step in zip(layer.cells, steppers):
            n = len(c.states)
            inp, ns = step(inp, states[i:i + n])
            new_states += list(ns)
            i += n
        out = inp
        if mask is not None:
            m = mask[:, t]
            out = [_keep(m, o, np.zeros_like(o) if zero_output_for_mask else p) for o, p in zip(out, prev)]
            new_states = [_keep(m, ns, s) for ns, s in zip(new_states, states)]
        states, prev = new_states, out
        for k, o in enumerate(out):
            seqs[k].append(o)
    seq = [np.stack(s, axis=1) if s else np.zeros((batch, 0, *shape)) for s, shape in zip(seqs, shapes)]
    return seq, prev, states


def _keep(m: np.ndarray, new: np.ndarray, old: np.ndarray) -> np.ndarray:
    """where(m, new, old), the [B] mask m broadcast over the value's other axes."""
    return np.where(m.reshape(-1, *[1] * (np.ndim(new) - 1)), new, old)


def _first_states(layer: Layer, env: dict) -> list[np.ndarray]:
    """The states a layer starts from: carried (stateful), else its initial_state, else none."""
    return [env[Ref(name, "input")] for _, name, _, _ in layer.state_io()] or [env[r] for r in layer.initial_state]


def _recurrent_layer(layer: Layer, w: dict, env: dict) -> dict[str, np.ndarray]:
    if layer.kind == "Bidirectional":
        return _bidirectional(layer, w, env)
    xs = [np.asarray(env[r], dtype=np.float64) for r in layer.inputs]
    seq, last, states = run_cells(layer, w, xs, _mask(layer, env), _first_states(layer, env) or None)
    ys = seq if layer.config["return_sequences"] else last
    out = dict(zip(layer.main_ports, ys))
    for port, s in zip(layer.state_ports, states):
        out[port] = s
    for (port, _), s in zip(layer.states, states):
        out[f"_final_{port}"] = s
    return out


def _bidirectional(layer: Layer, w: dict, env: dict) -> dict[str, np.ndarray]:
    fwd, bwd = layer.sublayers
    x, mask = _x(layer, env), _mask(layer, env)
    seqs = fwd.config["return_sequences"]
    results = {}
    carried = _first_states(layer, env)            # the forward half's, then the backward half's
    n_fwd = len(fwd.states)
    for half, init in ((fwd, carried[:n_fwd]), (bwd, carried[n_fwd:])):
        hw = {k.split("/", 1)[1]: v for k, v in w.items() if k.startswith(half.name + "/")}
        seq, last, states = run_cells(half, hw, [x], mask, init or None)
        y = seq[0] if seqs else last[0]
        if seqs and half.recurrence.reverse_output:
            y = y[:, ::-1]
        results[half.name] = (y, states)
    (yf, sf), (yb, sb) = results["forward"], results["backward"]
    mode = layer.config["merge_mode"]
    out: dict[str, np.ndarray] = {}
    if mode is None:
        out["forward"], out["backward"] = yf, yb
    else:
        out["output"] = {"concat": lambda: np.concatenate([yf, yb], axis=-1), "sum": lambda: yf + yb,
                         "mul": lambda: yf * yb, "ave": lambda: (yf + yb) / 2}[mode]()
    for half, states in (("forward", sf), ("backward", sb)):
        sub = fwd if half == "forward" else bwd
        for port, s in zip(sub.state_ports, states):
            if f"{half}_{port}" in layer.outputs:
                out[f"{half}_{port}"] = s
        for (port, _), s in zip(sub.states, states):
            out[f"_final_{half}_{port}"] = s
    return out


_LAYERS = {
    "Embedding": _embedding, "Masking": _masking, "Dense": _dense, "BatchNormalization": _batchnorm,
    "Dropout": lambda l, w, env: {"output": _x(l, env)},
    "Activation": lambda l, w, env: {"output": activation(l.config["activation"], _x(l, env))},
    **{k: _merge for k in MERGE_LAYERS},
}
