"""features (JSON rows -> named float32 columns) and one_hot: generated module against the references."""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from infc.kernels.codegen import generate
from infc.kernels.graph import StepIssue, resolve
from infc.kernels.reference import run_reference
from infc_runtime.abi import RequestError
from infc_runtime.pipeline import load_kernel_module
from infc_runtime.types import TensorSpec

Steps = list[tuple[str, dict[str, Any]]]
ROWS = TensorSpec("rows", "bytes", ())

STEPS: Steps = [
    ("features", {"fields": [
        "age",
        {"name": "income", "required": False},
        {"name": "colour", "dtype": "category", "categories": ["red", "green", "blue"]},
        {"name": "member", "dtype": "bool", "required": False},
        {"name": "visits", "dtype": "int64"},
        {"name": "plan", "categories": [10, 20], "required": False},
    ]}),
    ("fill_missing", {"value": [0.0, 0.5], "fields": ["income", "member"]}),
    ("log1p", {"fields": ["income", "visits"]}),
    ("one_hot", {"field": "colour"}),
    ("one_hot", {"field": "plan", "unknown": "slot"}),
    ("standardize", {"mean": [40.0], "std": [10.0], "fields": ["age"]}),
]


def _compile(folder: Path, steps: Steps, start: TensorSpec = ROWS) -> Any:
    def fail(i: int, issue: StepIssue) -> None:
        raise AssertionError(f"step {i}: {issue}")

    source = generate("pre", resolve(steps, [start], fail), name="t", version="0")
    ast.parse(source)
    (folder / "pre.py").write_text(source)
    return load_kernel_module(folder / "pre.py")


_MODULE: dict[str, Any] = {}


def _module(factory: pytest.TempPathFactory) -> Any:
    if "m" not in _MODULE:
        _MODULE["m"] = _compile(factory.mktemp("features"), STEPS)
    return _MODULE["m"]


def _rows(*objects: dict[str, Any]) -> np.ndarray:
    out = np.empty(len(objects), dtype=object)
    out[:] = [json.dumps(o).encode() for o in objects]
    return out


def test_rows_become_the_named_vector(tmp_path_factory: pytest.TempPathFactory) -> None:
    rows = _rows({"age": 50, "income": 1000.0, "colour": "green", "member": True, "visits": 3, "plan": 20},
                 {"age": 30.5, "colour": "purple", "visits": 0, "plan": 15, "extra": "ignored"},
                 {"age": float("nan"), "income": None, "colour": "red", "member": False, "visits": 1})
    module = _module(tmp_path_factory)
    got = module.run({"rows": rows})
    want = run_reference(STEPS, {"rows": rows})
    assert list(got) == ["features"]
    np.testing.assert_allclose(got["features"], want["features"], rtol=2.5e-7)
    # age, income, colour=red/green/blue, member, visits, plan=10/20/<unknown>
    assert got["features"].shape == (3, 10)
    np.testing.assert_array_equal(got["features"][:, 2:5], [[0, 1, 0], [0, 0, 0], [1, 0, 0]])
    np.testing.assert_array_equal(got["features"][:, 7:], [[0, 1, 0], [0, 0, 1], [0, 0, 1]])
    assert got["features"][0, 0] == 1.0 and np.isnan(got["features"][2, 0])
    assert got["features"][1, 1] == 0.0 and got["features"][1, 5] == 0.5, "missing optional fields filled"


def test_the_module_names_its_warm_up_row(tmp_path_factory: pytest.TempPathFactory) -> None:
    module = _module(tmp_path_factory)
    example = module.EXAMPLES["rows"]
    assert json.loads(example)["colour"] == "red"
    assert module.run({"rows": np.array([example] * 2, dtype=object)})["features"].shape == (2, 10)
    assert module.run({"rows": np.empty(0, dtype=object)})["features"].shape == (0, 10)


@pytest.mark.parametrize(("row", "message"), [
    ({"income": 1, "colour": "red", "visits": 1}, "rows[0]: field 'age' is required but missing"),
    ({"age": "41", "colour": "red", "visits": 1}, "rows[0]: field 'age' must be a number, got the string \"41\""),
    ({"age": 41, "colour": "red", "visits": 1.5}, "rows[0]: field 'visits' must be an integer (int64)"),
    ({"age": 41, "colour": ["red"], "visits": 1}, "field 'colour' must be one of its categories"),
])
def test_bad_rows_fail_naming_the_field(tmp_path_factory: pytest.TempPathFactory, row: dict[str, Any],
                                        message: str) -> None:
    module = _module(tmp_path_factory)
    for run in (module.run, lambda t: run_reference(STEPS, t)):
        with pytest.raises(RequestError) as err:
            run({"rows": _rows(row)})
        assert message in str(err.value)


_value = st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True), st.integers(-5, 2**40),
                   st.booleans(), st.sampled_from(["red", "blue", "pink", "", "41"]), st.sampled_from([10, 20, 30]))


@settings(max_examples=80, deadline=None)
@given(table=st.lists(st.fixed_dictionaries({}, optional={k: _value for k in
                                                          ("age", "income", "colour", "member", "visits", "plan")}),
                      max_size=5))
def test_kernel_and_reference_agree_on_any_rows(tmp_path_factory: pytest.TempPathFactory,
                                               table: list[dict[str, Any]]) -> None:
    """Same matrix, or the same failure, whatever the rows hold."""
    module = _module(tmp_path_factory)
    rows = _rows(*table)
    outcomes = []
    for run in (module.run, lambda t: run_reference(STEPS, t)):
        try:
            outcomes.append(run({"rows": rows})["features"])
        except RequestError as exc:
            outcomes.append(str(exc))
    got, want = outcomes
    if isinstance(want, str):
        assert got == want
    else:
        assert isinstance(got, np.ndarray)
        np.testing.assert_allclose(got, want, rtol=2.5e-7)


def test_features_names_the_columns_of_a_numeric_tensor(tmp_path: Path) -> None:
    steps: Steps = [("features", {"fields": ["a", "b"]}), ("standardize", {"mean": [1.0], "std": [2.0],
                                                                           "fields": ["b"]})]
    x = np.array([[1, 5], [2, 7]], np.int32)
    got = _compile(tmp_path, steps, TensorSpec("x", "int32", (2,))).run({"x": x})
    np.testing.assert_array_equal(got["features"], [[1.0, 2.0], [2.0, 3.0]])
    np.testing.assert_array_equal(run_reference(steps[:1], {"x": x})["features"], x.astype(np.float32))


def test_one_hot_of_a_categorical_step(tmp_path: Path) -> None:
    steps: Steps = [("categorical", {"field": 1, "categories": [3.0, 7.0]}), ("one_hot", {"field": 1})]
    x = np.array([[0.5, 7.0, 2.0], [1.0, 3.0, 4.0], [2.0, 5.0, 6.0], [3.0, np.nan, 8.0]], np.float32)
    got = _compile(tmp_path, steps, TensorSpec("x", "float32", (3,))).run({"x": x})["x"]
    np.testing.assert_array_equal(got, [[0.5, 0, 1, 2], [1, 1, 0, 4], [2, 0, 0, 6], [3, 0, 0, 8]])
    np.testing.assert_array_equal(got, run_reference(steps, {"x": x})["x"])


ISSUES = [
    ({"fields": ["a", "a"]}, ROWS, "field 'a' is listed twice"),
    ({"fields": [{"name": "c", "dtype": "category"}]}, ROWS, "give its `categories` (the mapping table)"),
    ({"fields": [{"name": "c", "categories": ["x", 1]}]}, ROWS, "all strings or all integers"),
    ({"fields": [{"name": "c", "categories": ["x", "x"]}]}, ROWS, "categories must be distinct"),
    ({"fields": [{"name": "c", "dtype": "int64", "categories": [1]}]}, ROWS, "belong to dtype category"),
    ({"fields": ["a"]}, TensorSpec("rows", "bytes", (2,)), "must have shape []"),
    ({"fields": ["a", "b"]}, TensorSpec("x", "float32", (3,)), "has 3 columns, but 2 fields are listed"),
    ({"fields": [{"name": "c", "categories": ["x"]}]}, TensorSpec("x", "float32", (1,)), "read from JSON rows"),
]


@pytest.mark.parametrize(("params", "start", "message"), ISSUES)
def test_features_mistakes_are_located(params: dict[str, Any], start: TensorSpec, message: str) -> None:
    issues: list[StepIssue] = []
    resolve([("features", params)], [start], lambda i, e: issues.append(e))
    assert len(issues) == 1 and message in str(issues[0])
    assert issues[0].key in ("fields", None)


def test_later_steps_see_the_field_names() -> None:
    issues: list[tuple[int, str, str | None]] = []
    resolve([("features", {"fields": ["mean radius", "mean area"]}),
             ("clip", {"min": 0.0, "fields": ["mean raduis"]})], [ROWS],
            lambda i, e: issues.append((i, str(e), e.key)))
    assert issues == [(1, "unknown field 'mean raduis'; 'features' has 2 fields (did you mean 'mean radius'?)",
                       "fields")]
