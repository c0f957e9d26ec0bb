"""center_crop and pad (letterbox): an image's pixels moved into a window of a fixed size.

Both centre the window: the offset is (input - window) // 2 for a crop and
(window - input) // 2 for a pad, per axis (rounding down: one more row at the
bottom / column at the right when the difference is odd). An image of run-time
size that does not fit (smaller than the crop, larger than the pad) fails its
request with a message saying so; a known size that does not fit is a spec error.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from infc_runtime.types import TensorSpec

from ..registry import StepDef, register
from ..types import FuseState, Inner, Ix, Line, ResolvedStep, StepIssue
from ._image import SIZE, Array, Out, image_shape, per_image, size_param

_PAD_DTYPES = ("uint8", "int8", "uint16", "int16", "int32", "int64", "float32", "float64")


def _offsets(state: FuseState, step: ResolvedStep, window: tuple[int, int], crop: bool) -> list[str]:
    """The window's offset on each axis: literals, or size variables checked by the driver."""
    offsets = []
    for axis, (size, want) in enumerate(zip(state.sizes[:2], window, strict=True)):
        if size.isdigit():
            offsets.append(str((int(size) - want) // 2 if crop else (want - int(size)) // 2))
            continue
        expr = f"({size} - {want}) // 2" if crop else f"({want} - {size}) // 2"
        side = ("height", "width")[axis]
        if crop:
            state.check(f"{size} < {want}", f"{step.input.name!r}: center_crop to {window[0]}x{window[1]} needs "
                        f"an image at least that large, got {side} {{{size}}}")
        else:
            state.check(f"{size} > {want}", f"{step.input.name!r}: pad to {window[0]}x{window[1]} needs an image "
                        f"at most that large (resize it with `fit` first), got {side} {{{size}}}")
        offsets.append(state.size_var("top" if axis == 0 else "left", expr))
    return offsets


def _check_known(t: TensorSpec, window: tuple[int, int], crop: bool) -> None:
    for axis, (size, want) in enumerate(zip(t.shape[:2], window, strict=True)):
        side = ("height", "width")[axis]
        if size >= 0 and crop and size < want:
            raise StepIssue(f"the crop's {side} {want} is larger than the image's {side} {size} "
                            f"({t.name!r} has shape {list(t.shape)})", "size")
        if size >= 0 and not crop and size > want:
            raise StepIssue(f"the pad's {side} {want} is smaller than the image's {side} {size} "
                            f"({t.name!r} has shape {list(t.shape)}); resize it with `fit` first", "size")


# -- center_crop ------------------------------------------------------------
def _crop_infer(t: TensorSpec, p: Mapping[str, Any], out: str, others: Mapping[str, TensorSpec]) -> Out:
    image_shape(t, "center_crop")
    window = size_param(p, "size")
    _check_known(t, window, crop=True)
    return (TensorSpec(out, t.dtype, (*window, *t.shape[2:])),), {}


def _crop_one(img: Array, p: Mapping[str, Any]) -> Array:
    (h, w), (ch, cw) = img.shape[:2], size_param(p, "size")
    if h < ch or w < cw:
        raise ValueError(f"image {h}x{w} is smaller than the crop {ch}x{cw}")
    top, left = (h - ch) // 2, (w - cw) // 2
    return img[top:top + ch, left:left + cw]


def _crop_ref(x: Array | list[Array], p: Mapping[str, Any]) -> tuple[Array, ...]:
    return (per_image(lambda img: _crop_one(img, p))(x),)


def _crop_fuse(state: FuseState, step: ResolvedStep) -> None:
    window = size_param(step.params, "size")
    top, left = _offsets(state, step, window, crop=True)
    state.reindex(lambda idx: [Ix(f"({idx[0].text} + {top})", idx[0].deps),
                               Ix(f"({idx[1].text} + {left})", idx[1].deps), *idx[2:]])
    state.sizes = [str(window[0]), str(window[1]), *state.sizes[2:]]


def _crop_example(size: tuple[int, int], p: Mapping[str, Any]) -> tuple[int, int]:
    """A warm-up image for a crop is at least as large as its window."""
    window = size_param(p, "size")
    return max(size[0], window[0]), max(size[1], window[1])


register(StepDef("center_crop", ("pre",), "the centre `size: [h, w]` of an image [H, W(, C)]",
                 _crop_infer, _crop_ref, fuse=_crop_fuse, example_size=_crop_example, params={"size": SIZE},
                 required=("size",)))


# -- pad --------------------------------------------------------------------
def _pad_infer(t: TensorSpec, p: Mapping[str, Any], out: str, others: Mapping[str, TensorSpec]) -> Out:
    image_shape(t, "pad", _PAD_DTYPES)
    window = size_param(p, "size")
    _check_known(t, window, crop=False)
    value = p.get("value", 0)
    if t.dtype not in ("float32", "float64"):
        info = np.iinfo(t.dtype)
        if value != int(value) or not info.min <= value <= info.max:
            raise StepIssue(f"{value!r} is not a {t.dtype} value (an integer in {info.min}..{info.max})", "value")
    return (TensorSpec(out, t.dtype, (*window, *t.shape[2:])),), {}


def _pad_one(img: Array, p: Mapping[str, Any]) -> Array:
    (h, w), (ph, pw) = img.shape[:2], size_param(p, "size")
    if h > ph or w > pw:
        raise ValueError(f"image {h}x{w} is larger than the pad {ph}x{pw}")
    out = np.full((ph, pw, *img.shape[2:]), p.get("value", 0), dtype=img.dtype)
    top, left = (ph - h) // 2, (pw - w) // 2
    out[top:top + h, left:left + w] = img
    return out


def _pad_ref(x: Array | list[Array], p: Mapping[str, Any]) -> tuple[Array, ...]:
    return (per_image(lambda img: _pad_one(img, p))(x),)


def _pad_fuse(state: FuseState, step: ResolvedStep) -> None:
    window = size_param(step.params, "size")
    h, w = state.sizes[0], state.sizes[1]
    top, left = _offsets(state, step, window, crop=False)
    value = step.params.get("value", 0)
    fill = f"np.{step.input.dtype}({value if step.input.dtype in ('float32', 'float64') else int(value)!r})"

    def pad(idx: list[Ix], inner: Inner) -> list[Line]:
        lines, inside, clamped = [], [], []
        for ix, offset, size in ((idx[0], top, h), (idx[1], left, w)):
            at, ok = state.fresh("at"), state.fresh("inside")
            # read a clamped pixel everywhere (no branch around the reads), keep it only inside the image
            lines += [Line(f"{at} = min(max({ix.text} - {offset}, 0), {size} - 1)", ix.deps),
                      Line(f"{ok} = {offset} <= {ix.text} < {offset} + {size}", ix.deps)]
            clamped.append(Ix(at, ix.deps))
            inside.append(ok)
        lines += inner([*clamped, *idx[2:]])
        return [*lines, Line(f"v = v if {' and '.join(inside)} else {fill}")]

    state.stage(pad)
    state.gathers = True  # clamped reads
    state.sizes = [str(window[0]), str(window[1]), *state.sizes[2:]]


register(StepDef("pad", ("pre",), "place an image [H, W(, C)] in the centre of `size: [h, w]` filled with `value` "
                 "(letterbox: after a resize with `fit`)", _pad_infer, _pad_ref, fuse=_pad_fuse,
                 params={"size": SIZE, "value": {"type": "number", "description": "fill value, default 0"}},
                 required=("size",)))
