"""resize: nearest or bilinear, to a fixed size, by the shorter side, or to fit inside a box.

Conventions (the numpy reference below is their definition; README repeats them):
- pixel centres at half-integers (align_corners=False): output pixel o samples
  the input at s = (o + 0.5) * in / out - 0.5, per axis;
- `bilinear`: OpenCV's INTER_LINEAR and PyTorch's bilinear with align_corners=False
  and no antialiasing: s clamped to [0, in - 1], its two neighbours floor(s) and
  floor(s) + 1 (clamped) weighted 1 - f and f. Weights are float32 and so is the
  arithmetic (float64 for float64 images); integer images are rounded half up
  and keep their dtype, like OpenCV's (which uses 11-bit fixed-point weights, so
  uint8 results may differ from it by 1). A downscale by more than 2 aliases, as
  OpenCV's INTER_LINEAR does;
- `nearest`: input pixel floor((o + 0.5) * in / out), PIL's NEAREST and OpenCV's
  INTER_NEAREST_EXACT; exact;
- `shorter: N`: the shorter side becomes N, the longer int(N * long / short)
  (torchvision's Resize(N)); `fit: [h, w]`: the largest size with the input's
  aspect ratio inside h x w, each side int(side * r + 0.5), r = min(h / H, w / W)
  (letterbox, before `pad`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from infc_runtime.types import TensorSpec

from ..registry import StepDef, register
from ..types import FuseState, Inner, Ix, Line, ResolvedStep, StepIssue
from ._image import IMAGE_DTYPES, SIZE, Array, Out, guard_size, image_shape, per_image, size_param

__all__ = ["shorter_size", "fit_size", "linear_taps", "nearest_taps"]

_MODES = ("size", "shorter", "fit")


def shorter_size(h: int, w: int, n: int) -> tuple[int, int]:
    """Output size when the shorter side becomes `n` (torchvision's rule)."""
    return (n, int(n * w / h)) if h <= w else (int(n * h / w), n)


def fit_size(h: int, w: int, box: tuple[int, int]) -> tuple[int, int]:
    """The largest size with the aspect ratio of h x w inside `box`."""
    r = min(box[0] / h, box[1] / w)
    return max(1, int(h * r + 0.5)), max(1, int(w * r + 0.5))


def linear_taps(n_in: int, n_out: int) -> tuple[Array, Array, Array, Array]:
    """numpy twin of `infc_runtime.ops.linear_taps`: (i0, i1, w0, w1) for each output index."""
    s = np.maximum((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0.0)
    f = np.floor(s)
    i, w = f.astype(np.intp), s - f
    last = i >= n_in - 1
    i, w = np.where(last, n_in - 1, i), np.where(last, 0.0, w)
    return i, np.minimum(i + 1, n_in - 1), (1.0 - w).astype(np.float32), w.astype(np.float32)


def nearest_taps(n_in: int, n_out: int) -> Array:
    """numpy twin of `infc_runtime.ops.nearest_taps`."""
    return np.minimum(np.floor((np.arange(n_out) + 0.5) * (n_in / n_out)).astype(np.intp), n_in - 1)


# -- shape rule -------------------------------------------------------------
def _mode(p: Mapping[str, Any]) -> str:
    given = [m for m in _MODES if m in p]
    if len(given) != 1:
        found = f"got {' and '.join(given)}" if given else "got none"
        raise StepIssue(f"give exactly one of `size: [h, w]`, `shorter: N` or `fit: [h, w]`, {found}")
    return given[0]


def _out_size(h: int, w: int, p: Mapping[str, Any], mode: str) -> tuple[int, int]:
    """The output size for an input of h x w (-1: known only at run time)."""
    if mode == "size":
        return size_param(p, "size")
    if h < 0 or w < 0:
        return -1, -1
    return shorter_size(h, w, int(p["shorter"])) if mode == "shorter" else fit_size(h, w, size_param(p, "fit"))


def _infer(t: TensorSpec, p: Mapping[str, Any], out: str, others: Mapping[str, TensorSpec]) -> Out:
    image_shape(t, "resize", IMAGE_DTYPES)
    mode = _mode(p)
    oh, ow = _out_size(t.shape[0], t.shape[1], p, mode)
    return (TensorSpec(out, t.dtype, (oh, ow, *t.shape[2:])),), {"mode": mode}


# -- numpy reference --------------------------------------------------------
def _resize_one(img: Array, p: Mapping[str, Any]) -> Array:
    h, w = img.shape[:2]
    oh, ow = _out_size(h, w, p, _mode(p))
    if p.get("method", "bilinear") == "nearest":
        return img[nearest_taps(h, oh)][:, nearest_taps(w, ow)]
    y0, y1, wy0, wy1 = linear_taps(h, oh)
    x0, x1, wx0, wx1 = linear_taps(w, ow)
    a: Array = img.astype(np.float64 if img.dtype == np.float64 else np.float32)
    tail = (1,) * (img.ndim - 2)  # channels, if any
    wx0, wx1 = wx0.reshape(-1, *tail), wx1.reshape(-1, *tail)
    wy0, wy1 = wy0.reshape(-1, 1, *tail), wy1.reshape(-1, 1, *tail)
    top, bottom = a[y0], a[y1]
    v = (top[:, x0] * wx0 + top[:, x1] * wx1) * wy0 + (bottom[:, x0] * wx0 + bottom[:, x1] * wx1) * wy1
    if img.dtype.kind in "iu":
        v = np.floor(v + np.float32(0.5))
    return v.astype(img.dtype)


def _reference(x: Array | list[Array], p: Mapping[str, Any]) -> tuple[Array, ...]:
    return (per_image(lambda img: _resize_one(img, p))(x),)


# -- fused code -------------------------------------------------------------
def _driver_sizes(state: FuseState, p: Mapping[str, Any], mode: str) -> tuple[str, str]:
    """Output size expressions: literals, or size variables the driver computes per request."""
    h, w = state.sizes[0], state.sizes[1]
    if mode == "size":
        oh, ow = size_param(p, "size")
        return str(oh), str(ow)
    if h.isdigit() and w.isdigit():
        oh, ow = _out_size(int(h), int(w), p, mode)
        return str(oh), str(ow)
    if mode == "shorter":
        n = int(p["shorter"])
        return (state.size_var("h", f"{n} if {h} <= {w} else int({n} * {h} / {w})"),
                state.size_var("w", f"int({n} * {w} / {h}) if {h} <= {w} else {n}"))
    bh, bw = size_param(p, "fit")
    r = f"min({bh} / {h}, {bw} / {w})"
    return (state.size_var("h", f"max(1, int({h} * {r} + 0.5))"),
            state.size_var("w", f"max(1, int({w} * {r} + 0.5))"))


def _table(state: FuseState, names: list[tuple[str, str]], table: str, ix: Ix) -> list[tuple[Line, Ix]]:
    """Lines reading the sampling tables at one output index (they run once per row or column)."""
    out = []
    for name, column in names:
        var = state.fresh(name)
        out.append((Line(f"{var} = {table}{column}[{ix.text}]", ix.deps), Ix(var, ix.deps)))
    return out


_Y = [("y0", "i0"), ("y1", "i1"), ("wy0", "w0"), ("wy1", "w1")]
_X = [("x0", "i0"), ("x1", "i1"), ("wx0", "w0"), ("wx1", "w1")]


def _fuse(state: FuseState, step: ResolvedStep) -> None:
    p = step.params
    guard_size(state, "resize", step.input.name)
    state.gathers = True
    h, w = state.sizes[0], state.sizes[1]
    oh, ow = _driver_sizes(state, p, str(step.extra["mode"]))
    ty, tx = state.fresh("rows"), state.fresh("cols")
    if p.get("method", "bilinear") == "nearest":
        state.imports.add("nearest_taps")
        state.prologue += [f"{ty}i0 = nearest_taps({h}, {oh})", f"{tx}i0 = nearest_taps({w}, {ow})"]

        def nearest(idx: list[Ix], inner: Inner) -> list[Line]:
            (ly, iy), = _table(state, _Y[:1], ty, idx[0])
            (lx, ix), = _table(state, _X[:1], tx, idx[1])
            return [ly, lx, *inner([iy, ix, *idx[2:]])]

        state.stage(nearest)
    else:
        state.imports.add("linear_taps")
        state.prologue += [f"{ty}i0, {ty}i1, {ty}w0, {ty}w1 = linear_taps({h}, {oh})",
                           f"{tx}i0, {tx}i1, {tx}w0, {tx}w1 = linear_taps({w}, {ow})"]
        work = "float64" if step.input.dtype == "float64" else "float32"
        integer = step.input.dtype not in ("float32", "float64")

        def bilinear(idx: list[Ix], inner: Inner) -> list[Line]:
            ys = _table(state, _Y, ty, idx[0])
            xs = _table(state, _X, tx, idx[1])
            lines = [line for line, _ in ys + xs]
            samples = []
            for y in (ys[0][1], ys[1][1]):
                for x in (xs[0][1], xs[1][1]):
                    lines += inner([y, x, *idx[2:]])
                    samples.append(state.fresh("s"))
                    lines.append(Line(f"{samples[-1]} = np.{work}(v)"))
            (wx0, wx1), (wy0, wy1) = (xs[2][1].text, xs[3][1].text), (ys[2][1].text, ys[3][1].text)
            lines.append(Line(f"v = ({samples[0]} * {wx0} + {samples[1]} * {wx1}) * {wy0} + "
                              f"({samples[2]} * {wx0} + {samples[3]} * {wx1}) * {wy1}"))
            if integer:  # rounded half up, back to the image's dtype
                lines.append(Line(f"v = np.{step.input.dtype}(np.floor(v + np.float32(0.5)))"))
            return lines

        state.stage(bilinear)
    state.sizes = [oh, ow, *state.sizes[2:]]


register(StepDef(
    "resize", ("pre",), "resize an image [H, W(, C)]: `size: [h, w]`, `shorter: N` (aspect kept) or "
    "`fit: [h, w]` (aspect kept, inside h x w); `method` bilinear (default) or nearest",
    _infer, _reference, fuse=_fuse, example_size=lambda size, p: None,  # a warm-up image of any size will do
    params={"size": SIZE,
            "shorter": {"type": "integer", "minimum": 1, "description": "the shorter side's new length"},
            "fit": {**SIZE, "description": "[height, width] of the box to fit inside, aspect ratio kept"},
            "method": {"enum": ["bilinear", "nearest"], "description": "default bilinear (half-pixel centres)"}}))
