"""Load YAML (or JSON, a subset of YAML) into plain Python data while remembering the line
of every key, so that errors can point at `file:line` and a key path.

Only YAML's safe constructors are used: a spec is data, and no tag can run code."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import Problem, SpecError

KeyPath = tuple[Any, ...]


def format_path(path: KeyPath) -> str:
    """('layers', 2, 'cell', 'units') -> 'layers[2].cell.units'."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            text = str(part)
            out += ("." if out else "") + (text if text.isprintable() else repr(text))
    return out or "<top>"


@dataclass
class Source:
    """A loaded document: its data and the line of every key path."""

    data: Any
    file: str
    lines: dict[KeyPath, int] = field(default_factory=dict)
    text: str = ""
    # where each scalar's text starts (1-based line, 0-based column): block scalars (|, >)
    # start on the line after their key
    starts: dict[KeyPath, tuple[int, int]] = field(default_factory=dict)

    def line(self, path: KeyPath) -> int | None:
        """Line of `path`, or of its nearest ancestor that has one."""
        path = tuple(path)
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return self.lines.get(())

    def data_at(self, path: KeyPath) -> Any:
        """The raw value at `path`, or None."""
        node = self.data
        for part in path:
            try:
                node = node[part]
            except (KeyError, IndexError, TypeError):
                return None
        return node

    def problem(self, path: KeyPath, message: str) -> Problem:
        return Problem(message, file=self.file, line=self.line(path), path=format_path(path))


class _Loader(yaml.SafeLoader):
    pass


# YAML 1.1 (PyYAML) reads `1e-05` as a string: a float needs a dot there. JSON and YAML 1.2 write
# exponents without one (json.dumps(0.00001) == "1e-05"), so floats follow YAML 1.2 here.
_Loader.yaml_implicit_resolvers = {k: list(v) for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"))

MAX_NODES = 100_000        # values in one spec, aliases expanded (a spec is a few hundred)
MAX_BYTES = 10_000_000     # a spec file's size


_PLAIN_TAGS = {f"tag:yaml.org,2002:{t}" for t in ("map", "seq", "str", "int", "float", "bool", "null")}


class _Budget:
    """Guards against alias bombs: a node that contains itself, and specs that expand past
    MAX_NODES values."""

    def __init__(self) -> None:
        self.count = 0
        self.open: set[int] = set()


def _convert(node: yaml.Node, path: KeyPath, src: Source, problems: list[Problem], budget: _Budget) -> Any:
    budget.count += 1
    if budget.count > MAX_NODES:
        raise SpecError(problems=[Problem(f"the spec expands to more than {MAX_NODES:,} values (YAML aliases "
                                          "repeated inside each other?): expected a spec of plain size",
                                          file=src.file, line=node.start_mark.line + 1, path=format_path(path))])
    if id(node) in budget.open:
        raise SpecError(problems=[Problem("a YAML alias refers to a value that contains it: expected plain, "
                                          "finite data", file=src.file, line=node.start_mark.line + 1,
                                          path=format_path(path))])
    if isinstance(node, (yaml.MappingNode, yaml.SequenceNode)):
        budget.open.add(id(node))
        try:
            return _convert_inner(node, path, src, problems, budget)
        finally:
            budget.open.discard(id(node))
    return _convert_inner(node, path, src, problems, budget)


def _convert_inner(node: yaml.Node, path: KeyPath, src: Source, problems: list[Problem], budget: _Budget) -> Any:
    src.lines.setdefault(path, node.start_mark.line + 1)
    if node.tag not in _PLAIN_TAGS:
        problems.append(Problem(f"not allowed in a spec: the YAML tag {node.tag!r} (a spec is plain data: "
                                "mappings, lists, strings, numbers, booleans and null)",
                                file=src.file, line=node.start_mark.line + 1, path=format_path(path)))
        return None
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = _Loader.construct_scalar(_LOADER, key_node) if isinstance(key_node, yaml.ScalarNode) else None
            if not isinstance(key, str):
                problems.append(Problem("expected a string key", file=src.file,
                                        line=key_node.start_mark.line + 1, path=format_path(path)))
                continue
            if key in out:
                problems.append(Problem(f"duplicate key {key!r}: each key may appear once",
                                        file=src.file, line=key_node.start_mark.line + 1,
                                        path=format_path(path + (key,))))
                continue
            src.lines[path + (key,)] = key_node.start_mark.line + 1
            out[key] = _convert(value_node, path + (key,), src, problems, budget)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_convert(v, path + (i,), src, problems, budget) for i, v in enumerate(node.value)]
    if node.style in ("|", ">"):
        src.starts[path] = (node.start_mark.line + 2, 0)
    else:
        src.starts[path] = (node.start_mark.line + 1, node.start_mark.column + (1 if node.style in ("'", '"') else 0))
    return _LOADER.construct_object(node, deep=True)


_LOADER = _Loader("")


def load_yaml_text(text: str, file: str) -> Source:
    """Parse YAML/JSON text. Syntax errors become a SpecError with the line."""
    src = Source(None, file, text=text)
    try:
        node = yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark else None
        raise SpecError(problems=[Problem(f"not valid YAML: {e.problem or e}", file=file, line=line)]) from None
    except yaml.YAMLError as e:  # pragma: no cover - other YAML errors carry no mark
        raise SpecError(problems=[Problem(f"not valid YAML: {e}", file=file)]) from None
    if node is None:
        raise SpecError(problems=[Problem("the file is empty: expected a mapping with `rnnc: 1`", file=file)])
    problems: list[Problem] = []
    try:
        src.data = _convert(node, (), src, problems, _Budget())
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        raise SpecError(problems=[Problem(
            f"not allowed in a spec: {e.problem or e} (a spec is plain data: mappings, lists, "
            "strings and numbers; YAML tags are not accepted)",
            file=file, line=mark.line + 1 if mark else None)]) from None
    except yaml.YAMLError as e:  # pragma: no cover
        raise SpecError(problems=[Problem(f"not valid YAML: {e}", file=file)]) from None
    if problems:
        raise SpecError(problems=problems)
    return src


def load_yaml_file(path: str | Path) -> Source:
    p = Path(path)
    if not p.exists():
        raise SpecError(problems=[Problem("file not found", file=str(p))])
    if not p.is_file():
        raise SpecError(problems=[Problem("expected a spec file (YAML or JSON), got a directory or device",
                                          file=str(p))])
    try:
        with p.open("rb") as f:
            data = f.read(MAX_BYTES + 1)
        if len(data) > MAX_BYTES:
            raise SpecError(problems=[Problem(f"the file is larger than {MAX_BYTES // 1_000_000} MB: expected a "
                                              "spec (weights go in an .npz file)", file=str(p))])
        text = data.decode("utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise SpecError(problems=[Problem(f"cannot read the file: {e}", file=str(p))]) from None
    return load_yaml_text(text, str(p))
