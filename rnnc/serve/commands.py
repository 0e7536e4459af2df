"""The command lines `rnnc export triton` and `rnnc batch` (wired in rnnc/cli.py). Heavy
modules (onnx, pyarrow, ray) are imported inside the commands."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import ModelFileError, RnncError


def add_parsers(sub, common) -> None:
    e = sub.add_parser("export", parents=[common], help="export a compiled model for a server (triton)")
    esub = e.add_subparsers(dest="export_target", metavar="TARGET", required=True)
    t = esub.add_parser("triton", parents=[common], help="write a Triton model repository (config.pbtxt + model.onnx)")
    t.add_argument("model", metavar="MODEL.onnx|SPEC",
                   help="a compiled model (taken as compiled), or a spec, compiled here in the serving form "
                        "(stateful states with a symbolic batch, so that Triton batches streams across sequences)")
    t.add_argument("--repo", required=True, help="the model repository folder (created if missing)")
    t.add_argument("--name", help="the model's name in the repository (default: the file's stem)")
    t.add_argument("--max-batch-size", type=int, default=None,
                   help="Triton's max_batch_size (default 8 for a model whose first dims are all symbolic; "
                        "0 for a fixed-batch model)")
    t.add_argument("--weights", help="weights for a spec (.npz or .safetensors)")

    b = sub.add_parser("batch", parents=[common], help="run a compiled model over a dataset (locally or on Ray)")
    b.add_argument("model", metavar="MODEL.onnx")
    b.add_argument("--input", required=True, metavar="DATA", help="Parquet (file or folder), .npz or a folder of .npy")
    b.add_argument("--output", required=True, metavar="OUT", help=".parquet, .npz or a folder (one .npy per output)")
    b.add_argument("--batch-size", type=int, default=64, help="rows per ONNX Runtime run (default 64)")
    b.add_argument("--threads", type=int, default=0, help="local: ONNX Runtime's threads (default: its own)")
    b.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                   help="run on Ray Data (a cluster's address, or none: a local Ray)")
    b.add_argument("--cpus-per-actor", type=int, default=1, help="--ray: CPUs (= ONNX Runtime threads) per actor")
    b.add_argument("--actors", type=int, help="--ray: actors (default: as many as fit, one CPU left for I/O)")


def cmd_export(args: argparse.Namespace) -> int:
    from .triton import export

    src = Path(args.model)
    if not src.is_file():
        raise ModelFileError(f"model file not found: {src}")
    model = src
    tmp = None
    if src.suffix != ".onnx":          # a spec: compile the serving form
        import tempfile

        from .serving import compile_serving

        compiled = compile_serving(src, weights=args.weights)
        tmp = tempfile.TemporaryDirectory()
        model = Path(tmp.name) / f"{args.name or src.stem}.onnx"
        compiled.save(model)
    elif args.weights:
        raise RnncError("--weights: only with a spec (a compiled model holds its weights)")
    try:
        folder, m = export(model, args.repo, name=args.name or src.stem, max_batch_size=args.max_batch_size)
    finally:
        if tmp is not None:
            tmp.cleanup()
    print(f"wrote {folder}/config.pbtxt and {folder}/1/model.onnx (max_batch_size {m.max_batch_size}, "
          f"{len(m.inputs)} input(s), {len(m.outputs)} output(s), {len(m.states)} implicit state(s))")
    for note in m.notes:
        print(f"  note: {note}")
    if m.states and m.max_batch_size > 0:
        print("  every request of a sequence has batch 1; requests of different sequences batch together only when "
              "their chunks have the same length")
    return 0


def cmd_batch(args: argparse.Namespace) -> int:
    from .. import batch as B

    if not Path(args.model).is_file():
        raise ModelFileError(f"model file not found: {args.model}")
    kind = B.core.output_kind(args.output)
    out = Path(args.output)
    if not out.parent.exists():
        raise RnncError(f"--output {out}: folder {out.parent} does not exist")
    if args.batch_size <= 0:
        raise RnncError(f"--batch-size: expected a positive number of rows, got {args.batch_size}")
    if args.ray is not None:
        from ..batch.ray_run import run_ray

        results = run_ray(args.model, args.input, address=args.ray or None, batch_size=args.batch_size,
                          cpus_per_actor=args.cpus_per_actor, actors=args.actors)
    else:
        results = B.run_local(args.model, args.input, batch_size=args.batch_size, threads=args.threads)
    n = B.write_table(results, out)
    print(f"wrote {n} rows to {out} ({kind})", file=sys.stdout)
    return 0
