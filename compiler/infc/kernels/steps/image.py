"""Per-element image steps: to_float, normalize, layout. They fuse into one loop."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from infc_runtime.types import TensorSpec

from ..registry import StepDef, register
from ..types import FuseState, Ix, ResolvedStep, StepIssue, check_axis, literal, render, require_numeric

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
    state.body.append(render("steps/to_float.j2", scale=literal(scale) if scale is not None else None))


register(StepDef("to_float", ("pre",), "cast to float32 and multiply by `scale`", _to_float_infer, _to_float_ref,
                 fuse=_to_float_fuse,
                 params={"scale": {"type": "number", "description": "factor, e.g. 0.00392156862745098 (1/255)"}}))


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
    chan = state.axes[int(step.extra["axis"])]
    values = {}
    for key in ("mean", "std"):
        numbers = step.params[key]
        if len(numbers) == 1:
            values[key] = f"np.float32({literal(numbers[0])})"
        else:
            const = f"{key}_{state.group}_{step.index}"
            state.constants.append(f"{const.upper()} = np.array({[float(v) for v in numbers]!r}, dtype=np.float32)")
            state.args.append(const)
            values[key] = f"{const}[{chan}]"
    state.body.append(render("steps/normalize.j2", **values))


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
    src, dst = "N" + str(p["from"]), "N" + str(p["to"])
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
