"""softmax, l2_normalize, argmax and topk against the steps' numpy references (any leading shape)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from infc.kernels.registry import get
from infc_runtime.ops import argmax, l2_normalize, softmax, topk
from infc_runtime.ops.rowwise import log_softmax


def _ref(step: str, x: np.ndarray, **params: Any) -> tuple[np.ndarray, ...]:
    return get(step).reference(x, params)


_rows = hnp.arrays(np.float32, hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=6),
                   elements=st.floats(-50, 50, width=32))
_with_nan = hnp.arrays(np.float32, hnp.array_shapes(min_dims=1, max_dims=2, min_side=1, max_side=6),
                       elements=st.floats(width=32, allow_nan=True, allow_infinity=True))


@settings(max_examples=40, deadline=None)
@given(_rows)
def test_softmax(x: np.ndarray) -> None:
    got = softmax(x)
    (want,) = _ref("softmax", x)
    assert got.dtype == np.float32 and got.shape == x.shape
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)  # numpy's and LLVM's float32 exp: an ulp apart


@settings(max_examples=40, deadline=None)
@given(_rows)
def test_log_softmax(x: np.ndarray) -> None:
    got = log_softmax(x)
    (want,) = _ref("log_softmax", x)
    assert got.dtype == np.float32 and got.shape == x.shape
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)  # the float64 sums may differ in order


def test_log_softmax_stays_finite_where_softmax_underflows() -> None:
    got = log_softmax(np.array([[0.0, -200.0, 200.0]], np.float32))
    np.testing.assert_array_equal(got, [[-200.0, -400.0, 0.0]])


@settings(max_examples=40, deadline=None)
@given(_rows)
def test_l2_normalize(x: np.ndarray) -> None:
    got = l2_normalize(x)
    (want,) = _ref("l2_normalize", x)
    assert got.dtype == np.float32 and got.shape == x.shape
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


def test_l2_normalize_keeps_zero_rows() -> None:
    np.testing.assert_array_equal(l2_normalize(np.zeros((2, 3), np.float32)), np.zeros((2, 3), np.float32))


@settings(max_examples=60, deadline=None)
@given(_with_nan)
def test_argmax_is_numpys_with_ties_and_nan(x: np.ndarray) -> None:
    got = argmax(x)
    (want,) = _ref("argmax", x)
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, want)


@settings(max_examples=60, deadline=None)
@given(_with_nan, st.integers(1, 6))
def test_topk_is_a_stable_sort_nan_last(x: np.ndarray, k: int) -> None:
    k = min(k, x.shape[-1])
    scores, indices = topk(x, k)
    want_scores, want_indices = _ref("topk", x, k=k)
    np.testing.assert_array_equal(indices, want_indices)
    np.testing.assert_array_equal(scores, want_scores)  # NaN equals NaN here
    assert scores.dtype == np.float32 and indices.dtype == np.int64


@pytest.mark.parametrize("dtype", [np.int32, np.float64])
def test_argmax_takes_any_numeric_dtype(dtype: type) -> None:
    x = np.array([[1, 3, 3], [2, 0, 1]], dtype=dtype)
    np.testing.assert_array_equal(argmax(x), [1, 0])
