"""The request path's JSON codec: orjson's speed, the standard library's answers."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from infc_runtime import _json


def stdlib_or_error(text: bytes) -> Any:
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        return type(exc)


def codec_or_error(text: bytes) -> Any:
    try:
        return _json.loads(text)
    except (ValueError, RecursionError) as exc:
        return type(exc)


def test_orjson_is_in_use_here() -> None:
    assert _json.FAST  # the test environment installs the fast path, as bundles pin it


@pytest.mark.parametrize(
    "text",
    [
        b'{"inputs": [{"name": "x", "data": [1, 2.5, -3e-7, true, null, "s\\u00e9"]}]}',
        b"[NaN, Infinity, -Infinity]",  # bare tokens: the standard library reads them, the non-finite rule refuses
        b"[1e999, -1e999]",  # beyond float64: infinities, as before
        b"[18446744073709551615, 18446744073709551616, -9223372036854775809]",  # beyond 64 bits: exact ints
        b"[12345678901234567890123456789, 0.000123456789012345678901, 1.5e-1234567890123456789]",
        b'{"id": "\\ud800"}',  # a lone surrogate
        b'{"a": 1, "a": 2}',  # duplicate keys: the last one
        b"[" * 5000 + b"]" * 5000,  # nested beyond either parser
        b"[" * 900 + b"]" * 900,  # nested, within the standard library's reach
        b"{",
        b"",
        b"[1,]",
        b'"\xff"',  # not UTF-8
    ],
)
def test_loads_answers_as_the_standard_library(text: bytes) -> None:
    got, expected = codec_or_error(text), stdlib_or_error(text)
    if isinstance(expected, list) and expected and isinstance(expected[0], float) and math.isnan(expected[0]):
        assert math.isnan(got[0]) and got[1:] == expected[1:]
    else:
        assert got == expected
        assert [type(v) for v in got] == [type(v) for v in expected] if isinstance(got, list) else True


def test_huge_integers_stay_exact_ints() -> None:
    doc = _json.loads(b'{"data": [18446744073709551616, -99999999999999999999, 7]}')
    assert doc["data"] == [2**64, -99999999999999999999, 7]
    assert all(type(v) is int for v in doc["data"])


def test_bytearray_and_nested_documents() -> None:
    text = bytearray(b'{"inputs": [{"data": [[1, 2], [3, 4]], "parameters": {"binary_data_size": 8}}]}')
    assert _json.loads(text) == {"inputs": [{"data": [[1, 2], [3, 4]], "parameters": {"binary_data_size": 8}}]}


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_dumps_never_writes_non_finite_values(value: float) -> None:
    with pytest.raises(ValueError):
        _json.dumps({"outputs": [{"data": [1.0, value]}]})


@pytest.mark.parametrize(
    "doc",
    [
        {"model_name": "m", "outputs": [{"name": "y", "data": [0.1, 1e-05, 3.4028234663852886e38, -0.0, 2, True]}]},
        {"id": "\u00e9t\u00e9 \U0001f600", "data": ["a", ""]},
        {"big": [2**64, -(2**70)]},  # beyond orjson: the standard library writes them
        {"id": "\ud800"},  # a lone surrogate: the standard library escapes it
        {"nested": [[[1]], {"a": {"b": None}}]},
    ],
)
def test_dumps_is_compact_json_the_standard_library_reads_back(doc: dict[str, Any]) -> None:
    text = _json.dumps(doc)
    assert isinstance(text, bytes) and b", " not in text and b": " not in text
    assert json.loads(text) == doc


def test_bytes_are_not_json() -> None:
    with pytest.raises(TypeError):
        _json.dumps({"data": [b"raw"]})
