"""Image sampling the fused loops use: resize tables per axis, and running a loop image by image.

`linear_taps` and `nearest_taps` are called from inside a generated `@numba.njit`
loop (its prologue) to build a resize's sampling tables once per call;
`per_image` runs a fused group's driver on each image of a list (decoded images
of different sizes).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numba
import numpy as np
import numpy.typing as npt

from ..abi import RequestError

__all__ = ["linear_taps", "nearest_taps", "per_image"]

Array = npt.NDArray[Any]


@numba.njit(cache=True, nogil=True)
def linear_taps(n_in, n_out):  # type: ignore[no-untyped-def]
    """Bilinear sampling of an axis: for each output index, two input indices and their weights.

    Pixel centres at half-integers (align_corners=False, as OpenCV's INTER_LINEAR):
    output o samples s = (o + 0.5) * n_in / n_out - 0.5, clamped to [0, n_in - 1].
    """
    scale = n_in / n_out
    i0 = np.empty(n_out, np.intp)
    i1 = np.empty(n_out, np.intp)
    w0 = np.empty(n_out, np.float32)
    w1 = np.empty(n_out, np.float32)
    for o in range(n_out):
        s = max((o + 0.5) * scale - 0.5, 0.0)
        f = np.floor(s)
        i = int(f)
        w = s - f
        if i >= n_in - 1:
            i = n_in - 1
            w = 0.0
        i0[o] = i
        i1[o] = min(i + 1, n_in - 1)
        w0[o] = 1.0 - w
        w1[o] = w
    return i0, i1, w0, w1


@numba.njit(cache=True, nogil=True)
def nearest_taps(n_in, n_out):  # type: ignore[no-untyped-def]
    """Nearest sampling of an axis: output o reads input floor((o + 0.5) * n_in / n_out)."""
    scale = n_in / n_out
    i0 = np.empty(n_out, np.intp)
    for o in range(n_out):
        i0[o] = min(int(np.floor((o + 0.5) * scale)), n_in - 1)
    return i0


def per_image(group: Callable[[Array], Array], x: Array | list[Array], name: str) -> Array:
    """Run a fused group's driver on each image of a list (decoded images of different sizes)."""
    if not isinstance(x, list):
        return group(x)
    outs = [group(img[None]) for img in x]
    if len({o.shape for o in outs}) > 1:
        sizes = ", ".join(sorted({str(list(o.shape[1:])) for o in outs}))
        raise RequestError(f"input {name!r}: the images of one request still differ in shape after "
                           f"pre-processing ({sizes}); send them in separate requests, or resize them")
    return np.concatenate(outs)
