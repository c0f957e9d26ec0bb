"""Read a spec file as plain data, keeping where every key and value was written.

We read PyYAML's event stream ourselves (rather than `yaml.safe_load`) so that
every value keeps its 1-based line and column, duplicate keys are caught, and
every problem becomes a located message instead of an exception. Reading the
events in one pass, with the anchored values' events kept for their aliases, is
also what bounds a hostile file: nesting deeper than `MAX_DEPTH`, or aliases
that would expand past `MAX_ALIAS_VALUES` values or nest past
`MAX_ALIAS_DEPTH`, stop the reading with one located problem.

Events come from libyaml's parser when PyYAML has it (0.3 s per MB here; PyYAML's
own Python parser takes 3 s). The two read some YAML differently (fed the same
mutated specs, they differ on tabs, tags, block scalars, explicit keys,
directives, the other line breaks, and the place of an empty value in braces or
brackets), and PyYAML's reading is the one infc has always reported: a document
with any of these, or one libyaml rejects, is read by PyYAML's parser.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, cast

import yaml
from yaml.composer import ComposerError
from yaml.events import (
    AliasEvent,
    MappingEndEvent,
    MappingStartEvent,
    NodeEvent,
    ScalarEvent,
    SequenceEndEvent,
    SequenceStartEvent,
    StreamEndEvent,
)
from yaml.nodes import ScalarNode

from ..errors import PathPart

__all__ = [
    "KeyPath", "Mark", "Problem", "Document", "parse", "MAX_DEPTH", "MAX_ALIAS_VALUES", "MAX_ALIAS_DEPTH",
    "MAX_PROBLEMS",
]

KeyPath = tuple[PathPart, ...]
Mark = tuple[int, int]
Problem = tuple[KeyPath, Mark, str]
"""A located message: key path, (line, col), text."""

MAX_DEPTH = 100
"""Deepest a value may be nested (the length of its key path). A spec nests about 6 levels
(`preprocess[0].features.fields[2].categories[0]`); 100 is far past any real one, and keeps every
recursive reader of the data (jsonschema, copy.deepcopy, the defaults) far from
Python's recursion limit."""
MAX_ALIAS_VALUES = 10_000
"""Most values aliases may produce in all. Aliases let a spec reuse what it wrote
(a step's parameters: a handful of values; the example specs use none). 10,000
take 40 ms to expand; a billion-laughs document (9 levels of 9 references to the
level before: 9**9 values) stops there."""
MAX_ALIAS_DEPTH = 5
"""Most aliases that may be expanded inside one another (an alias inside an anchored
value that is itself reached through an alias ...). Reuse needs one or two levels."""
MAX_PROBLEMS = 1000
"""Most problems listed (duplicate keys, bad values, ...): a file with more is not a spec being fixed."""

_MAP_TAG = "tag:yaml.org,2002:map"
_SEQ_TAG = "tag:yaml.org,2002:seq"
_STR_TAG = "tag:yaml.org,2002:str"
_INT_TAG = "tag:yaml.org,2002:int"
_DECIMAL = re.compile("0|[1-9][0-9]{0,17}")  # an int without sign, base, `_` or `:`
_MERGE_TAG = "tag:yaml.org,2002:merge"
_PLAIN_TAGS = tuple(f"tag:yaml.org,2002:{kind}" for kind in ("int", "float", "bool", "null"))
_FastLoader: type[yaml.SafeLoader] | None = getattr(yaml, "CSafeLoader", None)  # libyaml, when PyYAML has it
_PYYAML_ONLY = re.compile("[\t!|>?%\x85\u2028\u2029\ufeff]")
"""Characters of the constructs libyaml and PyYAML read differently (a false alarm costs only time)."""


@dataclass
class Document:
    """A parsed spec: its data, the marks of values and of keys, and what was wrong."""

    data: Any = None
    marks: dict[KeyPath, Mark] = field(default_factory=dict)
    key_marks: dict[KeyPath, Mark] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    unusable: set[KeyPath] = field(default_factory=set)
    """Paths whose value could not be read (already a problem; read as null)."""


class _Differs(Exception):
    """libyaml met something PyYAML reads differently: read the document with PyYAML."""


class _Limit(Exception):
    """A bound on what reading may cost was reached: reading stops, with this last problem."""

    def __init__(self, path: KeyPath, mark: Any, message: str, before: list[Problem] | None = None) -> None:
        super().__init__(message)
        self.problems: list[Problem] = [*(before or []), (path, _mark(mark), message)]


def _mark(mark: Any) -> Mark:
    """A yaml.Mark (PyYAML's, or libyaml's) as 1-based (line, col)."""
    return (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)


def _composer_error(context: str | None, context_mark: Any, problem: str, problem_mark: Any) -> ComposerError:
    """The error PyYAML's composer raises (its message is what `parse` reports)."""
    return ComposerError(context, context_mark, problem, problem_mark)


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
        yaml.reader.Reader(text)  # PyYAML's reader rejects unprintable characters here
    except yaml.reader.ReaderError as e:
        doc.problems.append(((), _line_col(text, e.position), f"invalid YAML: {e.reason}"))
        return doc
    # a document that is not YAML, or that reaches a bound, is that one problem
    try:
        return _read(text)
    except _Limit as e:
        doc.problems += e.problems
    except yaml.MarkedYAMLError as e:
        doc.problems.append(((), _mark(e.problem_mark or e.context_mark), _syntax_message(e)))
    except yaml.YAMLError as e:  # other scanner problems carry no mark
        doc.problems.append(((), (1, 1), f"invalid YAML: {e}"))
    return doc


def _syntax_message(e: yaml.MarkedYAMLError) -> str:
    if e.context and str(e.problem).startswith("but "):  # "expected a single document ..., but found"
        return f"invalid YAML: {e.context}, {e.problem}"
    message = f"invalid YAML: {e.problem}"
    if e.context and e.context_mark is not None and e.context_mark is not e.problem_mark:
        line, col = _mark(e.context_mark)
        message += f" ({e.context} at line {line}, column {col})"
    return message


def _read(text: str) -> Document:
    """The document, read with libyaml's parser where it reads as PyYAML's would, else with PyYAML's."""
    if _FastLoader is not None and not _PYYAML_ONLY.search(text):
        loader = _FastLoader(text)
        try:
            return _Reader(loader, fast=True).document()
        except ComposerError:  # ours, from the events: the same whichever parser made them
            raise
        except (yaml.YAMLError, _Differs):  # PyYAML's parser says what is wrong, as it always has
            pass
        finally:
            loader.dispose()
    loader = yaml.SafeLoader(text)
    try:
        return _Reader(loader).document()
    finally:
        loader.dispose()


class _Reader:
    """Reads one document from a loader's events into dicts, lists and scalars, recording marks
    and problems. It builds what PyYAML's composer and constructor would (an alias is a copy of
    the value its anchor names, marked where that value was written) in one pass: the events of
    anchored values are kept, and an alias replays them where it is used."""

    def __init__(self, loader: yaml.SafeLoader, fast: bool = False) -> None:
        self.loader = loader
        self.fast = fast  # libyaml's events: stop where they may differ from PyYAML's
        self.flow = 0  # the flow collections (`[...]`, `{...}`) being read
        self.doc = Document()
        self.log: list[Any] = []  # the events of anchored values, once each
        self.anchors: dict[str, tuple[int, int]] = {}  # anchor -> its value's span of `log`
        self.recording = 0  # anchored collections being read from the file
        self.replays: list[Iterator[Any]] = []  # the events of the aliases being expanded ...
        self.expanding: list[AliasEvent] = []  # ... and those aliases, outermost first
        self.open: set[str] = set()  # anchored values being read: an alias to one is a cycle
        self.alias_values = 0
        # plain scalars' tags by first character; None: the loader has more kinds of resolver
        custom = loader.yaml_path_resolvers or None in loader.yaml_implicit_resolvers
        self.resolvers: dict[Any, list[tuple[str, Any]]] | None = None if custom else loader.yaml_implicit_resolvers
        self.plain = {t: loader.yaml_constructors[t] for t in _PLAIN_TAGS if t in loader.yaml_constructors}

    def next(self) -> Any:
        """The next event: the innermost expanding alias's, else the file's (kept while anchored)."""
        if self.replays:
            return next(self.replays[-1])
        event = self.loader.get_event()
        if self.recording:
            self.log.append(event)
        return event

    def document(self) -> Document:
        """Read the stream's one document (data None when the stream has none)."""
        loader = self.loader
        loader.get_event()  # stream start
        if loader.check_event(StreamEndEvent):
            return self.doc
        loader.get_event()  # document start
        root = self.next()
        if self.fast and isinstance(root, ScalarEvent) and not root.value and not root.style:
            raise _Differs  # an empty document (`---`): libyaml marks it after the end
        self.doc.data = self.node(root, (), True)
        loader.get_event()  # document end
        if not loader.check_event(StreamEndEvent):
            raise _composer_error("expected a single document in the stream", root.start_mark,
                                  "but found another document", loader.get_event().start_mark)
        return self.doc

    def _loop(self) -> tuple[Any, Any, Any, dict[KeyPath, Mark]]:
        """What a collection's loop calls. Whether aliases are being expanded or anchored values
        kept is the same at every item of one collection: without either, events come straight
        from the loader."""
        next_event = self.next if self.replays or self.recording else self.loader.get_event
        return next_event, self.node, self.scalar, self.doc.marks

    def problem(self, path: KeyPath, event: NodeEvent, message: str) -> None:
        problems = self.doc.problems
        if len(problems) == MAX_PROBLEMS:
            raise _Limit((), None, f"more problems than the {MAX_PROBLEMS} listed: reading stops here", problems)
        problems.append((path, _mark(event.start_mark), message))

    def node(self, event: NodeEvent, path: KeyPath, keep: bool) -> Any:
        """The value starting with `event`; `keep` False reads past it (anchors still count)."""
        if self.expanding:
            self.count(path)
        elif len(path) > MAX_DEPTH:
            raise _Limit(path, event.start_mark, f"nested more than {MAX_DEPTH} levels deep (a spec nests about 6)")
        if isinstance(event, AliasEvent):
            return self.alias(event, path, keep)
        anchor, recorded = event.anchor, self.register(event)
        if not recorded and anchor in self.open:  # met again inside an alias's expansion: `a: &x [*x]`, one level down
            if keep:
                self.cycle(event, path)
            keep, anchor = False, None
        if keep:
            self.doc.marks[path] = _mark(event.start_mark)
        if isinstance(event, ScalarEvent):
            return self.scalar(event, path) if keep else None
        if anchor is not None:
            self.open.add(anchor)
            self.recording += recorded
        if isinstance(event, SequenceStartEvent):
            out = self.sequence(event, path, keep)
        else:
            out = self.mapping(cast(MappingStartEvent, event), path, keep)
        if anchor is not None:
            self.open.discard(anchor)
            self.recording -= recorded
            if recorded:
                self.anchors[anchor] = (self.anchors[anchor][0], len(self.log))
        return out

    def register(self, event: NodeEvent) -> bool:
        """Start keeping the events of a value whose anchor is written here (not replayed): True if so."""
        anchor = event.anchor
        if anchor is None or self.replays:
            return False
        if anchor in self.anchors:
            first = self.log[self.anchors[anchor][0]]
            raise _composer_error(f"found duplicate anchor {anchor!r}; first occurrence", first.start_mark,
                                  "second occurrence", event.start_mark)
        if not self.recording:  # else `next` has logged it
            self.log.append(event)
        self.anchors[anchor] = (len(self.log) - 1, len(self.log))
        return True

    def span(self, alias: AliasEvent) -> tuple[int, int]:
        """Where in `log` the value `alias` names is; PyYAML's error when no anchor names one."""
        span = self.anchors.get(str(alias.anchor))
        if span is None:
            raise _composer_error(None, None, f"found undefined alias {alias.anchor!r}", alias.start_mark)
        return span

    def alias(self, event: AliasEvent, path: KeyPath, keep: bool) -> Any:
        span = self.span(event)
        if not keep:
            return None
        if event.anchor in self.open:  # an alias inside its own anchor: `a: &x [*x]`
            self.cycle(self.log[span[0]], path)
            return None
        if len(self.expanding) == MAX_ALIAS_DEPTH:
            chain = " > ".join(f"*{a.anchor}" for a in [*self.expanding, event])
            raise _Limit(path, event.start_mark, f"alias *{event.anchor}: aliases may nest {MAX_ALIAS_DEPTH} "
                                                 f"deep, here {chain}; write the value out")
        log = self.log
        self.expanding.append(event)
        self.replays.append(log[i] for i in range(*span))
        out = self.node(self.next(), path, True)
        self.replays.pop()
        self.expanding.pop()
        return out

    def cycle(self, event: NodeEvent, path: KeyPath) -> None:
        self.doc.marks[path] = _mark(event.start_mark)
        self.problem(path, event, "an alias refers to a value that contains it")
        self.doc.unusable.add(path)

    def count(self, path: KeyPath) -> None:
        """One more value read through an alias: past the bounds, the alias being expanded is the problem."""
        self.alias_values += 1
        alias = self.expanding[-1]
        if self.alias_values > MAX_ALIAS_VALUES:
            raise _Limit(path, alias.start_mark, f"alias *{alias.anchor}: aliases may expand to {MAX_ALIAS_VALUES} "
                                                 "values in all, these expand to more; write the values out")
        if len(path) > MAX_DEPTH:
            raise _Limit(path, alias.start_mark, f"alias *{alias.anchor}: nests values more than {MAX_DEPTH} "
                                                 f"levels deep (a spec nests about 6)")

    def sequence(self, start: SequenceStartEvent, path: KeyPath, keep: bool) -> Any:
        if keep and start.tag not in (None, "!", _SEQ_TAG):
            self.problem(path, start, f"unsupported YAML tag {start.tag!r}")
        flow = bool(start.flow_style)
        self.flow += flow
        out: list[Any] = []
        next_event, node, scalar, marks = self._loop()
        plain = keep and not self.expanding and len(path) < MAX_DEPTH  # a plain item skips `node`
        while not isinstance(event := next_event(), SequenceEndEvent):
            at = (*path, len(out))
            if plain and event.__class__ is ScalarEvent and event.anchor is None:
                marks[at] = _mark(event.start_mark)
                out.append(scalar(event, at))
            else:
                out.append(node(event, at, keep))
        self.flow -= flow
        return out if keep else None

    def mapping(self, start: MappingStartEvent, path: KeyPath, keep: bool) -> Any:
        if keep and start.tag not in (None, "!", _MAP_TAG):
            self.problem(path, start, f"unsupported YAML tag {start.tag!r}")
        flow = bool(start.flow_style)
        self.flow += flow
        out: dict[str, Any] = {}
        next_event, node, scalar, marks = self._loop()
        plain = not self.expanding and len(path) < MAX_DEPTH  # a plain value skips `node`
        while not isinstance(event := next_event(), MappingEndEvent):
            if not keep:
                node(event, (*path, "?"), False)
            key_path = self.key(event, path, out) if keep else None
            if key_path is None:  # no usable key: read past its value
                node(next_event(), (*path, "?"), False)
                continue
            key, event = str(key_path[-1]), next_event()
            if plain and event.__class__ is ScalarEvent and event.anchor is None:
                marks[key_path] = _mark(event.start_mark)
                out[key] = scalar(event, key_path)
            else:
                out[key] = node(event, key_path, True)
        self.flow -= flow
        return out if keep else None

    def key(self, event: NodeEvent, path: KeyPath, out: dict[str, Any]) -> KeyPath | None:
        """The key path of the key starting with `event`; None (a problem) when it cannot be one."""
        written = event
        if isinstance(event, AliasEvent):  # the value its anchor names, as PyYAML composes it
            event = self.log[self.span(event)[0]]
        if not isinstance(event, ScalarEvent):
            self.problem(path, event, "expected a plain key (a name), got a list or mapping")
            if written is event:
                self.node(event, (*path, "?"), False)
            return None
        if written is event:
            self.register(event)
        tag = self.tag(event)
        if tag == _MERGE_TAG:
            self.problem(path, event, "YAML merge keys (<<) are not supported; write the keys out")
            return None
        key = self.scalar(event, path, tag)
        if not isinstance(key, str):
            self.problem(path, event, f"expected a name as key, got {event.value!r}")
            return None
        key_path = (*path, key)
        if key in out:
            line, _ = self.doc.key_marks[key_path]
            self.problem(key_path, event, f"duplicate key {key!r} (first written on line {line})")
            return None
        self.doc.key_marks[key_path] = _mark(event.start_mark)
        return key_path

    def tag(self, event: ScalarEvent) -> str:
        """The scalar's tag, resolved as PyYAML's composer resolves it (`BaseResolver.resolve`,
        inlined for a SafeLoader's resolvers: a third of the reading time was its overhead)."""
        if event.tag not in (None, "!"):
            return str(event.tag)
        if not event.implicit[0]:  # quoted, or tagged `!`: a string
            return _STR_TAG
        value = event.value
        if not value and self.flow and self.fast:  # `{a: }`: libyaml marks it where the next token starts
            raise _Differs
        if self.resolvers is None:
            return str(self.loader.resolve(ScalarNode, value, event.implicit))
        for tag, regexp in self.resolvers.get(value[:1], ()):
            if regexp.match(value):
                return str(tag)
        return _STR_TAG

    def scalar(self, event: ScalarEvent, path: KeyPath, tag: str | None = None) -> Any:
        tag = self.tag(event) if tag is None else tag
        value = event.value
        if tag == _STR_TAG:  # what SafeConstructor.construct_yaml_str returns, without its overhead
            return value
        if tag == _INT_TAG and _DECIMAL.fullmatch(value):  # construct_yaml_int's answer, at a tenth of its cost
            return int(value)
        node = ScalarNode(tag, value, style=event.style)  # marks: only for messages we do not show
        construct = self.plain.get(tag)
        try:  # a number, true/false or null: what construct_object would call, without its bookkeeping
            value = construct(self.loader, node) if construct else self.loader.construct_object(node, deep=True)
        except yaml.constructor.ConstructorError as e:
            self.problem(path, event, f"unsupported YAML value: {e.problem}")
            self.doc.unusable.add(path)
            return None
        except (ValueError, KeyError, IndexError, AttributeError):  # SafeConstructor's: `!!float x`, `!!bool x`
            shown, written = tag.replace("tag:yaml.org,2002:", "!!"), event.value
            written = written if len(written) <= 40 else written[:37] + "..."
            self.problem(path, event, f"unsupported YAML value: {written!r} is not a valid {shown}")
            self.doc.unusable.add(path)
            return None
        if isinstance(value, float) and not math.isfinite(value):
            self.problem(path, event, f"expected a finite number, got {event.value}")
        return value
