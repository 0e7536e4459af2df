import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("KERAS_BACKEND", "torch")
# every compile in the suite (and in the CLI subprocesses it starts) checks the IR's
# invariants after each pass (rnnc/ir/verify.py)
os.environ["RNNC_VERIFY_IR"] = "1"
# the tests of each lowering path ask for it as "native wherever exact" (the cost model's
# choice among exact lowerings is tested on its own: tests/test_cost.py)
os.environ.setdefault("RNNC_LOWERING_COST", "native")
sys.path.insert(0, str(Path(__file__).parent))

# The slowest tests (`python -m pytest --durations=30`): each takes seconds, mostly in
# CLI subprocesses (each one imports onnx and onnxruntime). Marked `slow` here, by test id, so that
# `-m "not slow"` gives a quick run; the default run still selects them.
SLOW = (
    "tests/test_cli.py::test_run_random_prints_shapes_and_time",
    "tests/test_cli.py::test_summary_and_check",
    "tests/test_cli.py::test_opset_and_ir_version_flags",
    "tests/test_cli.py::test_compile_run_with_inputs_and_outputs",
    "tests/test_cli.py::test_write_failures_exit_2_and_leave_nothing",
    "tests/test_cli.py::test_bad_runtime_input_exit_2",
    "tests/test_custom_cells.py::test_malicious_specs_exit_2_nothing_written_nothing_run",
    "tests/test_inspect.py::test_json_fields_exact",
    "tests/test_inspect.py::test_inspect_json_carries_each_layers_plan",
    "tests/test_stateful.py::test_cli_chunk_streams_and_concatenates",
)


def pytest_collection_modifyitems(config, items):
    root = Path(__file__).resolve().parents[1]
    for item in items:
        try:
            nodeid = Path(item.path).resolve().relative_to(root).as_posix() + "::" + item.name
        except ValueError:
            continue
        if nodeid in SLOW or nodeid.split("[")[0] in SLOW:
            item.add_marker(pytest.mark.slow)
