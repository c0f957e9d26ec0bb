"""What the image steps share: image shapes, size parameters, per-image references."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from infc_runtime.types import TensorSpec

from ..types import NUMERIC, FuseState, StepIssue

__all__ = ["IMAGE_DTYPES", "SIZE", "Array", "Out", "image_shape", "size_param", "per_image", "guard_size"]

Array = npt.NDArray[Any]
Out = tuple[tuple[TensorSpec, ...], dict[str, Any]]

IMAGE_DTYPES = ("uint8", "int8", "uint16", "int16", "float32", "float64")
"""Element types a resampling step takes (integers are interpolated in float32 and rounded)."""

SIZE = {"type": "array", "items": {"type": "integer", "minimum": 1}, "minItems": 2, "maxItems": 2,
        "description": "[height, width] in pixels"}


def image_shape(t: TensorSpec, step: str, dtypes: Sequence[str] = tuple(NUMERIC)) -> None:
    """Check that `t` is an image [H, W] or [H, W, C] with 1-4 channels last, of one of `dtypes`."""
    if t.dtype not in dtypes:
        raise StepIssue(f"{step} takes an image of {', '.join(dtypes)}, got {t.dtype} tensor {t.name!r}")
    shape = list(t.shape)
    if len(shape) == 2 or (len(shape) == 3 and 1 <= shape[2] <= 4):
        return
    hint = ""
    if len(shape) == 3 and 1 <= shape[0] <= 4:
        hint = " (it looks channels-first: put a `layout` to CHW after the image steps, not before)"
    raise StepIssue(f"{step} takes an image [H, W] or [H, W, C] with 1 to 4 channels last, got shape {shape} "
                    f"for {t.name!r}{hint}")


def size_param(p: dict[str, Any] | Any, key: str) -> tuple[int, int]:
    """A `[h, w]` parameter (the schema has checked its form)."""
    h, w = p[key]
    return int(h), int(w)


def guard_size(state: FuseState, step: str, name: str) -> None:
    """Driver check: an image of run-time size has at least one pixel."""
    h, w = state.sizes[0], state.sizes[1]
    if not (h.isdigit() and w.isdigit()):
        state.check(f"{h} < 1 or {w} < 1",
                    f"{name!r}: {step} needs an image of at least 1x1 pixels, got {{{h}}}x{{{w}}}")


def per_image(fn: Callable[[Array], Array]) -> Callable[[Array | list[Array]], Array]:
    """A batched reference from a per-image one: the batch is an array [N, ...] or, after `decode`,
    a list of images of different sizes; the results must agree in shape."""

    def batched(x: Array | list[Array]) -> Array:
        outs = [fn(img) for img in x]
        shapes = {o.shape for o in outs}
        if len(shapes) > 1:
            raise ValueError(f"the images of one request differ in size after this step: {sorted(shapes)}")
        return np.stack(outs)

    return batched
