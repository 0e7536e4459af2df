"""The command line: rnnc compile | check | summary | inspect | run | import.

Every user error (an RnncError) prints one clear message (no traceback; --debug shows it)
and exits 2, with nothing written. A bug in rnnc (an InternalError, or any other exception)
exits 1 and says that it is a bug.

Imports: the modules that import onnx or onnxruntime (the pipeline, emit, inspect, runtime)
are imported inside the commands that need them, so that `rnnc --help` and `--version` stay
fast; everything else is imported here."""
from __future__ import annotations

import argparse
import functools
import os
import sys
import time
import traceback
from pathlib import Path

import numpy as np

from ._version import __version__
from .errors import InputError, InternalError, ModelFileError, RnncError
from .importers import cli_args as import_args
from .serve import commands as serve_commands

EXIT_USER = 2
EXIT_INTERNAL = 1
REPORT_BUGS = "please report it to the rnnc maintainers with the spec and the command line"


def _parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(add_help=False)
    top.add_argument("--debug", action="store_true", help="show tracebacks")
    # --debug after the command too; SUPPRESS: a subcommand without it keeps `rnnc --debug CMD`'s
    # value (argparse would otherwise reset it to the subparser's default)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")
    p = argparse.ArgumentParser(prog="rnnc", parents=[top],
                                description="Compile Keras-style RNN specs to exact, fast ONNX and run them.")
    p.add_argument("--version", action="version", version=f"rnnc {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    c = sub.add_parser("compile", parents=[common], help="compile a spec to an .onnx file")
    c.add_argument("spec")
    c.add_argument("-o", "--output", required=True, help="the .onnx file to write")
    c.add_argument("--weights", help="weights (.npz or .safetensors, Keras names and layouts)")
    c.add_argument("--opset", type=int, default=21, help="ONNX opset (default 21)")
    c.add_argument("--ir-version", type=int, default=10, help="ONNX IR version (default 10)")
    c.add_argument("--target", choices=("ort", "portable"), default="ort",
                   help="ort (default): fastest exact on ONNX Runtime; portable: only ONNX features that "
                        "onnx.reference also implements")
    c.add_argument("--strict-gpu", action="store_true",
                   help="where CUDA is present, fail (and write nothing) if ONNX Runtime would put any node on the CPU")
    c.add_argument("--weights-from", choices=import_args.WEIGHTS_FROM, default="rnnc",
                   help="what --weights is: rnnc (default: .npz/.safetensors with rnnc's keys), keras (a .weights.h5 "
                        "or .keras file) or torch (a state_dict saved with torch.save, loaded with weights_only=True)")
    c.add_argument("--verify", action="store_true", help=import_args.VERIFY_HELP)
    c.add_argument("--weights-ignore-extra", action="store_true",
                   help="accept weights for layers the spec does not have (Keras's skip_mismatch / by_name: e.g. a "
                        "trained seq2seq's weights onto its encoder spec alone); missing or misshapen weights stay "
                        "errors")
    c.add_argument("--external-data", action="store_true",
                   help="write the tensors to <OUTPUT>.data beside the model (ONNX external data); automatic above "
                        "the 2 GB a single .onnx file holds")
    c.add_argument("--serving", action="store_true",
                   help="the serving form of a stateful model: every input's batch and every carried state's batch "
                        "symbolic (for `rnnc export triton` and batched streams; README \"Serving on Triton\")")
    # reduced precision (rnnc/runtime/precision.py; README "Reduced precision")
    c.add_argument("--quantize", choices=("int8",),
                   help="int8 weights and matmuls for ONNX Runtime's CPU provider; the drift from float32 is "
                        "measured and printed")
    c.add_argument("--precision", choices=("fp32", "fp16"), default=None,
                   help="fp16: float16 weights and compute for ONNX Runtime's CUDA provider (inputs, outputs and "
                        "states stay float32)")
    c.add_argument("--providers", choices=("cpu", "cuda"), default=None,
                   help="where the model is meant to run (default cpu; cuda with --precision fp16): lowering: auto "
                        "picks each layer's fastest exact lowering for it (cpu: the measured cost model; cuda: the "
                        "native op wherever exact); with --precision fp16, cuda writes a model even where the "
                        "CPU provider would refuse it (otherwise refused: exit 2)")
    c.add_argument("--tune", action="store_true",
                   help="measure each layer's exact candidates (native op, Scan, unrolled where time is fixed) on "
                        "this machine at the spec's shapes (--dim for symbolic dims: default batch=32, time=50) and "
                        "keep the fastest")
    c.add_argument("--dim", action="append", default=[], metavar="NAME=SIZE",
                   help="with --tune: the size of a symbolic dim to measure at (default batch=32, time=50, others 4)")
    c.add_argument("--calibrate", metavar="DATA.npz",
                   help="inputs (an .npz keyed by input name) to measure the reduced model's drift on (default: "
                        "random inputs drawn to the spec's shapes, with masks)")
    c.add_argument("--max-diff", type=float, metavar="X",
                   help="refuse (exit 2, nothing written) a reduced model whose max abs difference from float32 "
                        "is above X")

    for name, text in (("check", "validate a spec (nothing is written)"), ("summary", "print a Keras-like summary")):
        s = sub.add_parser(name, parents=[common], help=text)
        s.add_argument("spec")
        s.add_argument("--weights", help="also check a weights file against the spec")

    r = sub.add_parser("run", parents=[common], help="run a compiled model with ONNX Runtime")
    r.add_argument("model")
    r.add_argument("--input", "-i", action="append", default=[], metavar="NAME=FILE.npy",
                   help="an input array (.npy); or FILE.npz holding every input by name")
    r.add_argument("-o", "--output", help="write the outputs to this .npz")
    r.add_argument("--random", action="store_true",
                   help="smoke run on random inputs (every input: not with --input): prints shapes and time")
    r.add_argument("--print", action=argparse.BooleanOptionalAction, default=None,
                   help="print the output values, summarized for big arrays (default: when there is no -o and "
                        "no --random)")
    r.add_argument("--dim", action="append", default=[], metavar="NAME=SIZE",
                   help="size of a symbolic dim for --random (default batch=2, time=10, others 4)")
    r.add_argument("--providers", default="auto", choices=("auto", "cpu", "cuda"))
    r.add_argument("--strict-gpu", action="store_true",
                   help="where CUDA is present, make CPU fallback of any node an error (ONNX Runtime's "
                        "session.disable_cpu_ep_fallback)")
    r.add_argument("--repeat", type=int, default=10, help="timed runs for --random (default 10)")
    r.add_argument("--chunk", type=int, metavar="N",
                   help="stateful models: stream the inputs through the model N time steps at a time")

    i = sub.add_parser("inspect", parents=[common],
                       help="what each layer became and why, and where ONNX Runtime runs it (table, JSON or graph)")
    i.add_argument("model", metavar="MODEL.onnx|SPEC", help="a compiled model, any ONNX file, or a spec")
    i.add_argument("--format", choices=("text", "json", "dot"), default="text", help="what to print (default text)")
    i.add_argument("--svg", metavar="FILE", help="draw the lowered graph as SVG (needs Graphviz)")
    i.add_argument("--png", metavar="FILE", help="draw the lowered graph as PNG (needs Graphviz)")
    i.add_argument("--weights", help="weights for a spec (.npz or .safetensors)")
    i.add_argument("--target", choices=("ort", "portable"), default="ort", help="target for a spec (default ort)")
    import_args.add_import_parser(sub, common)
    serve_commands.add_parsers(sub, common)     # export triton, batch: rnnc/serve/commands.py
    return p


EXIT_SIGPIPE = 141   # 128 + SIGPIPE: what a shell reports for a program that a closed pipe ended


def _closed_stdout() -> int:
    """The reader of stdout went away (`rnnc inspect m.onnx | head -1`): stop quietly, as
    command-line tools do on SIGPIPE. stdout then points at /dev/null, or Python's flush at
    exit would fail on the closed pipe once more."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):   # no real stdout (captured): nothing to redirect
        pass
    return EXIT_SIGPIPE


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return EXIT_USER
    try:
        code = {"compile": cmd_compile, "check": cmd_check, "summary": cmd_summary, "run": cmd_run,
                "inspect": cmd_inspect, "import": cmd_import, "export": serve_commands.cmd_export,
                "batch": serve_commands.cmd_batch}[args.command](args)
        sys.stdout.flush()          # a closed pipe shows here, not at exit
        return code
    except BrokenPipeError:
        return _closed_stdout()
    except RnncError as e:
        if args.debug:
            traceback.print_exc()
        print(e.report(), file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # noqa: BLE001 - InternalError or anything else: a bug in rnnc, not in the input
        if args.debug:
            traceback.print_exc()
        print(internal_error_report(e, debug=args.debug), file=sys.stderr)
        return EXIT_INTERNAL


def internal_error_report(e: BaseException, *, debug: bool = False) -> str:
    """What the CLI prints for a bug in rnnc (exit code 1): the error, that it is a bug, how
    to see the traceback, and where to report it."""
    what = str(e) if isinstance(e, InternalError) else f"{type(e).__name__}: {e}"
    hint = "the traceback is above" if debug else "rerun with --debug for the traceback"
    return f"internal error: {what}\n(this is a bug in rnnc, not in your input; {hint}; {REPORT_BUGS})"


def cmd_import(args: argparse.Namespace) -> int:
    from .importers import commands as import_commands  # the IR and importers: not for --help

    return import_commands.cmd_import(args)


class _Progress:
    """Prints a long compile's stages to stderr: nothing for the first `after` seconds (most
    compiles are done by then), then each stage with the time so far."""

    def __init__(self, after: float = 2.0):
        self.start, self.after, self.pending = time.monotonic(), after, None

    def __call__(self, stage: str) -> None:
        elapsed = time.monotonic() - self.start
        if elapsed >= self.after:
            if self.pending:          # the stage that was running when the threshold passed
                print(f"compiling: {self.pending} ...", file=sys.stderr)
                self.pending = None
            print(f"compiling: {stage} ({elapsed:.1f} s so far)", file=sys.stderr, flush=True)
        else:
            self.pending = stage


def cmd_compile(args: argparse.Namespace) -> int:
    # lazy (onnx): see the module docstring
    from .pipeline import PROGRESS, compile_spec, stage

    token = PROGRESS.set(_Progress())
    try:
        return _compile(args, compile_spec, stage)
    finally:
        PROGRESS.reset(token)


def _compile(args: argparse.Namespace, compile_spec, stage) -> int:

    _spec_file(args.spec)
    out = Path(args.output)
    if out.suffix != ".onnx":
        raise RnncError(f"-o {out}: expected a file name ending in .onnx")
    if not out.parent.exists():
        raise RnncError(f"-o {out}: folder {out.parent} does not exist")
    precision = None if args.precision in (None, "fp32") else args.precision
    if args.quantize and args.providers == "cuda":
        raise RnncError("--quantize int8 is for ONNX Runtime's CPU provider (DynamicQuantizeLSTM and the int8 "
                        "matmuls have no CUDA kernels): use --precision fp16 for CUDA")
    if args.quantize or precision or args.calibrate or args.max_diff is not None:
        compile_spec = functools.partial(compile_spec, quantize=args.quantize, precision=precision,
                                         calibrate=args.calibrate, max_diff=args.max_diff)
    if args.dim and not args.tune:
        raise RnncError("--dim sizes the shapes --tune measures at: add --tune")
    provider = args.providers or ("cuda" if precision == "fp16" else "cpu")
    if args.tune and provider == "cuda":
        from .runtime.session import choose_providers

        choose_providers("cuda")        # --tune measures here: CUDA must be present
    compile_spec = functools.partial(compile_spec, provider=provider, tune=args.tune,
                                     tune_dims=_dims(args.dim) if args.tune else None)
    if args.weights_ignore_extra:
        compile_spec = functools.partial(compile_spec, ignore_extra=True)
    if args.serving:
        from .serve import compile_serving

        compile_spec = functools.partial(compile_serving, **(compile_spec.keywords
                                                             if isinstance(compile_spec, functools.partial) else {}))
    # --weights-from keras|torch and --verify: rnnc/importers
    from .importers import commands as import_commands

    c = import_commands.compile_with(args, compile_spec)
    if precision == "fp16" and args.providers != "cuda":   # checked before writing
        from .runtime.precision import cpu_rejects

        why = cpu_rejects(c.model)
        if why:
            raise RnncError(f"--precision fp16 is for ONNX Runtime's CUDA provider, and the CPU provider refuses this "
                            f"model ({why}): nothing written. Add --providers cuda to write a CUDA-only model, or "
                            "use --quantize int8 for the CPU")
        print("note: --precision fp16 is for ONNX Runtime's CUDA provider; the CPU provider runs it with float32 "
              "casts around each float16 node, slower than the float32 model (use --quantize int8 for the CPU)")
    if args.strict_gpu:                     # checked before writing: on error nothing is written
        sess = _strict_session(c, "auto", str(out))
        if sess.fallback:
            print(f"--strict-gpu: not checked: {sess.fallback}")
        elif sess.strict_gpu:
            print("--strict-gpu: ok: ONNX Runtime places every main-graph node on CUDA")
    stage(f"writing {out}")
    files = c.save(out, external_data=True if args.external_data else None)
    extra = f"; tensors in {', '.join(str(f) for f in files[1:])}" if files and len(files) > 1 else ""
    print(f"wrote {out} (opset {args.opset}, IR {args.ir_version}, {len(c.structure.graph.node)} nodes, "
          f"{c.graph.param_count():,} params{extra})")
    for layer in c.graph.layers.values():
        if layer.reason:
            print(f"  {layer.name}: {layer.reason}")
        for note in layer.notes:
            print(f"  {layer.name}: {note}")
        if args.tune and layer.plan is not None and layer.plan.cost_text:
            print(f"  {layer.name}: {layer.plan.cost_text}")
    if args.quantize or precision:
        from .runtime.precision import summary_lines

        print("\n".join(summary_lines(c.model)))
    return 0


def _dims(items: list[str]) -> dict[str, int]:
    """compile --tune's --dim NAME=SIZE values."""
    sizes = {}
    for d in items:
        k, _, v = d.partition("=")
        if not k or not (v.isascii() and v.isdigit()) or int(v) <= 0:
            raise InputError(f"--dim {d}: expected NAME=SIZE with a positive size")
        sizes[k] = int(v)
    return sizes


def cmd_check(args: argparse.Namespace) -> int:
    # lazy (onnx): see the module docstring
    from .pipeline import prepare

    _spec_file(args.spec)
    graph, _ = prepare(args.spec, weights=args.weights)
    print(f"ok: {args.spec} is valid ({len(graph.layers)} layers, {graph.param_count():,} params)")
    for layer in graph.layers.values():     # the same lines as compile's
        if layer.reason:
            print(f"  {layer.name}: {layer.reason}")
        for note in layer.notes:
            print(f"  {layer.name}: {note}")
    return 0


def _spec_file(path: str) -> None:
    """A spec is text (YAML or JSON): a model, an array or weights given instead is named,
    with the command that takes it (a missing file is left to the spec loader's message)."""
    from .fileio import expect_kind

    expect_kind(path, ("text", "missing"), "a spec (YAML)", error=ModelFileError)


def cmd_summary(args: argparse.Namespace) -> int:
    # lazy (onnx): see the module docstring
    from .ir.printer import summary
    from .pipeline import prepare

    _spec_file(args.spec)
    graph, _ = prepare(args.spec, weights=args.weights, counting=True)   # any size; no weights drawn
    print(summary(graph))
    return 0


NO_PICKLES = ("holds Python objects (a pickled object array), which rnnc never loads: save numeric arrays "
              "with np.save / np.savez")


def _npy_error(item: str, file: str, e: BaseException, entry: str = "") -> InputError:
    where = f"{file}[{entry}]" if entry else file
    if "pickle" in str(e):               # never numpy's advice to allow_pickle
        return InputError(f"--input {item}: {where} {NO_PICKLES}")
    return InputError(f"--input {item}: cannot read {where} as a .npy array: {type(e).__name__}: {e}")


def _load_inputs(items: list[str]) -> dict[str, np.ndarray]:
    from .fileio import describe, sniff

    feeds: dict[str, np.ndarray] = {}
    for item in items:
        name, sep, file = item.partition("=")
        if not sep:
            name, file = "", item
        p = Path(file)
        kind = sniff(p)
        if kind == "missing":
            raise InputError(f"--input {item}: file {file} not found")
        if kind == "directory":
            raise InputError(f"--input {item}: {file} is a directory, not a .npy/.npz file")
        if kind not in ("npy", "npz"):
            why = "rnnc never loads pickles" if kind in ("pickle", "torch") else "save arrays with np.save / np.savez"
            raise InputError(f"--input {item}: {file} is not a .npy array or an .npz archive of them: it is "
                             f"{describe(kind)} ({why})")
        try:
            data = np.load(p, allow_pickle=False)
        except Exception as e:  # noqa: BLE001 - a damaged NumPy file: numpy raises several types
            raise _npy_error(item, file, e) from None
        if isinstance(data, np.lib.npyio.NpzFile):
            with data:
                if name:
                    raise InputError(f"--input {item}: an .npz holds every input by name; pass it as --input {file}")
                for k in data.files:
                    try:
                        feeds[k] = data[k]
                    except Exception as e:  # noqa: BLE001 - a damaged entry, or a pickled one
                        raise _npy_error(item, file, e, k) from None
        else:
            if not name:
                raise InputError(f"--input {item}: expected NAME=FILE.npy")
            feeds[name] = data
    return feeds


MAX_RANDOM = 100_000_000   # elements of one random input (--random is a smoke run)


def _random_inputs(sess, dims_args: list[str]) -> dict[str, np.ndarray]:
    sizes = {"batch": 2, "time": 10}
    names = {d for n in sess.input_names for d in sess.input_spec(n)[1] if isinstance(d, str)}
    for d in dims_args:
        k, _, v = d.partition("=")
        if not (v.isascii() and v.isdigit()) or int(v) <= 0:
            raise InputError(f"--dim {d}: expected NAME=SIZE with a positive size")
        if k not in names:
            raise InputError(f"--dim {d}: the model's inputs have no dim {k!r}: expected one of "
                             f"{', '.join(sorted(names)) or '(none: every dim is fixed)'}")
        sizes[k] = int(v)
    rng = np.random.default_rng(0)
    feeds = {}
    for name in sess.input_names:
        dtype, dims = sess.input_spec(name)
        shape = [d if isinstance(d, int) else sizes.get(d, 4) for d in dims]
        if int(np.prod(shape, dtype=object)) > MAX_RANDOM:
            raise InputError(f"--random: input {name!r} of shape {tuple(shape)} would have more than "
                             f"{MAX_RANDOM:,} elements: expected smaller --dim sizes for a smoke run")
        if np.issubdtype(dtype, np.integer):
            high = min([l["config"]["input_dim"] for l in sess.metadata.get("layers", [])
                        if l["kind"] == "Embedding" and l.get("inputs") == [name]] or [10])
            feeds[name] = rng.integers(0, high, size=shape).astype(dtype)
        else:
            feeds[name] = rng.standard_normal(shape).astype(dtype)
    return feeds


def _run_chunked(sess, feeds: dict[str, np.ndarray], chunk: int) -> dict[str, np.ndarray]:
    """Stream a long sequence through a stateful model, `chunk` steps per call; outputs with
    a time axis are concatenated, the others come from the last chunk."""
    if chunk <= 0:
        raise InputError(f"--chunk: expected a positive number of time steps, got {chunk}")
    if not sess.stateful:
        raise InputError("--chunk needs a stateful model (a layer with stateful: true): otherwise each chunk "
                         "would start from zero states")
    timed = {n for n in feeds if len(sess.input_spec(n)[1]) > 1 and isinstance(sess.input_spec(n)[1][1], str)}
    if not timed:
        raise InputError("--chunk: no input has a symbolic time axis (axis 1) to split")
    steps = {feeds[n].shape[1] for n in timed}
    if len(steps) != 1:
        raise InputError(f"--chunk: the inputs' time lengths differ: {sorted(steps)}")
    total = steps.pop()
    time_dims = {sess.input_spec(n)[1][1] for n in timed}
    out_dims = {name: sess.output_spec(name)[1] for name in sess.output_names}
    parts: dict[str, list[np.ndarray]] = {}
    n_chunks = -(-total // chunk)
    for i, start in enumerate(range(0, total, chunk)):
        part = {n: (a[:, start:start + chunk] if n in timed else a) for n, a in feeds.items()}
        for name, value in sess.run(part).items():
            parts.setdefault(name, []).append(value)
        done = int(30 * (i + 1) / n_chunks)
        print(f"\rchunk {i + 1}/{n_chunks} [{'#' * done}{'.' * (30 - done)}]", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    return {name: (np.concatenate(vs, axis=1) if len(out_dims[name]) > 1 and out_dims[name][1] in time_dims
                   else vs[-1]) for name, vs in parts.items()}


def cmd_run(args: argparse.Namespace) -> int:
    # lazy (onnxruntime): see the module docstring
    from .runtime import Session

    if not Path(args.model).is_file():
        raise ModelFileError(f"model file not found: {args.model}")
    if args.output and not args.output.endswith(".npz"):
        raise RnncError(f"-o {args.output}: expected a file name ending in .npz")
    if args.output and not Path(args.output).parent.exists():
        raise RnncError(f"-o {args.output}: folder {Path(args.output).parent} does not exist")
    if not args.random and not args.input:
        raise InputError("no inputs: pass --input NAME=FILE.npy for each input, or --random")
    if args.random and args.input:
        raise InputError("--random and --input: expected one of them (--random draws every input at random; "
                         "--input gives every input)")
    if args.strict_gpu and args.providers == "cpu":
        raise RnncError("--strict-gpu: expected --providers auto or cuda, got cpu (strict GPU placement needs CUDA)")
    sess = _strict_session(args.model, args.providers, args.model) if args.strict_gpu else \
        Session(args.model, providers=args.providers)
    feeds = _random_inputs(sess, args.dim) if args.random else _load_inputs(args.input)
    sess.validate(feeds)
    outputs = _run_chunked(sess, feeds, args.chunk) if args.chunk is not None else sess.run(feeds)
    print(f"provider: {sess.provider}" + (f"; {sess.fallback}" if sess.fallback else ""))
    show = args.print if args.print is not None else not (args.output or args.random)
    for name, v in outputs.items():
        print(f"  {name}: {v.dtype} {tuple(v.shape)}")
        if show:
            print(_values(v))
    if args.random:
        times = []
        for _ in range(max(1, args.repeat)):
            t0 = time.perf_counter()
            sess.run(feeds)
            times.append(time.perf_counter() - t0)
        shape = ", ".join(f"{k} {tuple(v.shape)}" for k, v in feeds.items())
        print(f"time: median {np.median(times) * 1e3:.3f} ms over {len(times)} runs ({shape})")
    if args.output:
        from .weights import save_npz

        save_npz(outputs, args.output)
        print(f"wrote {args.output}")
    return 0


def _values(v: np.ndarray) -> str:
    """An output's values for the terminal: big arrays summarized (NumPy's ... with 3 items at
    each edge), 6 significant digits, indented under the output's line."""
    with np.printoptions(threshold=200, edgeitems=3, precision=6, linewidth=96):
        text = np.array2string(v, separator=", ")
    return "\n".join("    " + line for line in text.splitlines())


def _strict_session(model, providers: str, where: str):
    """A Session with strict_gpu; its refusal gets the nodes `inspect` predicts on the CPU, and why."""
    # lazy (onnxruntime; onnx for inspect): see the module docstring
    from .runtime import Session, StrictGpuError

    try:
        return Session(model, providers=providers, strict_gpu=True)
    except StrictGpuError as e:
        from .inspect import inspect_model

        cpu = inspect_model(model, file=where).data["strict_gpu"]["cpu_nodes"]
        lines = [f"  - {c['node']} ({c['op']}): {c['why']}" for c in cpu]
        raise StrictGpuError("\n".join([str(e), *(["predicted by rnnc inspect:"] + lines if lines else [])])) from None


def cmd_inspect(args: argparse.Namespace) -> int:
    # lazy (onnx): see the module docstring
    from .inspect import inspect_path
    from .inspect.dot import render

    for fmt in ("svg", "png"):              # path errors before any output
        out = getattr(args, fmt)
        if out and Path(out).suffix.lower() != f".{fmt}":
            other = {"svg": "png", "png": "svg"}[fmt]
            tip = f" (for a .{other} picture use --{other})" if Path(out).suffix.lower() == f".{other}" else ""
            raise RnncError(f"--{fmt} {out}: expected a file name ending in .{fmt}{tip}")
        if out and not Path(out).parent.exists():
            raise RnncError(f"--{fmt} {out}: folder {Path(out).parent} does not exist")
    report = inspect_path(args.model, weights=args.weights, target=args.target)
    print({"text": report.to_text, "json": report.to_json, "dot": report.to_dot}[args.format]().rstrip("\n"))
    dot_text = None
    for fmt in ("svg", "png"):
        if getattr(args, fmt):
            dot_text = dot_text or report.to_dot()
            _, message = render(dot_text, getattr(args, fmt), fmt)
            print(message, file=sys.stderr)   # stderr: stdout stays pure JSON/DOT
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
