"""one_hot and as_float32 against the steps' numpy references."""

from __future__ import annotations

import numpy as np
import pytest

from infc.kernels.registry import get
from infc_runtime.ops import as_float32, one_hot


@pytest.mark.parametrize("slot", [False, True])
@pytest.mark.parametrize("column", [0, 1, 2])
def test_one_hot_matches_the_reference(column: int, slot: bool) -> None:
    x = np.array([[0, 1, 2], [2, 0, -1], [1.5, np.nan, 7], [1, 2, 0]], np.float32)
    got = one_hot(x, column, 3, slot)
    (want,) = get("one_hot").reference(x, {"column": column, "k": 3, "slot": slot})
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, want)


def test_as_float32_copies_only_when_it_must() -> None:
    x = np.ones((2, 3), np.float32)
    assert as_float32(x) is x
    np.testing.assert_array_equal(as_float32(np.ones((2, 3), np.int64)), x)
