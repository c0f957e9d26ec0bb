"""Read a spec file as plain data, keeping where every key and value was written.

PyYAML composes the document into nodes that carry marks; we walk those nodes
ourselves (rather than `yaml.safe_load`) so that every value keeps its 1-based
line and column, duplicate keys are caught, and every problem becomes a
located message instead of an exception.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from .errors import PathPart

__all__ = ["KeyPath", "Mark", "Problem", "Document", "parse"]

KeyPath = tuple[PathPart, ...]
Mark = tuple[int, int]
Problem = tuple[KeyPath, Mark, str]
"""A located message: key path, (line, col), text."""

_MAP_TAG = "tag:yaml.org,2002:map"
_SEQ_TAG = "tag:yaml.org,2002:seq"


@dataclass
class Document:
    """A parsed spec: its data, the marks of values and of keys, and what was wrong."""

    data: Any = None
    marks: dict[KeyPath, Mark] = field(default_factory=dict)
    key_marks: dict[KeyPath, Mark] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    unusable: set[KeyPath] = field(default_factory=set)
    """Paths whose value could not be read (already a problem; read as null)."""


def _mark(mark: yaml.Mark | None) -> Mark:
    return (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)


def _line_col(text: str, index: int) -> Mark:
    line = text.count("\n", 0, index) + 1
    return line, index - (text.rfind("\n", 0, index) + 1) + 1


def parse(raw: bytes) -> Document:
    """Decode and parse `raw`; a document that cannot be parsed has `data` None and problems."""
    doc = Document()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        col = e.start - (raw.rfind(b"\n", 0, e.start) + 1) + 1
        doc.problems.append(((), (line, col), f"not UTF-8 text: byte 0x{raw[e.start]:02x}"))
        return doc
    try:
        loader = yaml.SafeLoader(text)  # the reader rejects unprintable characters here
    except yaml.reader.ReaderError as e:
        doc.problems.append(((), _line_col(text, e.position), f"invalid YAML: {e.reason}"))
        return doc
    try:
        node = loader.get_single_node()
    except yaml.MarkedYAMLError as e:
        doc.problems.append(((), _mark(e.problem_mark or e.context_mark), _syntax_message(e)))
        return doc
    except yaml.YAMLError as e:  # other scanner problems carry no mark
        doc.problems.append(((), (1, 1), f"invalid YAML: {e}"))
        return doc
    finally:
        loader.dispose()
    if node is not None:
        doc.data = _Walker(loader, doc).value(node, (), frozenset())
    return doc


def _syntax_message(e: yaml.MarkedYAMLError) -> str:
    if e.context and str(e.problem).startswith("but "):  # "expected a single document ..., but found"
        return f"invalid YAML: {e.context}, {e.problem}"
    message = f"invalid YAML: {e.problem}"
    if e.context and e.context_mark is not None and e.context_mark is not e.problem_mark:
        line, col = _mark(e.context_mark)
        message += f" ({e.context} at line {line}, column {col})"
    return message


class _Walker:
    """Turns composed nodes into dicts, lists and scalars, recording marks and problems."""

    def __init__(self, loader: yaml.SafeLoader, doc: Document) -> None:
        self.loader = loader
        self.doc = doc

    def problem(self, path: KeyPath, node: Node, message: str) -> None:
        self.doc.problems.append((path, _mark(node.start_mark), message))

    def value(self, node: Node, path: KeyPath, active: frozenset[int]) -> Any:
        self.doc.marks[path] = _mark(node.start_mark)
        if id(node) in active:  # an alias inside its own anchor: `a: &x [*x]`
            self.problem(path, node, "an alias refers to a value that contains it")
            self.doc.unusable.add(path)
            return None
        active = active | {id(node)}
        if isinstance(node, MappingNode):
            return self.mapping(node, path, active)
        if isinstance(node, SequenceNode):
            if node.tag != _SEQ_TAG:
                self.problem(path, node, f"unsupported YAML tag {node.tag!r}")
            return [self.value(item, (*path, i), active) for i, item in enumerate(node.value)]
        return self.scalar(node, path)

    def mapping(self, node: MappingNode, path: KeyPath, active: frozenset[int]) -> dict[str, Any]:
        if node.tag != _MAP_TAG:
            self.problem(path, node, f"unsupported YAML tag {node.tag!r}")
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, ScalarNode):
                self.problem(path, key_node, "expected a plain key (a name), got a list or mapping")
                continue
            if key_node.tag == "tag:yaml.org,2002:merge":
                self.problem(path, key_node, "YAML merge keys (<<) are not supported; write the keys out")
                continue
            key = self.scalar(key_node, path)
            if not isinstance(key, str):
                self.problem(path, key_node, f"expected a name as key, got {key_node.value!r}")
                continue
            key_path = (*path, key)
            if key in out:
                line, _ = self.doc.key_marks[key_path]
                self.problem(key_path, key_node, f"duplicate key {key!r} (first written on line {line})")
                continue
            self.doc.key_marks[key_path] = _mark(key_node.start_mark)
            out[key] = self.value(value_node, key_path, active)
        return out

    def scalar(self, node: Node, path: KeyPath) -> Any:
        try:
            value = self.loader.construct_object(node, deep=True)
        except yaml.constructor.ConstructorError as e:
            self.problem(path, node, f"unsupported YAML value: {e.problem}")
            self.doc.unusable.add(path)
            return None
        if isinstance(value, float) and not math.isfinite(value):
            self.problem(path, node, f"expected a finite number, got {node.value}")
        return value
