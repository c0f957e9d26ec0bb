"""Per-element image steps: to_float, scale, normalize, layout, channel_order. They fuse into one loop
(with resize, center_crop and pad: see resize.py, crop.py)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from infc_runtime.types import TensorSpec

from ..registry import StepDef, register
from ..types import FuseState, Ix, ResolvedStep, StepIssue, check_axis, literal, require_numeric

Array = npt.NDArray[Any]
Out = tuple[tuple[TensorSpec, ...], dict[str, Any]]

_number_list = {"type": "array", "items": {"type": "number"}, "minItems": 1}
_positive_list = {"type": "array", "items": {"type": "number", "exclusiveMinimum": 0}, "minItems": 1}
_layout = {"type": "string", "pattern": "^[NCHWD]+$", "description": "axis letters, e.g. HWC"}


# -- to_float ---------------------------------------------------------------
def _to_float_infer(t: TensorSpec, p: Mapping[str, Any], out: str, others: Mapping[str, TensorSpec]) -> Out:
    require_numeric(t)
    return (TensorSpec(out, "float32", t.shape),), {}


def _to_float_ref(x: Array, p: Mapping[str, Any]) -> tuple[Array, ...]:
    return (x.astype(np.float32) * np.float32(p.get("scale", 1.0)),)


def _to_float_fuse(state: FuseState, step: ResolvedStep) -> None:
    scale = step.params.get("scale")
    state.values([f"v = np.float32(v){'' if scale is None else f' * np.float32({literal(scale)})'}"])


register(StepDef("to_float", ("pre",), "cast to float32 and multiply by `scale`", _to_float_infer, _to_float_ref,
                 fuse=_to_float_fuse,
                 params={"scale": {"type": "number", "description": "factor, e.g. 0.00392156862745098 (1/255)"}}))


# -- scale ------------------------------------------------------------------
def _scale_infer(t: TensorSpec, p: Mapping[str, Any], out: str, others: Mapping[str, TensorSpec]) -> Out:
    require_numeric(t)
    return (TensorSpec(out, "float32", t.shape),), {}


def _scale_ref(x: Array, p: Mapping[str, Any]) -> tuple[Array, ...]:
    y = x.astype(np.float32) * np.float32(p["factor"])
    return (y + np.float32(p["offset"]) if p.get("offset") else y,)


def _scale_fuse(state: FuseState, step: ResolvedStep) -> None:
    offset = step.params.get("offset")
    plus = f" + np.float32({literal(offset)})" if offset else ""
    state.values([f"v = np.float32(v) * np.float32({literal(step.params['factor'])}){plus}"])


register(StepDef("scale", ("pre",), "float32 `x * factor + offset` (e.g. factor 1/127.5, offset -1 for [-1, 1])",
                 _scale_infer, _scale_ref, fuse=_scale_fuse,
                 params={"factor": {"type": "number", "description": "multiplier"},
                         "offset": {"type": "number", "description": "added after the multiplication, default 0"}},
                 required=("factor",)))


# -- normalize --------------------------------------------------------------
def _normalize_infer(t: TensorSpec, p: Mapping[str, Any], out: str, others: Mapping[str, TensorSpec]) -> Out:
    require_numeric(t)
    if not t.shape:
        raise StepIssue(f"tensor {t.name!r} is a scalar; normalize needs a channel axis")
    axis = check_axis(int(p.get("axis", -1)), len(t.shape))
    channels = t.shape[axis]
    for key in ("mean", "std"):
        n = len(p[key])
        if n != 1 and n != channels:
            size = "of any size" if channels < 0 else f"of size {channels}"
            raise StepIssue(f"expected 1 value or one per channel (axis {axis} is {size}), got {n}", key)
    return (TensorSpec(out, "float32", t.shape),), {"axis": axis}


def _normalize_ref(x: Array, p: Mapping[str, Any]) -> tuple[Array, ...]:
    axis = int(p.get("axis", -1)) % (x.ndim - 1) + 1  # axis of the request tensor, after batch
    shape = [1] * x.ndim
    shape[axis] = -1
    mean = np.asarray(p["mean"], np.float32).reshape(shape)
    std = np.asarray(p["std"], np.float32).reshape(shape)
    return ((x.astype(np.float32) - mean) / std,)


def _normalize_fuse(state: FuseState, step: ResolvedStep) -> None:
    axis = int(step.extra["axis"])

    def per_channel(key: str) -> Callable[[str], str]:
        """The channel's value of `key`, from the channel's index: a literal, or a constant array read there."""
        numbers = step.params[key]
        if len(numbers) == 1:
            one = f"np.float32({literal(numbers[0])})"
            return lambda chan: one
        name = state.table(f"{key}_{state.group}_{step.index}",
                           f"np.array({[float(v) for v in numbers]!r}, dtype=np.float32)")
        return lambda chan: f"{name}[{chan}]"

    mean, std = per_channel("mean"), per_channel("std")
    state.values(lambda axes: [f"v = (np.float32(v) - {mean(axes[axis])}) / {std(axes[axis])}"])


register(StepDef("normalize", ("pre",), "(x - mean[c]) / std[c] along `axis` (the channel axis)",
                 _normalize_infer, _normalize_ref, fuse=_normalize_fuse,
                 params={"mean": _number_list, "std": _positive_list,
                         "axis": {"type": "integer", "description": "channel axis of the request tensor, default -1"}},
                 required=("mean", "std")))


# -- layout -----------------------------------------------------------------
def _layout_infer(t: TensorSpec, p: Mapping[str, Any], out: str, others: Mapping[str, TensorSpec]) -> Out:
    src, dst = str(p["from"]), str(p["to"])
    for key, letters in (("from", src), ("to", dst)):
        if len(set(letters)) != len(letters):
            raise StepIssue(f"axis letters must be unique, got {letters!r}", key)
    if len(src) != len(t.shape):
        raise StepIssue(f"{src!r} names {len(src)} axes, but tensor {t.name!r} has shape "
                        f"{list(t.shape)} ({len(t.shape)} axes)", "from")
    missing = set(src) - set(dst)
    if missing:
        raise StepIssue(f"axes {''.join(sorted(missing))!r} of 'from' are missing in 'to' {dst!r}", "to")
    # source axis of each output axis; None marks a new size-1 axis
    perm = tuple(src.index(c) if c in src else None for c in dst)
    shape = tuple(1 if a is None else t.shape[a] for a in perm)
    return (TensorSpec(out, t.dtype, shape),), {"perm": perm}


def _layout_ref(x: Array, p: Mapping[str, Any]) -> tuple[Array, ...]:
    src, dst = "*" + str(p["from"]), "*" + str(p["to"])  # "*": the batch axis (no letter it could clash with)
    for c in dst:
        if c not in src:
            x, src = x[..., None], src + c
    return (np.ascontiguousarray(np.transpose(x, [src.index(c) for c in dst])),)


def _layout_fuse(state: FuseState, step: ResolvedStep) -> None:
    perm = step.extra["perm"]  # output axis j is input axis perm[j] (None: a new size-1 axis)
    rank = len(state.sizes)

    def source(idx: list[Ix]) -> list[Ix]:
        src = [Ix("0")] * rank
        for j, a in enumerate(perm):
            if a is not None:
                src[a] = idx[j]
        return src

    state.reindex(source)
    state.sizes = ["1" if a is None else state.sizes[a] for a in perm]
    state.order = [None if a is None else state.order[a] for a in perm]


register(StepDef("layout", ("pre",), "permute axes; letters in `to` but not in `from` become size-1 axes",
                 _layout_infer, _layout_ref, fuse=_layout_fuse, params={"from": _layout, "to": _layout},
                 required=("from", "to")))


# -- channel_order ----------------------------------------------------------
def _channel_order_infer(t: TensorSpec, p: Mapping[str, Any], out: str, others: Mapping[str, TensorSpec]) -> Out:
    src, dst = str(p["from"]), str(p["to"])
    for key, letters in (("from", src), ("to", dst)):
        if len(set(letters)) != len(letters):
            raise StepIssue(f"channel letters must be unique, got {letters!r}", key)
    missing = sorted(set(dst) - set(src))
    if missing:
        raise StepIssue(f"channels {''.join(missing)!r} of 'to' are not in 'from' {src!r}", "to")
    if not t.shape:
        raise StepIssue(f"tensor {t.name!r} is a scalar; channel_order needs a channel axis")
    axis = check_axis(int(p.get("axis", -1)), len(t.shape))
    if t.shape[axis] != len(src):
        size = "known only at run time" if t.shape[axis] < 0 else str(t.shape[axis])
        raise StepIssue(f"{src!r} names {len(src)} channels, but axis {axis} of {t.name!r} (shape "
                        f"{list(t.shape)}) has {size}", "from")
    shape = list(t.shape)
    shape[axis] = len(dst)
    return (TensorSpec(out, t.dtype, tuple(shape)),), {"axis": axis, "order": [src.index(c) for c in dst]}


def _channel_order_ref(x: Array, p: Mapping[str, Any]) -> tuple[Array, ...]:
    src, dst = str(p["from"]), str(p["to"])
    axis = int(p.get("axis", -1)) % (x.ndim - 1) + 1
    return (np.ascontiguousarray(np.take(x, [src.index(c) for c in dst], axis=axis)),)


def _channel_order_fuse(state: FuseState, step: ResolvedStep) -> None:
    axis, order = int(step.extra["axis"]), list(step.extra["order"])
    count = int(state.sizes[axis])  # known: the shape rule asks for it
    if order == list(range(count - 1, -1, -1)):  # RGB <-> BGR: arithmetic, no table
        def channel(c: Ix) -> Ix:
            return Ix(f"({count - 1} - {c.text})", c.deps)
    else:
        table = f"order_{state.group}_{step.index}"
        state.table(table, f"np.array({order!r}, dtype=np.intp)")

        def channel(c: Ix) -> Ix:
            return Ix(f"{table}[{c.text}]", c.deps)

        state.gathers = True

    state.reindex(lambda idx: [channel(ix) if k == axis else ix for k, ix in enumerate(idx)])
    state.sizes[axis] = str(len(order))


register(StepDef("channel_order", ("pre",), "reorder (or drop) channels by letters: `from: RGB, to: BGR`; "
                 "`axis`: the channel axis, default -1", _channel_order_infer, _channel_order_ref,
                 fuse=_channel_order_fuse,
                 params={"from": {"type": "string", "pattern": "^[A-Z]+$", "description": "channel letters, e.g. RGB"},
                         "to": {"type": "string", "pattern": "^[A-Z]+$",
                                "description": "the channels wanted, in order (letters of `from`), e.g. BGR"},
                         "axis": {"type": "integer", "description": "channel axis of the request tensor, default -1"}},
                 required=("from", "to")))
