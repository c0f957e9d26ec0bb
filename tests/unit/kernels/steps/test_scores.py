"""sigmoid, round, argmax, threshold: generated kernels against the numpy reference.

Exact for integer results (argmax, threshold) and for round; sigmoid within
rtol 1e-6 / atol 1e-7 (numpy's and LLVM's float32 exp may differ by an ulp), and
sigmoid then round within one unit of the last kept decimal.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from kernelcheck import Steps, assert_same, compile_steps, spec_of

from infc.kernels.graph import resolve
from infc.kernels.reference import run_reference
from infc_runtime.types import TensorSpec

_MODULES: dict[str, Any] = {}


def _module(factory: pytest.TempPathFactory, key: str, steps: Steps, start: TensorSpec) -> Any:
    """One compiled module per step list (variable sizes), shared by the examples hypothesis draws."""
    if key not in _MODULES:
        _MODULES[key] = compile_steps(factory.mktemp(key), "post", steps, [start])
    return _MODULES[key]


# float32 values with the edge cases in: NaN, +-inf, +-0, huge and tiny magnitudes, many ties
_floats = st.one_of(st.floats(width=32, allow_nan=True, allow_infinity=True),
                    st.sampled_from([0.0, -0.0, 0.5, -0.5, 1.0, 2.5, 1e30, -1e30, 88.8, -88.8, 1e-30]))


def _batches(min_cols: int = 0) -> st.SearchStrategy[np.ndarray]:
    shapes = st.tuples(st.integers(0, 4), st.integers(min_cols, 6))
    return shapes.flatmap(lambda s: hnp.arrays(np.float32, s, elements=_floats))


SIGMOID_ROUND: Steps = [("sigmoid", {}), ("round", {"decimals": 3})]


@settings(max_examples=60, deadline=None)
@given(x=_batches())
def test_sigmoid_then_round_is_one_loop_and_matches(tmp_path_factory: pytest.TempPathFactory, x: np.ndarray) -> None:
    module = _module(tmp_path_factory, "sigmoid_round", SIGMOID_ROUND, TensorSpec("logits", "float32", (-1,)))
    assert Path(module.__file__).read_text().count("@numba.njit") == 1, "two per-element steps fuse into one loop"
    got, want = module.run({"logits": x}), run_reference(SIGMOID_ROUND, {"logits": x})
    # an ulp of exp may tip a value across a rounding boundary: one unit of the 3rd place at most
    assert_same(got, want, atol=1.001e-3)


@settings(max_examples=60, deadline=None)
@given(x=_batches())
def test_sigmoid_matches_within_an_ulp(tmp_path_factory: pytest.TempPathFactory, x: np.ndarray) -> None:
    module = _module(tmp_path_factory, "sigmoid", [("sigmoid", {})], TensorSpec("logits", "float32", (-1,)))
    got, want = module.run({"logits": x}), run_reference([("sigmoid", {})], {"logits": x})
    assert_same(got, want, rtol=1e-6, atol=1e-7)
    finite = got["logits"][~np.isnan(x)]
    assert np.all((finite >= 0) & (finite <= 1))


@pytest.mark.parametrize("decimals", [-2, 0, 1, 4])
def test_round_is_numpy_round_half_to_even(tmp_path: Path, decimals: int) -> None:
    x = {"v": np.array([[0.5, 1.5, 2.5, -0.5, 0.125, 0.375, 1234.5678, np.nan, np.inf, 150.0, 250.0]], np.float32)}
    steps: Steps = [("round", {"decimals": decimals})]
    got = compile_steps(tmp_path, "post", steps, [spec_of("v", x["v"])]).run(x)
    assert_same(got, run_reference(steps, x))
    if decimals == 0:
        assert got["v"][0, :4].tolist() == [0.0, 2.0, 2.0, -0.0]


@pytest.mark.parametrize("decimals", [-3, 0, 2])
@settings(max_examples=40, deadline=None)
@given(x=_batches())
def test_round_matches_exactly_on_any_float32(tmp_path_factory: pytest.TempPathFactory, decimals: int,
                                              x: np.ndarray) -> None:
    steps: Steps = [("round", {"decimals": decimals})]
    module = _module(tmp_path_factory, f"round{decimals}", steps, TensorSpec("v", "float32", (-1,)))
    got = module.run({"v": x})
    assert_same(got, run_reference(steps, {"v": x}))
    if decimals >= 0:  # numpy would give inf here (x * 10^d overflows); whole numbers stay
        big = np.isfinite(x) & (np.abs(x) >= 2**23)
        np.testing.assert_array_equal(got["v"][big], x[big])


@settings(max_examples=80, deadline=None)
@given(x=_batches(min_cols=1), ints=st.booleans())
def test_argmax_matches_numpy_with_ties_and_nan(tmp_path_factory: pytest.TempPathFactory, x: np.ndarray,
                                                 ints: bool) -> None:
    if ints:
        x = np.nan_to_num(x, nan=0, posinf=5, neginf=-5).clip(-5, 5).astype(np.int32)  # many ties
    key = f"argmax_{x.dtype}"
    module = _module(tmp_path_factory, key, [("argmax", {})], TensorSpec("s", str(x.dtype), (-1,)))
    got = module.run({"s": x})
    assert_same(got, run_reference([("argmax", {})], {"s": x}))
    np.testing.assert_array_equal(got["class_id"], np.argmax(x, axis=1))


def test_argmax_then_labels(tmp_path: Path) -> None:
    x = {"logits": np.array([[[0.1, 0.9], [0.7, 0.7]], [[np.nan, 1.0], [-1.0, -2.0]]], np.float32)}
    steps: Steps = [("argmax", {}), ("labels", {"names": ["cat", "dog"]})]
    got = compile_steps(tmp_path, "post", steps, [spec_of("logits", x["logits"])]).run(x)
    assert got["labels"].tolist() == [[b"dog", b"cat"], [b"cat", b"cat"]]
    assert_same(got, run_reference(steps, x))


THRESHOLD_NAMES: Steps = [("threshold", {"threshold": 0.7, "names": ["deny", "approve"], "column": 1})]


@settings(max_examples=60, deadline=None)
@given(x=_batches(min_cols=2))
def test_threshold_on_a_column_to_names(tmp_path_factory: pytest.TempPathFactory, x: np.ndarray) -> None:
    module = _module(tmp_path_factory, "threshold_names", THRESHOLD_NAMES, TensorSpec("p", "float32", (-1,)))
    got = module.run({"p": x})
    assert_same(got, run_reference(THRESHOLD_NAMES, {"p": x}))
    assert got["decision"].shape == (len(x),)
    assert set(got["decision"].tolist()) <= {b"deny", b"approve"}


def test_threshold_edges(tmp_path: Path) -> None:
    # the threshold itself approves; NaN denies; float32 0.7 is just below 0.7 (compared in float64)
    x = {"score": np.array([0.5, 0.49999997, np.nan, np.inf, -np.inf, 0.7, 1.0], np.float32)}
    steps: Steps = [("threshold", {})]
    got = compile_steps(tmp_path, "post", steps, [spec_of("score", x["score"])]).run(x)
    assert got["decision"].tolist() == [1, 0, 0, 1, 0, 1, 1]
    assert_same(got, run_reference(steps, x))
    steps = [("threshold", {"threshold": 0.7, "output": "ok"})]
    got = compile_steps(tmp_path, "post", steps, [spec_of("score", x["score"])]).run(x)
    assert got["ok"].tolist() == [0, 0, 0, 1, 0, 0, 1]


def test_threshold_decisions_take_labels_after(tmp_path: Path) -> None:
    x = {"score": np.array([[0.2, 0.9]], np.float32)}
    steps: Steps = [("threshold", {}), ("labels", {"names": ["no", "yes"]})]
    got = compile_steps(tmp_path, "post", steps, [spec_of("score", x["score"])]).run(x)
    assert got["labels"].tolist() == [[b"no", b"yes"]]


@pytest.mark.parametrize(
    ("steps", "start", "reason"),
    [
        ([("argmax", {})], TensorSpec("x", "float32", ()), "is a scalar per row; argmax needs a class axis"),
        ([("argmax", {})], TensorSpec("x", "float32", (0,)), "has no classes"),
        ([("argmax", {})], TensorSpec("x", "bytes", (3,)), "expected a numeric tensor"),
        ([("sigmoid", {})], TensorSpec("x", "bytes", (3,)), "expected a numeric tensor"),
        ([("threshold", {"column": 2})], TensorSpec("x", "float32", (2,)), "column 2 is out of range"),
        ([("threshold", {"threshold": float("nan")})], TensorSpec("x", "float32", (2,)), "finite threshold"),
        ([("argmax", {}), ("labels", {"names": ["a"]})], TensorSpec("x", "float32", (3,)),
         "expected at least 3 names"),
        ([("threshold", {}), ("labels", {"names": ["a"]})], TensorSpec("x", "float32", ()),
         "expected at least 2 names"),
    ],
)
def test_bad_steps_report_their_reason(steps: Steps, start: TensorSpec, reason: str) -> None:
    issues: list[str] = []
    resolve(steps, [start], lambda i, issue: issues.append(str(issue)))
    assert len(issues) == 1 and reason in issues[0], issues
