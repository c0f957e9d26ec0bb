"""Ops over the last axis of a tensor, row by row: softmax, log_softmax, l2_normalize, argmax, topk.

Each public function takes the whole batch (any leading shape) and returns new
arrays; the Numba kernel behind it sees the rows as a 2-D array. The numpy
references in `infc.kernels.steps` define what they compute; these are tested
against them bit for bit.
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np
import numpy.typing as npt

__all__ = ["softmax", "log_softmax", "l2_normalize", "argmax", "topk"]

Array = npt.NDArray[Any]


@numba.njit(cache=True, nogil=True)
def _softmax_rows(x, out):  # type: ignore[no-untyped-def]
    """softmax over the last axis of a 2-D array (rows x classes)."""
    for r in range(x.shape[0]):
        m = x[r, 0]
        for c in range(1, x.shape[1]):
            m = max(m, x[r, c])
        s = np.float32(0.0)
        for c in range(x.shape[1]):
            e = np.exp(x[r, c] - m)
            out[r, c] = e
            s += e
        for c in range(x.shape[1]):
            out[r, c] = out[r, c] / s


@numba.njit(cache=True, nogil=True)
def _log_softmax_rows(x, out):  # type: ignore[no-untyped-def]
    """log softmax over the last axis of a 2-D array: x - max - log(sum(exp(x - max))), the sum in float64."""
    for r in range(x.shape[0]):
        m = x[r, 0]
        for c in range(1, x.shape[1]):
            m = max(m, x[r, c])
        total = 0.0
        for c in range(x.shape[1]):
            total += np.exp(np.float64(x[r, c] - m))
        lse = np.float32(np.log(total))
        for c in range(x.shape[1]):
            out[r, c] = (x[r, c] - m) - lse


@numba.njit(cache=True, nogil=True)
def _l2_rows(x, out):  # type: ignore[no-untyped-def]
    """x / max(||x||, 1e-12) for each row of a 2-D array (the norm in float64)."""
    for r in range(x.shape[0]):
        total = 0.0
        for c in range(x.shape[1]):
            total += np.float64(x[r, c]) * np.float64(x[r, c])
        scale = np.float32(1.0 / max(np.sqrt(total), 1e-12))
        for c in range(x.shape[1]):
            out[r, c] = x[r, c] * scale


@numba.njit(cache=True, nogil=True)
def _argmax_rows(x, out):  # type: ignore[no-untyped-def]
    """index of the largest value of each row; ties: the first; a NaN wins (the first NaN), as np.argmax."""
    for r in range(x.shape[0]):
        best = 0
        for c in range(1, x.shape[1]):
            if np.isnan(x[r, best]):
                break
            if x[r, c] > x[r, best] or np.isnan(x[r, c]):
                best = c
        out[r] = best


@numba.njit(cache=True, nogil=True)
def _topk_rows(x, k, scores, indices):  # type: ignore[no-untyped-def]
    """the k largest values of each row, largest first; ties keep the lower index; NaN last.

    One pass per row keeping a sorted list of the best k (insertion), so the
    cost is rows x classes x (small k), with no sort and no allocation.
    """
    for r in range(x.shape[0]):
        filled = 0
        for c in range(x.shape[1]):
            v = x[r, c]
            if v != v:  # NaN: never ahead of a number
                continue
            if filled == k and not v > x[r, indices[r, k - 1]]:
                continue
            j = filled if filled < k else k - 1
            while j > 0 and v > x[r, indices[r, j - 1]]:
                indices[r, j] = indices[r, j - 1]
                j -= 1
            indices[r, j] = c
            if filled < k:
                filled += 1
        c = 0
        while filled < k:  # fewer numbers than k: the NaNs follow, in index order
            if x[r, c] != x[r, c]:
                indices[r, filled] = c
                filled += 1
            c += 1
        for j in range(k):
            scores[r, j] = x[r, indices[r, j]]


def _float32_rows(kernel: Any, x: Array) -> Array:
    """`kernel(rows, out)` over the rows of `x` as float32 (the last axis a row), shaped as `x`."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    rows = x.reshape(-1, x.shape[-1])
    out = np.empty_like(rows)
    kernel(rows, out)
    return out.reshape(x.shape)


def softmax(x: Array) -> Array:
    """float32 softmax over the last axis."""
    return _float32_rows(_softmax_rows, x)


def log_softmax(x: Array) -> Array:
    """float32 log softmax over the last axis (no log of a tiny probability: exact for large logits)."""
    return _float32_rows(_log_softmax_rows, x)


def l2_normalize(x: Array) -> Array:
    """float32 x divided by the L2 norm of its last axis (at least 1e-12: zero rows stay zero)."""
    return _float32_rows(_l2_rows, x)


def argmax(x: Array) -> Array:
    """int64 index of the largest value of the last axis (ties and NaN: the first, as np.argmax)."""
    x = np.ascontiguousarray(x)
    rows = x.reshape(-1, x.shape[-1])
    out = np.empty(rows.shape[0], dtype=np.int64)
    _argmax_rows(rows, out)
    return out.reshape(x.shape[:-1])


def topk(x: Array, k: int) -> tuple[Array, Array]:
    """The k largest values of the last axis, largest first (ties: the lower index; NaN last):
    float32 scores and int64 indices, each of shape x.shape[:-1] + (k,)."""
    x = np.ascontiguousarray(x, dtype=np.float64)
    rows = x.reshape(-1, x.shape[-1])
    scores = np.empty((rows.shape[0], k), dtype=np.float32)
    indices = np.empty((rows.shape[0], k), dtype=np.int64)
    _topk_rows(rows, k, scores, indices)
    return scores.reshape(x.shape[:-1] + (k,)), indices.reshape(x.shape[:-1] + (k,))
