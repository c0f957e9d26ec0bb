"""JSON rows -> float32 matrix: each field's rules, the fast path against the per-field one, errors naming the field."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from infc_runtime.abi import RequestError
from infc_runtime.rows import UNKNOWN, Field, decode_rows, parse_row


def _rows(*objects: Any) -> np.ndarray:
    out = np.empty(len(objects), dtype=object)
    out[:] = [o if isinstance(o, bytes) else json.dumps(o).encode() for o in objects]
    return out


CASES = [
    (Field("x"), 1.5, 1.5),
    (Field("x"), 3, 3.0),
    (Field("x"), float("nan"), math.nan),  # Python json reads NaN / Infinity
    (Field("x"), float("-inf"), -math.inf),
    (Field("x"), 1e39, math.inf),  # beyond float32: inf
    (Field("x"), 10**400, math.inf),  # beyond float64 too
    (Field("x", required=False), None, math.nan),
    (Field("x", "int64"), 7, 7.0),
    (Field("x", "int32"), -(2**31), float(-(2**31))),
    (Field("x", "bool"), True, 1.0),
    (Field("x", "bool"), False, 0.0),
    (Field("x", "category", categories=("a", "b")), "b", 1.0),
    (Field("x", "category", categories=("a", "b")), "zz", UNKNOWN),
    (Field("x", "category", categories=(1, 2)), 2, 1.0),
    (Field("x", "category", categories=(1, 2)), "2", UNKNOWN),  # "2" is not 2
    (Field("x", "category", required=False, categories=("a",)), None, math.nan),
]


@pytest.mark.parametrize(("field", "value", "want"), CASES)
def test_each_kind_reads_its_json_values(field: Field, value: Any, want: float) -> None:
    got = decode_rows(_rows({"x": value}), [field])
    np.testing.assert_array_equal(got, np.array([[want]], np.float32))


BAD = [
    (Field("x"), "1.5", "must be a number, got the string \"1.5\""),
    (Field("x"), True, "must be a number, got bool true"),
    (Field("x"), [1], "must be a number"),
    (Field("x"), None, "is required but missing"),
    (Field("x", "int64"), 1.5, "must be an integer (int64)"),
    (Field("x", "int32"), 2**31, "must be an integer (int32)"),
    (Field("x", "bool"), 1, "must be true or false"),
    (Field("x", "category", categories=(1, 2)), True, "must be one of its categories"),
    (Field("x", "category", categories=("a",), unknown_error=True), "b", "must be one of its categories ['a']"),
]


@pytest.mark.parametrize(("field", "value", "message"), BAD)
def test_bad_values_fail_naming_the_row_and_field(field: Field, value: Any, message: str) -> None:
    good = {"bool": False, "category": field.categories[0] if field.categories else 0}.get(field.kind, 0)
    with pytest.raises(RequestError) as err:
        decode_rows(_rows({"x": good}, {"x": value}), [field], "rows")
    assert str(err.value).startswith("rows[1]: field 'x' ")
    assert message in str(err.value)


def test_absent_field_is_missing_and_the_message_names_it() -> None:
    fields = [Field("mean radius"), Field("mean texture")]
    with pytest.raises(RequestError, match=r"rows\[2\]: field 'mean texture' is required but missing"):
        decode_rows(_rows({"mean radius": 1, "mean texture": 2}, {"mean radius": 1, "mean texture": 2},
                          {"mean radius": 1}), fields)


@pytest.mark.parametrize(("raw", "message"), [(b"{not json", "not a JSON object"), (b"[1, 2]", "got list"),
                                              (b"\xff\xfe", "not a JSON object"), (b"", "not a JSON object")])
def test_rows_that_are_no_json_object_fail(raw: bytes, message: str) -> None:
    with pytest.raises(RequestError, match=message):
        parse_row(raw, "rows[0]")


def test_empty_batch_and_no_fields() -> None:
    assert decode_rows(np.empty(0, dtype=object), [Field("a")]).shape == (0, 1)
    assert decode_rows(_rows({"a": 1}), []).shape == (1, 0)


def test_one_field_and_extra_keys() -> None:
    got = decode_rows(_rows({"a": 2, "ignored": "text"}, {"a": 3.5}), [Field("a")])
    np.testing.assert_array_equal(got, [[2.0], [3.5]])


_value = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-(2**70), 2**70), st.none(),
                   st.booleans(), st.text(max_size=3), st.just("absent"))


@settings(max_examples=200, deadline=None)
@given(table=st.lists(st.lists(_value, min_size=3, max_size=3), min_size=0, max_size=6),
       required=st.booleans())
def test_fast_path_equals_the_per_field_rules(table: list[list[Any]], required: bool) -> None:
    """Whatever the rows hold, the batch result is each field's own rule (or the same failure)."""
    fields = [Field(n, required=required) for n in ("a", "b", "c")]
    objects = [{n: v for n, v in zip("abc", row, strict=True) if v != "absent"} for row in table]
    rows = _rows(*objects)
    want: np.ndarray | str
    try:
        with np.errstate(over="ignore"):
            want = np.array([[f.convert(o.get(f.name), f"rows[{i}]") for f in fields]
                             for i, o in enumerate(objects)], np.float32).reshape(len(objects), 3)
    except RequestError as exc:
        want = str(exc)
    if isinstance(want, str):
        with pytest.raises(RequestError) as err:
            decode_rows(rows, fields)
        assert str(err.value) == want
    else:
        np.testing.assert_array_equal(decode_rows(rows, fields), want)
