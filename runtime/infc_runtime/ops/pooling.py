"""mean_pool: the mean over the sequence axis of the positions a mask keeps (sentence embeddings)."""

from __future__ import annotations

from typing import Any

import numba
import numpy as np
import numpy.typing as npt

__all__ = ["mean_pool"]

Array = npt.NDArray[Any]


@numba.njit(cache=True, nogil=True)
def _mean_pool_rows(x, mask, out):  # type: ignore[no-untyped-def]
    """mean over the sequence axis of x [rows, S, H], weighted by mask [rows, S]."""
    for r in range(x.shape[0]):
        count = np.float32(0.0)
        for h in range(x.shape[2]):
            out[r, h] = 0.0
        for s in range(x.shape[1]):
            m = np.float32(mask[r, s])
            if m != 0:
                count += m
                for h in range(x.shape[2]):
                    out[r, h] += x[r, s, h] * m
        count = max(count, np.float32(1e-9))
        for h in range(x.shape[2]):
            out[r, h] = out[r, h] / count


def mean_pool(x: Array, mask: Array) -> Array:
    """float32 mean of x [.., S, H] over S, weighted by mask [.., S] (a row with no weight: zeros)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    mask = np.ascontiguousarray(mask)
    rows = x.reshape(-1, x.shape[-2], x.shape[-1])
    out = np.empty((rows.shape[0], x.shape[-1]), dtype=np.float32)
    _mean_pool_rows(rows, mask.reshape(-1, x.shape[-2]), out)
    return out.reshape(x.shape[:-2] + (x.shape[-1],))
