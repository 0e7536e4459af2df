"""Where ONNX Runtime's CUDA provider puts each node, predicted from the model alone.

The rules follow ONNX Runtime's CUDAExecutionProvider::GetCapability and its helper
GetCpuPreferredNodes (onnxruntime/core/providers/cuda/cuda_execution_provider.cc,
onnxruntime/core/framework/fallback_cpu_capability.cc):

- LSTM/GRU/RNN run on cuDNN unless an attribute rules it out; then they go to the CPU.
  Ruled out: any `activation_alpha`/`activation_beta`/`clip`; `activations` other than the
  defaults (LSTM sigmoid,tanh,tanh; GRU sigmoid,tanh; RNN tanh, per direction; RNN with
  Relu is refused too); GRU `linear_before_reset` other than 1; LSTM `input_forget`; LSTM
  peepholes (input P). `sequence_lens` is fine.
- Loop, If and Scan have CUDA kernels, but their control logic runs on the host: the trip
  count and the condition are read on the CPU and the body runs node by node, each body
  node placed on its own.
- Small shape arithmetic fed by a Shape/Size result is kept on the CPU on purpose. Those
  nodes count as CPU nodes for `session.disable_cpu_ep_fallback` (the --strict-gpu check),
  which looks at the main graph's nodes only.
"""
from __future__ import annotations

import heapq
from typing import Any, Callable

import onnx

from .walk import CONTROL_OPS, RNN_OPS, Scope, all_scopes, attrs, subscopes_of

CUDA, CPU, CONTROL = "cuda", "cpu", "control"

# ONNX Runtime compares lower-cased names, one list per direction.
DEFAULT_ACTS = {"LSTM": ["sigmoid", "tanh", "tanh"], "GRU": ["sigmoid", "tanh"], "RNN": ["tanh"]}

# CUDA kernels whose outputs live in CPU memory: where shape arithmetic starts.
CPU_OUTPUT_OPS = {"Shape", "Size"}
# Inputs that CUDA kernels take in CPU memory (KernelDefBuilder::InputMemoryType): a CPU
# tensor there does not pull the node onto the CPU.
CPU_INPUTS: dict[str, set[int]] = {
    "Reshape": {1}, "Expand": {1}, "Slice": {1, 2, 3, 4}, "Squeeze": {1}, "Unsqueeze": {1},
    "ConstantOfShape": {0}, "Range": {0, 1, 2}, "Split": {1}, "Tile": {1}, "TopK": {1}, "Pad": {1, 2, 3},
    "ReduceSum": {1}, "ReduceMin": {1}, "ReduceMax": {1}, "ReduceMean": {1}, "ReduceProd": {1},
    "OneHot": {1}, "Resize": {1, 2, 3}, "Loop": {0, 1}, "If": {0}}
SMALL_INITIALIZER = 100   # elements (kSmallInitializerThreshold)


def rnn_verdict(node: onnx.NodeProto) -> tuple[str, str]:
    """(cuda | cpu, why) for an LSTM/GRU/RNN node."""
    op = node.op_type
    a = attrs(node)
    dirs = 2 if a.get("direction") == "bidirectional" else 1
    why: list[str] = []
    acts = a.get("activations")
    if acts is not None and [s.lower() for s in acts] != DEFAULT_ACTS[op] * dirs:
        want = ", ".join(s.capitalize() for s in DEFAULT_ACTS[op])
        why.append(f"activations {', '.join(acts)}: the CUDA provider runs {op} only with {want}")
    elif "activation_alpha" in a or "activation_beta" in a:
        why.append("activation_alpha/activation_beta set: the CUDA provider takes only the default activations")
    if "clip" in a:
        why.append(f"clip = {a['clip']:g}: cuDNN has no cell clip")
    if op == "GRU" and a.get("linear_before_reset", 1) != 1:
        why.append("GRU linear_before_reset = 0 (Keras reset_after: false): cuDNN's GRU only does "
                   "linear_before_reset = 1")
    if op == "LSTM" and a.get("input_forget", 0) != 0:
        why.append("input_forget = 1: cuDNN has no coupled input-forget gate")
    if op == "LSTM" and len(node.input) > 7 and node.input[7]:
        why.append("peephole weights P: cuDNN's LSTM has no peepholes")
    if why:
        return CPU, "; ".join(why)
    extra = []
    if op == "GRU" and "linear_before_reset" not in a:
        extra.append("linear_before_reset is not set (ONNX default 0): ONNX Runtime only checks an explicit "
                     "attribute, so set it")
    if len(node.input) > 4 and node.input[4]:
        extra.append("sequence_lens is supported")
    return CUDA, f"cuDNN {op}" + (f" ({a['direction']})" if dirs == 2 else "") + \
        (": " + "; ".join(extra) if extra else "")


def control_verdict(node: onnx.NodeProto, body_nodes: int, body_cpu: int) -> tuple[str, str]:
    """(control, why) for Loop/If/Scan: honest about what runs where."""
    tail = f"; {body_cpu} of them fall back to the CPU" if body_cpu else ""
    if node.op_type == "If":
        return CONTROL, ("control flow: the CUDA provider's If reads its condition on the CPU (a device-to-host "
                         f"copy and sync per run), then runs the chosen branch's nodes ({body_nodes} in both "
                         f"branches) on CUDA where supported{tail}")
    if node.op_type == "Loop":
        how = "trip count and condition on the CPU"
        extra = ", plus a copy of the step index to the GPU"
    else:
        how = "sequence loop on the CPU, slicing the scanned inputs on the GPU"
        extra = ""
    return CONTROL, (f"control flow: the CUDA provider's {node.op_type} steps through time from the host "
                     f"({how}); its {body_nodes} body nodes run on CUDA where supported, one "
                     f"kernel launch each per step{extra}{tail}")


def shape_cpu_nodes(scope: Scope, refused: set[int]) -> set[int]:
    """Indices of the nodes of one graph that ONNX Runtime moves to the CPU as small shape
    arithmetic. A re-statement of GetCpuPreferredNodes: walk forward from CPU tensors
    (Shape/Size outputs, outputs of nodes already on the CPU) in topological order; a node
    goes to the CPU when every input is a small initializer, a graph input, or a CPU tensor
    that its CUDA kernel would not take in CPU memory anyway. `refused`: indices of the
    nodes the CUDA provider refused."""
    nodes = list(scope.graph.node)
    consumers: dict[str, list[int]] = {}
    for i, n in enumerate(nodes):
        for x in n.input:
            if x:
                consumers.setdefault(x, []).append(i)
    graph_inputs = {v.name for v in scope.graph.input}
    cpu_args: set[str] = set()
    heap: list[int] = []

    def mark_outputs(n: onnx.NodeProto) -> None:
        for y in n.output:
            if y:
                cpu_args.add(y)
                for c in consumers.get(y, []):
                    heapq.heappush(heap, c)

    for i, n in enumerate(nodes):
        if n.op_type in CPU_OUTPUT_OPS and i not in refused:
            mark_outputs(n)
    out: set[int] = set()
    seen: set[int] = set()
    while heap:
        i = heapq.heappop(heap)
        if i in seen:
            continue
        seen.add(i)
        n = nodes[i]
        if i in refused:              # already on the CPU: its outputs are CPU tensors
            mark_outputs(n)
            continue
        on_cpu = True
        for k, x in enumerate(n.input):
            size = scope.initializer_size(x) if x else None
            if (size is not None and size <= SMALL_INITIALIZER) or x in graph_inputs:
                continue
            if x not in cpu_args or k in CPU_INPUTS.get(n.op_type, ()):
                on_cpu = False
                break
        if on_cpu:
            out.add(i)
            mark_outputs(n)
    return out


NodeKey = tuple[int, int]   # (id(Scope), index of the node in its graph): node names may be empty


def predict(root: Scope, layer_of: Callable[[onnx.NodeProto], str | None]) -> dict[str, Any]:
    """Placement of every recurrent and control-flow node, the other nodes ONNX Runtime puts
    on the CPU, and what --strict-gpu would say. Returns {"nodes": records, "strict_gpu":
    summary, "devices": {NodeKey: cuda | cpu | control}}."""
    verdicts: dict[NodeKey, tuple[str, str]] = {}
    refused: dict[int, set[int]] = {}
    for s in all_scopes(root):
        refused[id(s)] = set()
        for i, n in enumerate(s.graph.node):
            if n.op_type in RNN_OPS:
                verdicts[(id(s), i)] = rnn_verdict(n)
                if verdicts[(id(s), i)][0] == CPU:
                    refused[id(s)].add(i)
    devices: dict[NodeKey, str] = {}
    for s in all_scopes(root):
        for i in refused[id(s)] | shape_cpu_nodes(s, refused[id(s)]):
            devices[(id(s), i)] = CPU

    def body_stats(s: Scope, node: onnx.NodeProto) -> tuple[int, int]:
        """(nodes, CPU nodes) in the subgraphs of a control-flow node, nested ones included."""
        total = cpu = 0
        for sub in (x for c in subscopes_of(s, node) for x in all_scopes(c)):
            total += len(sub.graph.node)
            cpu += sum(1 for i in range(len(sub.graph.node)) if devices.get((id(sub), i)) == CPU)
        return total, cpu

    records: list[dict[str, Any]] = []

    def visit(s: Scope) -> None:
        """Depth first, so a subgraph's nodes follow the node that owns them."""
        for i, n in enumerate(s.graph.node):
            if n.op_type in RNN_OPS:
                dev, why = verdicts[(id(s), i)]
            elif n.op_type in CONTROL_OPS:
                dev, why = control_verdict(n, *body_stats(s, n))
            else:
                continue
            devices[(id(s), i)] = dev
            records.append({"node": n.name, "op": n.op_type, "layer": layer_of(n), "in": s.path,
                            "device": dev, "why": why})
            for c in subscopes_of(s, n):
                visit(c)

    visit(root)
    main_cpu = [{"node": n.name, "op": n.op_type, "layer": layer_of(n),
                 "why": verdicts[(id(root), i)][1] if n.op_type in RNN_OPS else
                 "shape arithmetic on a Shape result: ONNX Runtime keeps it on the CPU on purpose"}
                for i, n in enumerate(root.graph.node) if devices.get((id(root), i)) == CPU]
    body_cpu = sum(1 for (sid, _), dev in devices.items() if sid != id(root) and dev == CPU)
    return {
        "nodes": records,
        "devices": devices,
        "strict_gpu": {
            "passes": not main_cpu,
            "cpu_nodes": main_cpu,
            "subgraph_cpu_nodes": body_cpu,
            "note": ("--strict-gpu (ONNX Runtime's session.disable_cpu_ep_fallback) refuses a session when any "
                     "main-graph node is on the CPU; nodes inside Loop/If bodies are placed per node and not "
                     "checked"),
        },
    }
