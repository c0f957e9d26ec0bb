"""The JSON codec of the request path: orjson when installed, the standard library's `json` otherwise.

Private helper of `protocol`. Both functions answer exactly what the standard
library would, only faster on the common case:

- `loads` parses with orjson; a text orjson refuses (a bare `NaN` or
  `Infinity` token, a number beyond float64, a lone surrogate, nesting past
  orjson's 1024 levels, malformed JSON) is handed to `json.loads`, which then
  accepts it as before (the non-finite and range rules of the protocol see the
  values) or raises its own error and message. So is a text holding an integer
  of 19 digits or more (found by a scan of a few microseconds per 5 kB):
  orjson reads an integer beyond 64 bits as a float, the standard library as
  the exact int that the range checks then refuse.
- `dumps` writes compact JSON (no spaces) and never a bare NaN or infinity
  token: it raises `ValueError` for them, as `json.dumps(..., allow_nan=False)`.
  orjson writes them as `null`, so a text orjson wrote holding `null` (rare
  in a response) is written again by the standard library, which raises; so
  is a document orjson cannot write (an integer beyond 64 bits, a string with
  a lone surrogate). `protocol` checks outputs first, to name the one at fault.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

__all__ = ["FAST", "dumps", "loads", "loads_each", "loads_fast", "long_integer"]

try:
    import orjson
except ImportError:  # the stdlib codec: same answers, slower
    orjson = None  # type: ignore[assignment]

FAST = orjson is not None
"""Whether orjson is in use."""


_DIGITS = bytes.maketrans(b"123456789", b"000000000")
_LONG = b"0" * 19  # 19 digits: possibly beyond int64 (orjson takes up to 2**64-1, then reads a float)


def loads(text: bytes | bytearray) -> Any:
    """The document in `text`; `ValueError` (or `RecursionError`) from the standard library when it is not JSON."""
    if orjson is not None and not long_integer(text):
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:
            pass  # the standard library decides: what it accepted before, it still accepts
    return json.loads(text)


def loads_fast(text: bytes) -> Any:
    """The document in `text` as orjson reads it, or `ValueError` where the standard library might answer
    otherwise (orjson missing or refusing it, a long integer): the caller asks `json` then."""
    if orjson is None or long_integer(text):
        raise ValueError("not for orjson")
    return orjson.loads(text)  # its JSONDecodeError is a ValueError


def loads_each(texts: Iterable[bytes], joined: bytes) -> list[Any]:
    """`loads_fast` of each text in `texts` (`joined`: them joined by newlines, scanned once for long integers)."""
    if orjson is None or long_integer(joined):
        raise ValueError("not for orjson")
    return list(map(orjson.loads, texts))


def long_integer(text: bytes | bytearray) -> bool:
    """Whether `text` holds a run of 19 or more digits that is not a fraction or an exponent (strings count)."""
    flat = text.translate(_DIGITS)
    at = flat.find(_LONG)
    while at >= 0:  # `at` starts a run of digits: an earlier digit would have matched first
        before = at - 1
        if before >= 0 and flat[before] in b"+-":
            before -= 1
        if before < 0 or flat[before] not in b".eE":
            return True
        end = at + len(_LONG)
        while end < len(flat) and flat[end] == 0x30:
            end += 1
        at = flat.find(_LONG, end)
    return False


def dumps(doc: Any) -> bytes:
    """`doc` as compact UTF-8 JSON; `ValueError` for NaN or an infinity (never written as a token)."""
    if orjson is not None:
        try:
            text: bytes = orjson.dumps(doc)
        except orjson.JSONEncodeError:
            pass
        else:
            if b"null" not in text:  # else maybe a NaN written as null: the standard library decides
                return text
    return json.dumps(doc, separators=(",", ":"), allow_nan=False).encode()
