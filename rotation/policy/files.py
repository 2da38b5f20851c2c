"""Policy YAML with the line of every key, and validation errors as ``file:line: field: message``.

The YAML is composed into nodes (never ``yaml.load``) and turned into plain data by hand, so
every key and list item keeps its line, duplicate keys are caught, and no input can do more
than fail with a :class:`PolicyFileError`: recursive aliases, alias bombs, deep nesting,
non-string keys and unconstructible scalars all become one clear error.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError
from pydantic_core import ErrorDetails

from rotation.errors import PolicyError, PolicyFileError
from rotation.schema import short_repr

__all__ = [
    "Loc",
    "YamlDocument",
    "field_path",
    "parse_yaml",
    "read_yaml",
    "validation_errors",
]

#: A path into the data: mapping keys and list indexes, as in pydantic's error ``loc``.
Loc = tuple[str | int, ...]

MAX_FILE_BYTES = 1 << 20
#: Expanded nodes per document: a policy file has a few hundred; aliases can multiply them.
MAX_NODES = 50_000
MAX_DEPTH = 64

_STR_TAG = "tag:yaml.org,2002:str"
_MAP_TAG = "tag:yaml.org,2002:map"
_SEQ_TAG = "tag:yaml.org,2002:seq"
_NUMBER_TAGS = {"tag:yaml.org,2002:int", "tag:yaml.org,2002:float"}


@dataclass
class YamlDocument:
    """Plain data (dicts with str keys, lists, scalars) and the 1-based line of each path."""

    name: str
    data: Any
    lines: dict[Loc, int] = field(default_factory=dict)

    def line_of(self, loc: Sequence[object]) -> int | None:
        """The line of the deepest node of ``loc`` that exists in the file."""
        path = tuple(loc)
        for end in range(len(path), -1, -1):
            line = self.lines.get(path[:end])  # type: ignore[arg-type]
            if line is not None:
                return line
        return None

    def error(self, loc: Sequence[str | int], message: str) -> PolicyError:
        return PolicyError(self.name, self.line_of(loc), field_path(loc), message)


def field_path(loc: Iterable[object]) -> str:
    """``("policies", 0, "schedule")`` -> ``policies[0].schedule``."""
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


def read_yaml(path: Path) -> YamlDocument:
    """Read and compose ``path``; any problem raises :class:`PolicyFileError`."""
    name = str(path)
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise PolicyFileError(
            [PolicyError(name, None, "", f"cannot read the file: {reason}")]
        ) from None
    if len(raw) > MAX_FILE_BYTES:
        raise PolicyFileError(
            [PolicyError(name, None, "", f"larger than {MAX_FILE_BYTES} bytes; split it up")]
        )
    return parse_yaml(raw, name)


def parse_yaml(source: bytes | str, name: str) -> YamlDocument:
    """Compose one YAML document from ``source`` into a :class:`YamlDocument`."""
    loader: yaml.SafeLoader | None = None
    try:
        _check_nesting(source, name)
        loader = yaml.SafeLoader(source)  # reads the first bytes: may already fail
        node = loader.get_single_node()
        if node is None:
            raise PolicyFileError(
                [
                    PolicyError(
                        name,
                        1,
                        "",
                        "the file is empty: expected a policy mapping or 'policies: [...]'",
                    )
                ]
            )
        doc = YamlDocument(name, None)
        doc.data = _Converter(loader, doc).convert(node, (), 0)
        return doc
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        problem = exc.problem or exc.context or "invalid YAML"
        raise PolicyFileError([PolicyError(name, line, "", f"invalid YAML: {problem}")]) from None
    except yaml.reader.ReaderError as exc:  # bad encoding or a control character
        line = _line_at(source, exc.position)
        char = exc.character
        shown = f"#x{char:04x}" if isinstance(char, int) else repr(char)
        message = f"invalid YAML: unacceptable character {shown}: {exc.reason}"
        raise PolicyFileError([PolicyError(name, line, "", message)]) from None
    except yaml.YAMLError as exc:
        text = " ".join(str(exc).split())
        raise PolicyFileError([PolicyError(name, None, "", f"invalid YAML: {text}")]) from None
    except RecursionError:
        raise PolicyFileError([PolicyError(name, None, "", "YAML nested too deeply")]) from None
    finally:
        if loader is not None:
            loader.dispose()


_OPENS = (
    yaml.BlockMappingStartToken,
    yaml.BlockSequenceStartToken,
    yaml.FlowMappingStartToken,
    yaml.FlowSequenceStartToken,
)
_CLOSES = (yaml.BlockEndToken, yaml.FlowMappingEndToken, yaml.FlowSequenceEndToken)


def _check_nesting(source: bytes | str, name: str) -> None:
    """Refuse deep nesting with its line before the (recursive) composer meets it."""
    depth = 0
    for token in yaml.scan(source, Loader=yaml.SafeLoader):
        if isinstance(token, _OPENS):
            depth += 1
            if depth > MAX_DEPTH:
                line = token.start_mark.line + 1
                message = f"nested more than {MAX_DEPTH} levels deep"
                raise PolicyFileError([PolicyError(name, line, "", message)])
        elif isinstance(token, _CLOSES):
            depth -= 1


def _line_at(source: bytes | str, position: int) -> int:
    """The 1-based line of character ``position`` (bytes are read as UTF-8 for counting)."""
    text = source if isinstance(source, str) else source.decode("utf-8", errors="replace")
    return text.count("\n", 0, max(0, position)) + 1


class _Converter:
    """Nodes to plain data, recording lines; refuses what a policy file never needs."""

    def __init__(self, loader: yaml.SafeLoader, doc: YamlDocument) -> None:
        self.loader = loader
        self.doc = doc
        self.count = 0
        self.active: set[int] = set()

    def fail(self, node: yaml.Node, loc: Loc, message: str) -> PolicyFileError:
        line = node.start_mark.line + 1
        return PolicyFileError([PolicyError(self.doc.name, line, field_path(loc), message)])

    def convert(self, node: yaml.Node, loc: Loc, depth: int) -> Any:
        self.count += 1
        if self.count > MAX_NODES:
            raise self.fail(node, loc, f"more than {MAX_NODES} YAML nodes (alias expansion?)")
        if depth > MAX_DEPTH:
            raise self.fail(node, loc, f"nested more than {MAX_DEPTH} levels deep")
        self.doc.lines.setdefault(loc, node.start_mark.line + 1)
        if isinstance(node, yaml.ScalarNode):
            return self.scalar(node, loc)
        if id(node) in self.active:
            raise self.fail(node, loc, "a recursive alias refers to itself")
        self.active.add(id(node))
        try:
            if isinstance(node, yaml.SequenceNode) and node.tag == _SEQ_TAG:
                return [
                    self.convert(item, (*loc, i), depth + 1) for i, item in enumerate(node.value)
                ]
            if isinstance(node, yaml.MappingNode) and node.tag == _MAP_TAG:
                return self.mapping(node, loc, depth)
            raise self.fail(node, loc, f"unsupported YAML tag {node.tag!r}")
        finally:
            self.active.discard(id(node))

    def mapping(self, node: yaml.MappingNode, loc: Loc, depth: int) -> dict[str, Any]:
        first_seen: dict[str, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.key(key_node, loc)
            line = key_node.start_mark.line + 1
            if key in first_seen:
                raise self.fail(
                    key_node,
                    (*loc, key),
                    f"duplicate key {key!r} (first at line {first_seen[key]})",
                )
            first_seen[key] = line
        self.loader.flatten_mapping(node)  # applies `<<: *anchor` merges
        pairs = {self.key(k, loc): (k, v) for k, v in node.value}  # own keys follow merged ones
        result: dict[str, Any] = {}
        for key, (key_node, value_node) in pairs.items():
            self.doc.lines[(*loc, key)] = key_node.start_mark.line + 1
            result[key] = self.convert(value_node, (*loc, key), depth + 1)
        return result

    def key(self, node: yaml.Node, loc: Loc) -> str:
        if not isinstance(node, yaml.ScalarNode):
            raise self.fail(node, loc, "a key must be a plain name, not a list or mapping")
        # `on:`, `1:`, `null:`: the text as written, so the schema can name the unknown field.
        return str(node.value)

    def scalar(self, node: yaml.ScalarNode, loc: Loc) -> Any:
        if node.tag in _NUMBER_TAGS and node.style is None and ":" in node.value:
            # YAML 1.1 reads 22:00 as the base-60 number 1320; nobody means that here.
            return str(node.value)
        if node.tag == _STR_TAG:
            return str(node.value)
        try:
            return self.loader.construct_object(node, deep=True)
        except yaml.YAMLError as exc:
            problem = getattr(exc, "problem", None) or str(exc)
            raise self.fail(node, loc, f"invalid value: {problem}") from None
        except Exception:  # a scalar PyYAML resolved but cannot build, e.g. 2024-02-30
            raise self.fail(node, loc, f"invalid value {short_repr(node.value)}") from None


def validation_errors(
    exc: ValidationError,
    doc: YamlDocument,
    prefix: Loc = (),
    known_fields: Callable[[Loc], Sequence[str]] | None = None,
) -> list[PolicyError]:
    """Pydantic's errors located in ``doc``: each ``loc`` (under ``prefix``) mapped to a line."""
    result: list[PolicyError] = []
    for detail in exc.errors(include_url=False):
        loc: Loc = (*prefix, *(p for p in detail["loc"] if isinstance(p, str | int)))
        fields: Sequence[str] = ()
        if detail["type"] == "extra_forbidden" and known_fields is not None:
            fields = known_fields(loc[len(prefix) : -1])
        result.append(doc.error(loc, _message(detail, fields)))
    return result


def _message(detail: ErrorDetails, fields: Sequence[str]) -> str:
    kind = detail["type"]
    ctx = detail.get("ctx") or {}
    if kind == "value_error" and "error" in ctx:
        return str(ctx["error"])
    if kind == "missing":
        return "required field is missing"
    if kind == "extra_forbidden":
        name = str(detail["loc"][-1]) if detail["loc"] else "?"
        text = f"unknown field {name!r}"
        close = difflib.get_close_matches(name, fields, n=1)
        if close:
            return f"{text}; did you mean {close[0]!r}?"
        return f"{text}; known fields: {', '.join(fields)}" if fields else text
    message = detail["msg"]
    value = detail.get("input")
    if isinstance(value, str | int | float) and not isinstance(value, bool):
        message += f", got {short_repr(value)}"
    return message
