"""A test stand-in for Triton's onnxruntime backend (tests/test_triton.py).

When a backend's shared library is missing, Triton loads `<backend dir>/<backend>/model.py`
with its Python backend instead. This one runs the model with ONNX Runtime, so that the real
server core parses the real config.pbtxt, schedules the sequences (sequence batcher, strategy
oldest) and starts each sequence's implicit state from its initial_state (zeros).

The Python backend has no API for a backend to update an implicit state (the C API's
TRITONBACKEND_StateNew/StateUpdate, which the real onnxruntime backend calls): so this stand-in
carries each sequence's output states itself, by correlation id, and takes the server's
state input at a sequence's START (the core's zeros), exactly where the real backend would read
Triton's. Everything else (requests, batching, START/END) is the server's."""
import json
import os
import sys

# the stub's own site-packages (numpy<2 and onnxruntime, built by tests/test_triton.py): the
# Python backend starts its stub without the server's PYTHONPATH, so the test names it here
_SITE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "stub_site.txt")
if os.path.isfile(_SITE):
    with open(_SITE) as _f:
        sys.path.insert(0, _f.read().strip())

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
import triton_python_backend_utils as pb_utils  # noqa: E402

START = 1   # TRITONSERVER_REQUEST_FLAG_SEQUENCE_START
END = 2     # TRITONSERVER_REQUEST_FLAG_SEQUENCE_END


class TritonPythonModel:
    def initialize(self, args):
        cfg = json.loads(args["model_config"])
        path = os.path.join(args["model_repository"], args["model_version"], "model.onnx")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        self.sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        self.batched = cfg.get("max_batch_size", 0) > 0
        self.inputs = [i["name"] for i in cfg["input"]]
        self.outputs = [o["name"] for o in cfg["output"]]
        self.states = [(s["input_name"], s["output_name"]) for s in cfg.get("sequence_batching", {}).get("state", [])]
        self.carried = {}      # correlation id -> {state input name: array}
        self.log = os.environ.get("RNNC_TRITON_STANDIN_LOG")

    def execute(self, requests):
        # one ONNX Runtime run over the batch the sequence batcher formed (one request per sequence)
        feeds, ids, flags = {n: [] for n in self.inputs}, [], []
        for r in requests:
            cid, f = r.correlation_id(), r.flags()
            ids.append(cid)
            flags.append(f)
            for n in self.inputs:
                feeds[n].append(pb_utils.get_input_tensor_by_name(r, n).as_numpy())
            if f & START or cid not in self.carried:
                given = {i: pb_utils.get_input_tensor_by_name(r, i) for i, _ in self.states}
                self.carried[cid] = {i: t.as_numpy().copy() for i, t in given.items()}
        if self.log:
            with open(self.log, "a") as fh:
                fh.write(json.dumps({"batch": len(requests), "ids": ids, "flags": flags}) + "\n")
        join = np.concatenate if self.batched else (lambda xs, axis=0: xs[0])
        run_in = {n: join(v, axis=0) for n, v in feeds.items()}
        for i, _ in self.states:
            run_in[i] = join([self.carried[c][i] for c in ids], axis=0)
        names = self.outputs + [o for _, o in self.states]
        values = dict(zip(names, self.sess.run(names, run_in)))
        responses = []
        for k, (cid, f) in enumerate(zip(ids, flags)):
            def pick(a, k=k):
                return a[k:k + 1] if self.batched else a
            for i, o in self.states:
                self.carried[cid][i] = pick(values[o]).copy()
            if f & END:
                self.carried.pop(cid, None)
            out = [pb_utils.Tensor(n, np.ascontiguousarray(pick(values[n]))) for n in self.outputs]
            responses.append(pb_utils.InferenceResponse(output_tensors=out))
        return responses
