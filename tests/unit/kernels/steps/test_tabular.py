"""Per-element tabular steps: one fused loop that matches the numpy references, NaN and inf included."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from infc.kernels.codegen import generate
from infc.kernels.columns import Columns
from infc.kernels.graph import StepIssue, resolve
from infc.kernels.reference import run_reference
from infc.kernels.registry import get
from infc_runtime.pipeline import load_kernel_module
from infc_runtime.types import TensorSpec

Steps = list[tuple[str, dict[str, Any]]]

CHAIN: Steps = [
    ("fill_missing", {"value": [0.5, -1.0], "fields": [0, 3]}),
    ("fill_missing", {"value": 9.0, "infinite": True, "fields": [5]}),
    ("standardize", {"mean": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0], "std": [2.0, 0.5, 3.0, 1.0, 7.0, 0.25]}),
    ("clip", {"min": -3.0, "max": [3.0, 4.0, 5.0, 6.0, 7.0, 8.0]}),
    ("log1p", {"fields": [1, 2]}),
    ("categorical", {"field": 4, "categories": [-2.0, 0.0, 1.5]}),
]
WIDTH = 6


def compile_steps(folder: Path, steps: Steps, start: TensorSpec) -> Any:
    def fail(i: int, issue: StepIssue) -> None:
        raise AssertionError(f"step {i}: {issue}")

    source = generate("pre", resolve(steps, [start], fail), name="t", version="0")
    ast.parse(source)
    path = folder / "pre.py"
    path.write_text(source)
    return load_kernel_module(path)


_MODULES: dict[str, Any] = {}


def _chain_module(factory: pytest.TempPathFactory, dtype: str) -> Any:
    if dtype not in _MODULES:
        _MODULES[dtype] = compile_steps(factory.mktemp(dtype), CHAIN, TensorSpec("x", dtype, (WIDTH,)))
    return _MODULES[dtype]


def _same(got: np.ndarray, want: np.ndarray) -> None:
    assert got.dtype == want.dtype == np.float32 and got.shape == want.shape
    # log1p: numpy and Numba's libm may differ by an ulp; everything else is exact
    np.testing.assert_allclose(got, want, rtol=2.5e-7, atol=0)


def test_six_steps_are_one_loop_and_match(tmp_path_factory: pytest.TempPathFactory) -> None:
    module = _chain_module(tmp_path_factory, "float32")
    assert Path(module.__file__).read_text().count("@numba.njit") == 1
    x = np.array([[np.nan, 1, 2, np.nan, 1.5, np.inf],
                  [3, -5, np.inf, 4, 7, -np.inf],
                  [1, np.nan, -np.inf, 0, np.nan, np.nan],
                  [100, 2, 3, 4, 5, 6]], np.float32)
    got = module.run({"x": x})["x"]
    _same(got, run_reference(CHAIN, {"x": x})["x"])
    assert got[0, 0] == np.float32((0.5 - 1.0) / 2.0), "NaN filled before standardizing"
    assert got[0, 5] == got[1, 5] == 8.0, "infinite: true fills +-inf with 9: (9 - 6) / 0.25 = 12, clipped to 8"
    assert np.isnan(got[2, 1]), "standardize and log1p carry NaN through"
    assert got[1, 2] == np.log1p(np.float32(5.0)), "+inf is clipped to max, then log1p"
    assert np.isnan(got[2, 2]), "-inf is clipped to min -3, and log1p(-3) is NaN"
    assert got[3, 0] == 3.0, "clipped to max"
    assert got[0, 4] == got[1, 4] == -1.0 and np.isnan(got[2, 4]), "categorical: unknown -1, NaN stays"
    assert got[3, 4] == 1.0, "(5 - 5) / 7 = 0 is category 1"


@settings(max_examples=60, deadline=None)
@given(data=st.data(), dtype=st.sampled_from(["float32", "float64", "int32", "uint8"]))
def test_chain_matches_the_reference_for_any_values(tmp_path_factory: pytest.TempPathFactory, data: st.DataObject,
                                                    dtype: str) -> None:
    elements = (st.floats(width=32, allow_nan=True, allow_infinity=True) if dtype == "float32" else
                st.floats(allow_nan=True, allow_infinity=True) if dtype == "float64" else None)
    rows = data.draw(st.integers(0, 9), label="rows")  # 0: an empty batch
    x = data.draw(hnp.arrays(np.dtype(dtype), (rows, WIDTH), elements=elements), label="x")
    module = _chain_module(tmp_path_factory, dtype)
    with np.errstate(over="ignore"):  # float64 beyond float32 becomes inf, in both
        want = run_reference(CHAIN, {"x": x})["x"]
        got = module.run({"x": x})["x"]
    _same(got, want)


@pytest.mark.parametrize("steps", [
    [("fill_missing", {"value": 0.0})],
    [("standardize", {"mean": [0.5], "std": [2.0]})],
    [("clip", {"max": 1.0})],
    [("clip", {"min": [0.0, -1.0, 0.0], "fields": ["a", "c", "b"]})],
    [("log1p", {})],
], ids=lambda s: s[0][0])
def test_each_step_alone_on_named_columns(tmp_path: Path, steps: Steps) -> None:
    start = _named(("a", "b", "c"))
    x = np.array([[np.nan, -1.0, 3.0], [np.inf, -2.0, 0.25], [-np.inf, 5.0, np.nan]], np.float32)
    got = compile_steps(tmp_path, steps, start).run({"x": x})["x"]
    _same(got, _ref_named(steps, x, start))


def _named(fields: tuple[str, ...]) -> TensorSpec:
    return Columns("x", "float32", (len(fields),), fields)


def _ref_named(steps: Steps, x: np.ndarray, start: TensorSpec) -> np.ndarray:
    """The references, along the dataflow resolved from a named start (field names -> columns)."""

    def fail(i: int, issue: StepIssue) -> None:
        raise AssertionError(str(issue))

    for step in resolve(steps, [start], fail).steps:
        (x,) = get(step.name).reference(x, {**step.params, **step.extra})
    return x


ISSUES = [
    ([("standardize", {"mean": [0.0], "std": [1.0], "fields": ["radius"]})], "unknown field 'radius'",
     "fields"),
    ([("standardize", {"mean": [0.0], "std": [1.0], "fields": ["mean radus"]})], "did you mean 'mean radius'?",
     "fields"),
    ([("clip", {"min": 0.0, "fields": [7]})], "column 7 is out of range for the 3 columns", "fields"),
    ([("clip", {"min": 0.0, "fields": [0, "mean radius"]})], "field 'mean radius' is named twice", "fields"),
    ([("standardize", {"mean": [0.0, 1.0], "std": [1.0]})], "expected 1 value or one per column (3 columns), got 2",
     "mean"),
    ([("standardize", {"mean": [0.0]})], "std is missing", None),
    ([("standardize", {"mean": [0.0], "std": [1.0], "from": "calibration"})], "not both", "mean"),
    ([("standardize", {"mean": [float("nan")], "std": [1.0]})], "expected finite numbers", "mean"),
    ([("clip", {})], "expected min, max or both", None),
    ([("clip", {"min": 2.0, "max": [3.0, 1.0, 4.0]})], "is above max", "min"),
    ([("fill_missing", {"value": [1.0, 2.0], "fields": [0]})], "got 2", "value"),
    ([("categorical", {"field": 0, "categories": [0.1, 0.1000000001]})], "distinct finite numbers", "categories"),
    ([("categorical", {"field": 0, "categories": [1.0]}), ("categorical", {"field": 0, "categories": [1.0]})],
     "already holds category codes", "field"),
    ([("one_hot", {"field": "mean area"})], "holds no category codes", "field"),
]


@pytest.mark.parametrize(("steps", "message", "key"), ISSUES)
def test_spec_mistakes_are_located_issues(steps: Steps, message: str, key: str | None) -> None:
    issues: list[tuple[int, StepIssue]] = []
    resolve(steps, [_named(("mean radius", "mean texture", "mean area"))], lambda i, e: issues.append((i, e)))
    assert len(issues) == 1
    assert message in str(issues[0][1])
    assert issues[0][1].key == key


def test_field_names_need_named_columns() -> None:
    issues: list[str] = []
    resolve([("log1p", {"fields": ["a"]})], [TensorSpec("x", "float32", (3,))], lambda i, e: issues.append(str(e)))
    assert issues and "has no named fields" in issues[0]


def test_tabular_steps_need_numbers() -> None:
    issues: list[str] = []
    resolve([("standardize", {"mean": [0.0], "std": [1.0]})], [TensorSpec("x", "bytes", ())],
            lambda i, e: issues.append(str(e)))
    assert issues and "needs a numeric tensor" in issues[0]
