"""Tabular requests: JSON rows (one object per row, in a BYTES tensor) -> a float32 matrix.

The `features` pre step of a bundle calls `decode_rows` from its generated
`kernels/pre.py`. Each field is looked up by name in every row and written to
its column as float32:

- `float32` fields take any JSON number (not `true`/`false`); numbers beyond
  float32's range, and Python json's `NaN`/`Infinity` literals, arrive as
  NaN/+-inf: later steps such as `fill_missing` and `clip` may map them, and
  whatever is still non-finite when pre-processing ends fails the request
  (400 naming the row and the model input; `Pipeline.check_finite`) unless the
  spec sets `serving.allow_non_finite`.
- `int32`/`int64` fields take JSON integers within the type's range.
- `bool` fields take `true`/`false` (1.0/0.0).
- `category` fields take a string or integer looked up in the field's
  categories: the column holds its index; an unknown value holds -1 (the
  unknown code; `one_hot` maps it to zeros or its unknown slot), or fails the
  request when the field says `unknown: error`.

A missing field (absent key or `null`) is NaN when the field is optional and
fails the request when it is required. Every failure is a `RequestError`
(HTTP 400 for that request only) naming the row and the field.
JSON parsing is orjson where it is installed and gives the standard library's answer
(`_json`), else the standard library's `json`; not Numba work.
"""

from __future__ import annotations

import itertools
import json
import math
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from . import _json
from .abi import RequestError

__all__ = ["Field", "KINDS", "UNKNOWN", "decode_rows", "parse_row"]

KINDS = ("float32", "int32", "int64", "bool", "category")
UNKNOWN = -1.0
"""The code of a category value that is not in the field's table."""

_LIMITS = {"int32": (-(2**31), 2**31 - 1), "int64": (-(2**63), 2**63 - 1)}
_MISSING = object()
_decode = json.JSONDecoder().decode


@dataclass(frozen=True)
class Field:
    """One named field of a row and how its JSON value becomes a float32."""

    name: str
    kind: str = "float32"
    required: bool = True
    categories: tuple[str | int, ...] = ()
    unknown_error: bool = False
    """`category` only: an unknown value fails the request instead of taking code -1."""
    _codes: dict[tuple[type, str | int], int] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"field {self.name!r}: kind must be one of {KINDS}, got {self.kind!r}")
        # keyed by (type, value): "1" and 1 are different categories, and True is not 1
        self._codes.update({(type(c), c): i for i, c in enumerate(self.categories)})

    def convert(self, value: Any, where: str) -> float:
        """The float32 value of this field's JSON `value` (`_MISSING` when absent)."""
        if value is None or value is _MISSING:
            if self.required:
                raise RequestError(f"{where}: field {self.name!r} is required but missing")
            return math.nan
        kind, vtype = self.kind, type(value)
        if kind == "category":
            code = self._codes.get((vtype, value)) if vtype in (str, int) else None
            if code is not None:
                return float(code)
            if self.unknown_error or vtype not in (str, int):
                raise RequestError(f"{where}: field {self.name!r} must be one of its categories "
                                   f"{list(self.categories)}, got {_shown(value)}")
            return UNKNOWN
        if kind == "bool":
            if vtype is not bool:
                raise RequestError(f"{where}: field {self.name!r} must be true or false, got {_shown(value)}")
            return 1.0 if value else 0.0
        if kind in _LIMITS:
            low, high = _LIMITS[kind]
            if vtype is not int or not low <= value <= high:
                raise RequestError(f"{where}: field {self.name!r} must be an integer ({kind}), got {_shown(value)}")
            return float(value)
        if vtype is float:
            return value  # type: ignore[no-any-return]
        if vtype is int:
            try:
                return float(value)
            except OverflowError:  # beyond float64: +-inf, as beyond float32
                return math.inf if value > 0 else -math.inf
        raise RequestError(f"{where}: field {self.name!r} must be a number, got {_shown(value)}")


def _shown(value: Any) -> str:
    text = json.dumps(value)
    return f"{type(value).__name__ if not isinstance(value, str) else 'the string'} {text[:60]}"


def _fast_loads(raw: bytes) -> Any:
    """`raw` parsed by orjson where it gives the standard library's answer (`_json.loads`' rule), else `_MISSING`:
    a row it refuses (NaN literals, malformed, not UTF-8) is left to `json` and its messages."""
    try:
        return _json.loads_fast(raw)
    except ValueError:
        return _MISSING


def parse_row(raw: Any, where: str) -> dict[str, Any]:
    """One row's JSON object (`raw`: bytes or str), or a RequestError naming `where`."""
    row = _fast_loads(raw) if _json.FAST and isinstance(raw, bytes) else _MISSING
    try:
        if row is _MISSING:
            text = raw.decode() if isinstance(raw, bytes) else raw
            row = _decode(text)
    except (ValueError, TypeError, AttributeError, RecursionError) as exc:
        raise RequestError(f"{where}: not a JSON object ({exc})") from None
    if not isinstance(row, dict):
        raise RequestError(f"{where}: expected a JSON object (one row), got {type(row).__name__}")
    return row


def decode_rows(rows: npt.NDArray[Any], fields: Sequence[Field], source: str = "rows") -> npt.NDArray[np.float32]:
    """A float32 matrix [N, len(fields)] from N JSON rows (a 1-D BYTES array)."""
    raw = rows.reshape(-1)
    if fields and all(f.kind == "float32" for f in fields):
        fast = _block(raw, fields)
        if fast is not None:
            return fast
    parsed = [parse_row(r, f"{source}[{i}]") for i, r in enumerate(raw)]
    out = np.empty((len(parsed), len(fields)), np.float32)
    if not parsed or not fields:
        return out
    if all(f.kind == "float32" for f in fields) and _fast(parsed, fields, out):
        return out
    for i, row in enumerate(parsed):
        where = f"{source}[{i}]"
        values = [f.convert(row.get(f.name, _MISSING), where) for f in fields]
        with np.errstate(over="ignore"):  # beyond float32's range: +-inf, by design
            out[i] = values
    return out


def _block(raw: npt.NDArray[Any], fields: Sequence[Field]) -> npt.NDArray[np.float32] | None:
    """The matrix of rows that are all JSON objects orjson reads as the standard library does, holding every
    (float32) field as a JSON number: the rows parsed one by one, their values made a matrix by numpy in one step;
    None otherwise (the per-row path then answers, and names the row and field at fault)."""
    if not _json.FAST or not len(raw) or not all(type(r) is bytes for r in raw):
        return None
    block = b"\n".join(raw)
    # booleans (numpy reads true as 1) and long integers (orjson reads them as floats) take the per-row path
    if b"true" in block or b"false" in block:
        return None
    try:
        parsed = _json.loads_each(raw, block)
        values = list(map(operator.itemgetter(*(f.name for f in fields)), parsed))
        matrix = np.array(values) if len(fields) > 1 else np.array(values)[:, None]
    except (ValueError, TypeError, KeyError, IndexError, OverflowError):  # not JSON or an object, a field missing
        return None
    if matrix.dtype.kind not in "iuf" or matrix.shape != (len(raw), len(fields)):
        return None  # null, strings, nested values
    with np.errstate(over="ignore"):  # beyond float32's range: +-inf, by design
        return matrix.astype(np.float64).astype(np.float32)


def _fast(parsed: list[dict[str, Any]], fields: Sequence[Field], out: npt.NDArray[np.float32]) -> bool:
    """Fill `out` when every row holds every (float32) field as a JSON number; False otherwise."""
    get: Callable[[dict[str, Any]], Any] = operator.itemgetter(*(f.name for f in fields))
    try:
        values = list(map(get, parsed))
    except KeyError:
        return False
    if len(fields) == 1:
        values = [(v,) for v in values]
    if not set(map(type, itertools.chain.from_iterable(values))) <= {float, int}:
        return False  # null, strings, booleans: the per-field path says which
    try:
        with np.errstate(over="ignore"):
            out[:] = values
    except OverflowError:  # an integer beyond float64
        return False
    return True
