"""Class indices and scores into answers: labels (index -> name) and threshold (score -> 0/1 or a name)."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["names_table", "labels", "threshold"]

Array = npt.NDArray[Any]


def names_table(names: list[bytes]) -> Array:
    """The object array `labels` and `threshold` look names up in (a module constant)."""
    return np.array(names, dtype=object)


def labels(x: Array, names: Array) -> Array:
    """The name of each class index of `x` (a BYTES tensor of x's shape)."""
    return names[x]  # type: ignore[no-any-return]


def threshold(x: Array, at: float, column: int | None = None, names: Array | None = None) -> Array:
    """Decision `x >= at` (NaN: below) as int64 0/1, or as `names` [below, at or above]; with `column`,
    of that column of the last axis only."""
    x = np.asarray(x)
    if column is not None:
        x = x[..., column]
    decision = (x.astype(np.float64) >= at).astype(np.int64)
    return decision if names is None else names[decision]
