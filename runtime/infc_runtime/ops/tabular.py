"""Tabular vectors: as_float32 (a numeric request as columns) and one_hot (a column of category codes)."""

from __future__ import annotations

from typing import Any

import numba
import numpy as np
import numpy.typing as npt

__all__ = ["as_float32", "one_hot"]

Array = npt.NDArray[Any]


def as_float32(x: Array) -> Array:
    """`x` as a contiguous float32 array (a copy only when it is not one)."""
    return np.ascontiguousarray(x, dtype=np.float32)


@numba.njit(cache=True, nogil=True)
def _one_hot_rows(x, column, k, slot, out):  # type: ignore[no-untyped-def]
    """column `column` of x (category codes) -> k one-hot columns (+1 unknown slot); others copied."""
    for n in range(x.shape[0]):
        o = 0
        for c in range(x.shape[1]):
            if c != column:
                out[n, o] = x[n, c]
                o += 1
                continue
            for j in range(k + slot):
                out[n, o + j] = 0.0
            code = x[n, c]
            if code >= 0 and code < k and code == np.floor(code):
                out[n, o + int(code)] = 1.0
            elif slot:
                out[n, o + k] = 1.0
            o += k + slot


def one_hot(x: Array, column: int, k: int, slot: bool) -> Array:
    """float32 rows [N, F] with column `column` (codes 0..k-1) replaced by k one-hot columns, plus one
    for an unknown or missing code when `slot` (else such a row gets all zeros there)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    out = np.empty((x.shape[0], x.shape[1] - 1 + k + int(slot)), dtype=np.float32)
    _one_hot_rows(x, column, k, int(slot), out)
    return out
