"""labels and threshold against the steps' numpy references."""

from __future__ import annotations

import numpy as np

from infc.kernels.registry import get
from infc_runtime.ops import labels, names_table, threshold


def test_labels_look_names_up() -> None:
    x = np.array([[2, 0], [1, 1]], np.int64)
    names = ["a", "b", "c"]
    got = labels(x, names_table([n.encode() for n in names]))
    (want,) = get("labels").reference(x, {"names": names})
    np.testing.assert_array_equal(got, want)


def test_threshold_nan_is_below_and_names_and_column_apply() -> None:
    x = np.array([[0.1, 0.5], [np.nan, 0.7], [0.9, np.nan]], np.float32)
    for params in ({}, {"threshold": 0.6}, {"column": 1}, {"column": -1, "names": ["no", "yes"]}):
        names = names_table([n.encode() for n in params["names"]]) if "names" in params else None
        got = threshold(x, float(params.get("threshold", 0.5)), params.get("column"), names)
        (want,) = get("threshold").reference(x, params)
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)
