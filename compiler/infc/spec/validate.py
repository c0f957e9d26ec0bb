"""Validate spec data against the schema and say what is wrong in plain words.

jsonschema's own messages name schema keywords; a spec author wants to read
`expected one of x86, arm, cuda, got 'x68'`. Each schema error becomes one
`Finding` (key path, message, where to point); for `oneOf` alternatives the one
that fits the value's type is the one reported.

A long list is checked item by item by jsonschema at ~10 us an item (a 1 MB list of
names: 1 s); `_Validator` checks an item with a plain schema (`{"type": "string"}`)
directly, and each distinct plain value once, and asks jsonschema only about the
items that fail, so every problem is still jsonschema's own. At most
`MAX_FINDINGS` problems are listed: a file with more is not a spec being fixed.
"""

from __future__ import annotations

import difflib
import itertools
import operator
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, NamedTuple

from jsonschema import Draft202012Validator, ValidationError, validators

from ..kernels import registry
from .schema import PATTERN_NAMES, STEP_SECTIONS
from .yaml import KeyPath

__all__ = ["Finding", "validate", "describe", "suggest", "MAX_FINDINGS"]

MAX_FINDINGS = 1000
"""Most schema problems listed; past them, one more says the list stops there."""

_TYPE_NAMES = {
    "string": "a string", "integer": "an integer", "number": "a number", "boolean": "true or false",
    "object": "a mapping", "array": "a list", "null": "nothing",
}


class Finding(NamedTuple):
    """A problem at `path`; `at` is the path whose value (or key, with `at_key`) it points to."""

    path: KeyPath
    message: str
    at: KeyPath | None = None
    at_key: bool = False
    is_type: bool = False


def describe(value: Any) -> str:
    """A value as a spec author wrote it: `'x68'`, `3`, `true`, `null`, `a list`."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return repr(value if len(value) <= 40 else value[:37] + "...")
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return f"{type(value).__name__} {value}"


def suggest(word: Any, choices: Iterable[str], *, known: str = "") -> str:
    """` (did you mean 'x'?)` for a likely typo; else `known` listing the choices, if asked."""
    choices = list(choices)
    if isinstance(word, str):
        close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
        if close:
            return f" (did you mean {close[0]!r}?)"
    return f" ({known}: {', '.join(choices)})" if known and choices else ""


def validate(data: Any, schema: dict[str, Any]) -> list[Finding]:
    """Every schema problem of `data` (up to `MAX_FINDINGS`), once each, a wrong type hiding other
    complaints on that value."""
    translated = (f for error in _Validator(schema).iter_errors(data) for f in _translate(error))
    found = list(itertools.islice(translated, MAX_FINDINGS + 1))
    more = len(found) > MAX_FINDINGS
    typed = {f.path for f in found if f.is_type}
    unique = list(dict.fromkeys(f for f in found[:MAX_FINDINGS] if f.is_type or f.path not in typed))
    if more:
        unique.append(Finding((), f"more problems than the {MAX_FINDINGS} listed: the list stops here"))
    return unique


_ITEMS = Draft202012Validator.VALIDATORS["items"]
_ANNOTATIONS = {"title", "description", "default", "examples", "$comment"}
_CLASSES: dict[str, tuple[type, ...]] = {"string": (str,), "number": (int, float), "integer": (int,)}
_BOUNDS = {"minimum": operator.ge, "maximum": operator.le,
           "exclusiveMinimum": operator.gt, "exclusiveMaximum": operator.lt}


def _items(validator: Any, items: Any, instance: Any, schema: dict[str, Any]) -> Iterator[ValidationError]:
    """jsonschema's `items`, asking it only about the items a plain test does not accept, and
    about each distinct plain value once (its verdict does not depend on where the value is)."""
    if not validator.is_type(instance, "array") or "prefixItems" in schema or not isinstance(items, dict):
        yield from _ITEMS(validator, items, instance, schema)
        return
    accepts = _plain_test(validator, items)
    valid: set[tuple[type, Any]] = set()
    wrong = 0
    for index, item in enumerate(instance):
        if accepts is not None and accepts(item):
            continue
        key = (item.__class__, item) if item is None or isinstance(item, str | int | float) else None
        if key is not None and key in valid:
            continue
        errors = list(validator.descend(item, items, path=index))
        if not errors and key is not None:
            valid.add(key)
        yield from errors
        wrong += bool(errors)
        if wrong > MAX_FINDINGS:  # no more are listed (a `oneOf` around it would collect them all)
            return


def _plain_test(validator: Any, sub: dict[str, Any]) -> Callable[[Any], bool] | None:
    """A test that `sub` accepts a value (False: ask jsonschema), when `sub` only says which
    type, bounds, choices or length; None when it says more."""
    if not set(sub) <= _ANNOTATIONS | {"type", "enum", "minLength", "maxLength", *_BOUNDS}:
        return None
    kinds = [sub["type"]] if isinstance(sub.get("type"), str) else sub.get("type")
    classes = {c for k in kinds or () for c in _CLASSES.get(k, ())}  # of_kind without the type checker
    bounds = [(op, sub[k]) for k, op in _BOUNDS.items() if k in sub]
    names = {e for e in sub["enum"] if isinstance(e, str)} if "enum" in sub else None
    lengths = (sub.get("minLength", 0), sub.get("maxLength"))
    is_type = validator.is_type

    def accepts(value: Any) -> bool:
        if kinds is not None and value.__class__ not in classes and not any(is_type(value, k) for k in kinds):
            return False
        if names is not None and not (value.__class__ is str and value in names):
            return False
        if bounds and is_type(value, "number") and not all(op(value, bound) for op, bound in bounds):
            return False
        short, long = lengths
        return not isinstance(value, str) or short <= len(value) and (long is None or len(value) <= long)

    return accepts


_Validator = validators.extend(Draft202012Validator, {"items": _items})


def _types(kind: str | Sequence[str]) -> str:
    kinds = [kind] if isinstance(kind, str) else list(kind)
    return " or ".join(_TYPE_NAMES.get(k, k) for k in kinds)


def _step_section(path: KeyPath) -> str | None:
    """`preprocess` or `postprocess` when `path` is a step item itself."""
    if len(path) == 2 and path[0] in STEP_SECTIONS and isinstance(path[1], int):
        return str(path[0])
    return None


def _step_message(section: str, name: Any) -> str:
    stage: registry.Stage = "pre" if STEP_SECTIONS[section] == "pre" else "post"
    other = "postprocess" if stage == "pre" else "preprocess"
    known = registry.names(stage)
    if name in known:  # a bare name, but the step needs parameters
        required = registry.get(name).required
        return (f"step {name!r} needs parameters: {', '.join(required)} "
                f"(write `- {name}: {{{required[0]}: ...}}`)")
    if name in registry.names("post" if stage == "pre" else "pre"):
        return f"step {name!r} belongs in {other}, not {section}"
    return f"unknown {section} step {describe(name)}" + suggest(name, known, known="known steps")


def _bound(error: ValidationError, op: str) -> str:
    sub: Any = error.schema
    noun = "an integer" if sub.get("type") == "integer" else "a number"
    return f"expected {noun} {op} {error.validator_value}, got {describe(error.instance)}"


def _translate(error: ValidationError) -> list[Finding]:
    path: KeyPath = tuple(error.absolute_path)
    # jsonschema types these as "maybe unset"; on a reported error they are all set
    kw: Any = error.validator
    value: Any = error.validator_value
    instance: Any = error.instance
    sub: Any = error.schema
    section = _step_section(path)
    if kw in ("oneOf", "anyOf"):
        return _alternatives(error, path)
    if kw == "type":
        hint = " (put it in quotes to make it a string)" if (
            value == "string" and isinstance(instance, int | float | bool)) else ""
        return [Finding(path, f"expected {_types(value)}, got {describe(instance)}{hint}", is_type=True)]
    if kw == "enum":
        if section:
            return [Finding(path, _step_message(section, instance))]
        choices = [str(c) for c in value]
        return [Finding(path, f"expected one of {', '.join(choices)}, got {describe(instance)}"
                              + suggest(instance, choices))]
    if kw == "required":
        return [Finding((*path, k), "missing required key", at=path)
                for k in value if k not in instance]
    if kw == "additionalProperties":
        props = list(sub.get("properties", {}))
        unknown = itertools.islice((k for k in instance if k not in props), MAX_FINDINGS + 1)
        return [Finding((*path, k),
                        _step_message(section, k) if section
                        else f"unknown key {k!r}" + suggest(k, props, known="known keys"),
                        at_key=True)
                for k in unknown]
    if kw == "pattern":
        wanted = PATTERN_NAMES.get(value, f"a string matching {value}")
        return [Finding(path, f"expected {wanted}, got {describe(instance)}")]
    ops = {"minimum": ">=", "exclusiveMinimum": ">", "maximum": "<=", "exclusiveMaximum": "<"}
    if kw in ops:
        return [Finding(path, _bound(error, ops[kw]))]
    if kw in ("minItems", "maxItems"):
        most = "least" if kw == "minItems" else "most"
        return [Finding(path, f"expected at {most} {value} item{'s' * (value != 1)}, got {len(instance)}")]
    if kw in ("minLength", "maxLength"):
        if kw == "minLength" and value == 1:
            return [Finding(path, "expected a non-empty string")]
        most = "least" if kw == "minLength" else "most"
        return [Finding(path, f"expected at {most} {value} characters, got {len(instance)}")]
    if kw in ("minProperties", "maxProperties"):
        return [Finding(path, _properties_message(section, kw, sub, instance))]
    return [Finding(path, error.message)]  # a keyword this schema does not use today


def _properties_message(section: str | None, kw: str, sub: dict[str, Any], instance: Any) -> str:
    keys = ", ".join(map(str, instance))
    if section and kw == "minProperties":
        return "expected a step name as key, got an empty mapping"
    if section:
        return (f"a step is a mapping with one key, the step name; got {len(instance)} keys ({keys}): "
                "write each step as its own list item")
    if kw == "minProperties":
        return f"expected at least one of {', '.join(sub.get('properties', {}))}, got an empty mapping"
    return f"expected at most {sub['maxProperties']} keys, got {len(instance)} ({keys})"


def _alternatives(error: ValidationError, path: KeyPath) -> list[Finding]:
    """Report the alternative whose type fits the value (the one its author meant)."""
    branches: dict[int, list[ValidationError]] = {}
    for e in error.context or []:
        branches.setdefault(int(e.relative_schema_path[0]), []).append(e)
    fitting = [errs for _, errs in sorted(branches.items())
               if not any(e.validator == "type" and not e.relative_path for e in errs)]
    if fitting:
        return [f for e in min(fitting, key=len) for f in _translate(e)]
    if not branches:  # more than one alternative matched: not possible with this schema's oneOfs
        return [Finding(path, "is ambiguous: it matches more than one alternative")]
    schema: Any = error.schema
    alternatives: Any = error.validator_value
    wanted = schema.get("title") or _types([t for alt in alternatives for t in _listed(alt.get("type"))])
    return [Finding(path, f"expected {wanted}, got {describe(error.instance)}", is_type=True)]


def _listed(kind: Any) -> list[str]:
    return [kind] if isinstance(kind, str) else list(kind or [])
