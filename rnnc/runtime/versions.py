"""The newest ONNX opset and IR version that the installed ONNX Runtime loads.

ONNX Runtime has no API that answers this: its Python package reports its own version
(`onnxruntime.__version__`), and the opset each release supports is a table in its docs
(docs/Versioning.md), which would have to be copied into rnnc and kept up with every
release, and would be wrong for a custom build. So rnnc asks ONNX Runtime itself: it builds
a one-node model (Identity, in every opset) stamped with a candidate opset or IR version and
sees whether an InferenceSession on the CPU accepts it. ONNX Runtime refuses an opset newer
than its released ones ("Opset 28 is under development") and an IR version above its own
("max supported IR version: 13") when it loads the model, before any kernel runs, so the
probe answers exactly the question `compile --target ort` needs. Probes go down from the
newest version the onnx package knows (rnnc cannot emit a newer one) and stop at the first
accepted one: a handful of sub-millisecond sessions, once per process (cached)."""
from __future__ import annotations

import contextlib
import functools
import io

import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

# The oldest versions probed: below them the answer is "at least this" (rnnc's own minimums
# are checked first, by the caller).
FLOOR_OPSET = 18
FLOOR_IR = 8


def _loads(opset: int, ir_version: int) -> bool:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "rnnc_version_probe", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=ir_version)
    opts = ort.SessionOptions()
    opts.log_severity_level = 4
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            ort.InferenceSession(model.SerializeToString(), sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception:  # noqa: BLE001 - ONNX Runtime's refusal (its Fail type): not this version
        return False
    return True


@functools.lru_cache(maxsize=1)
def ort_max_versions() -> tuple[int, int]:
    """(newest opset, newest IR version) that this ONNX Runtime loads, capped by the onnx
    package's own (what rnnc can emit)."""
    ir_safe = min(10, onnx.IR_VERSION)     # probe opsets at an IR version every supported release takes
    opset = next((v for v in range(onnx.defs.onnx_opset_version(), FLOOR_OPSET - 1, -1) if _loads(v, ir_safe)),
                 FLOOR_OPSET)
    ir = next((v for v in range(onnx.IR_VERSION, FLOOR_IR - 1, -1) if _loads(min(opset, 21), v)), FLOOR_IR)
    return opset, ir


def describe() -> str:
    """"ONNX Runtime 1.31.1", for messages."""
    return f"ONNX Runtime {ort.__version__}"
