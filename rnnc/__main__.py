"""`python -m rnnc`. Run from a clone's root, Python finds the folder rnnc/ before any
installed copy: if that folder cannot start (its dependencies are not installed, or it is
not the rnnc that pip installed), say so instead of a bare ImportError."""
import sys


def _cannot_start(e: ImportError) -> int:
    from importlib import metadata
    from pathlib import Path

    here = Path(__file__).resolve().parent
    try:
        dist = metadata.distribution("rnnc")
        installed = f"rnnc {dist.version} is installed, but "
    except metadata.PackageNotFoundError:
        installed = "rnnc is not installed, and "
    print(f"error: rnnc cannot start: {type(e).__name__}: {e}\n"
          f"{installed}`python -m rnnc` runs the folder {here} (Python looks in the current folder first, so "
          f"a clone's rnnc/ shadows an installed rnnc). Install it with `pip install -e {here.parent}` "
          "(or run `rnnc` from another folder).", file=sys.stderr)
    return 2


try:
    from .cli import main
except ImportError as _e:   # a missing dependency, or a half-installed copy: not a bug in rnnc
    sys.exit(_cannot_start(_e))

sys.exit(main())
