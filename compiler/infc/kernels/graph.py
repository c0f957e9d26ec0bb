"""Resolve a step list into a dataflow: which tensor each step reads and writes.

Pre-processing starts from the request tensors and must end with exactly the
model's inputs; post-processing starts from the model's outputs and ends with
the response tensors. Every step's output shape and dtype are inferred here, so
mistakes (a layout of the wrong rank, `k` larger than the class count, label
names that do not cover the classes) are reported at `infc validate` time with
the step's location.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from infc_runtime.types import TensorSpec

__all__ = ["StepIssue", "ResolvedStep", "Dataflow", "resolve"]

_NUMERIC = {"bool", "uint8", "int8", "uint16", "int16", "uint32", "int32", "uint64", "int64",
            "float16", "float32", "float64"}
_INTEGER = {"uint8", "int8", "uint16", "int16", "uint32", "int32", "uint64", "int64"}
_FLOAT = {"float16", "float32", "float64"}


class StepIssue(Exception):
    """A problem with one step; `key` is the parameter it concerns (if any)."""

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


@dataclass(frozen=True)
class ResolvedStep:
    """A step with its tensors: what it reads, what it writes, its parameters."""

    index: int
    name: str
    params: Mapping[str, Any]
    input: TensorSpec
    outputs: tuple[TensorSpec, ...]
    keep: bool = False
    extra: Mapping[str, Any] = field(default_factory=dict)
    """Facts inferred for codegen, e.g. the normalized channel axis."""


@dataclass(frozen=True)
class Dataflow:
    """The resolved steps of one stage and the tensors it ends with."""

    steps: tuple[ResolvedStep, ...]
    start: tuple[TensorSpec, ...]
    end: tuple[TensorSpec, ...]


def _axis(axis: int, rank: int) -> int:
    if not -rank <= axis < rank:
        raise StepIssue(f"axis {axis} is out of range for a tensor of rank {rank}", "axis")
    return axis % rank


def _numeric(t: TensorSpec) -> None:
    if t.dtype not in _NUMERIC:
        raise StepIssue(f"expected a numeric tensor, got {t.dtype} tensor {t.name!r}")


def _to_float(t: TensorSpec, p: Mapping[str, Any], out: str) -> tuple[tuple[TensorSpec, ...], dict[str, Any]]:
    _numeric(t)
    return (TensorSpec(out, "float32", t.shape),), {}


def _normalize(t: TensorSpec, p: Mapping[str, Any], out: str) -> tuple[tuple[TensorSpec, ...], dict[str, Any]]:
    _numeric(t)
    if not t.shape:
        raise StepIssue(f"tensor {t.name!r} is a scalar; normalize needs a channel axis")
    axis = _axis(int(p.get("axis", -1)), len(t.shape))
    channels = t.shape[axis]
    for key in ("mean", "std"):
        n = len(p[key])
        if n != 1 and n != channels:
            size = "of any size" if channels < 0 else f"of size {channels}"
            raise StepIssue(f"expected 1 value or one per channel (axis {axis} is {size}), got {n}", key)
    return (TensorSpec(out, "float32", t.shape),), {"axis": axis}


def _layout(t: TensorSpec, p: Mapping[str, Any], out: str) -> tuple[tuple[TensorSpec, ...], dict[str, Any]]:
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


def _softmax(t: TensorSpec, p: Mapping[str, Any], out: str) -> tuple[tuple[TensorSpec, ...], dict[str, Any]]:
    _numeric(t)
    if not t.shape:
        raise StepIssue(f"tensor {t.name!r} is a scalar per row; softmax needs a class axis")
    return (TensorSpec(out, "float32", t.shape),), {}


def _topk(t: TensorSpec, p: Mapping[str, Any], out: str) -> tuple[tuple[TensorSpec, ...], dict[str, Any]]:
    _numeric(t)
    if not t.shape:
        raise StepIssue(f"tensor {t.name!r} is a scalar per row; topk needs a class axis")
    k, classes = int(p["k"]), t.shape[-1]
    if classes >= 0 and k > classes:
        raise StepIssue(f"k={k} is larger than the {classes} classes of {t.name!r}", "k")
    prefix = f"{p['output']}_" if "output" in p else ""
    shape = (*t.shape[:-1], k)
    return ((TensorSpec(f"{prefix}scores", "float32", shape), TensorSpec(f"{prefix}indices", "int64", shape)),
            {"classes": classes})


def _mean_pool(t: TensorSpec, p: Mapping[str, Any], out: str) -> tuple[tuple[TensorSpec, ...], dict[str, Any]]:
    if t.dtype not in _FLOAT:
        raise StepIssue(f"expected a float tensor [.., sequence, hidden], got {t.dtype} tensor {t.name!r}")
    if len(t.shape) < 2:
        raise StepIssue(f"expected a tensor [.., sequence, hidden], got shape {list(t.shape)} for {t.name!r}")
    return (TensorSpec(out, "float32", (*t.shape[:-2], t.shape[-1])),), {}


def _l2_normalize(t: TensorSpec, p: Mapping[str, Any], out: str) -> tuple[tuple[TensorSpec, ...], dict[str, Any]]:
    _numeric(t)
    if not t.shape:
        raise StepIssue(f"tensor {t.name!r} is a scalar per row; l2_normalize needs a vector axis")
    return (TensorSpec(out, "float32", t.shape),), {}


def _labels(t: TensorSpec, p: Mapping[str, Any], out: str) -> tuple[tuple[TensorSpec, ...], dict[str, Any]]:
    if t.dtype not in _INTEGER:
        raise StepIssue(f"expected an integer index tensor, got {t.dtype} tensor {t.name!r}")
    return (TensorSpec(out, "bytes", t.shape),), {}


_Rule = Callable[[TensorSpec, Mapping[str, Any], str], tuple[tuple[TensorSpec, ...], dict[str, Any]]]
# name -> (shape/dtype rule, default output name; None = the input's own name)
RULES: dict[str, tuple[_Rule, str | None]] = {
    "to_float": (_to_float, None),
    "normalize": (_normalize, None),
    "layout": (_layout, None),
    "softmax": (_softmax, None),
    "topk": (_topk, None),
    "labels": (_labels, "labels"),
    "mean_pool": (_mean_pool, None),
    "l2_normalize": (_l2_normalize, None),
}


def _check_mask(t: TensorSpec, p: Mapping[str, Any], tensors: Mapping[str, TensorSpec]) -> None:
    name = p["mask"]
    mask = tensors.get(name)
    if mask is None:
        raise StepIssue(f"no tensor named {name!r} to use as mask (have: {', '.join(tensors)})", "mask")
    if mask.dtype not in _NUMERIC:
        raise StepIssue(f"mask {name!r} must be numeric, got {mask.dtype}", "mask")
    from ..modelio import shape_matches

    if not shape_matches(mask.shape, t.shape[:-1]):
        raise StepIssue(f"mask {name!r} has shape {list(mask.shape)}, expected {list(t.shape[:-1])} "
                        f"(the shape of {t.name!r} without its last axis)", "mask")


def resolve(steps: Sequence[tuple[str, Mapping[str, Any]]], start: Sequence[TensorSpec],
            on_issue: Callable[[int, StepIssue], None], side: Sequence[TensorSpec] = ()) -> Dataflow:
    """Walk the steps from the `start` tensors; report each step's problem via `on_issue`.

    A step reads `input` (default: the previous step's first output, or the
    only tensor there is) and, unless `keep: true`, replaces it. `side` tensors
    (for post-processing: the model's inputs) may be read by parameters such as
    `mask`, but are not part of the result. Resolution stops at the first broken
    step (later steps would only report follow-on errors).
    """
    live: dict[str, TensorSpec] = {t.name: t for t in start}
    current: str | None = start[0].name if len(start) == 1 else None
    resolved: list[ResolvedStep] = []
    index_range: dict[str, int] = {}
    for i, (name, params) in enumerate(steps):
        try:
            src = params.get("input", current)
            if src is None:
                raise StepIssue(f"there are several tensors ({', '.join(live)}); say which with `input:`")
            if src not in live:
                raise StepIssue(f"no tensor named {src!r} here (have: {', '.join(live) or 'none'})", "input")
            rule, default_out = RULES[name]
            out_name = params.get("output", default_out or src)
            outputs, extra = rule(live[src], params, out_name)
            if "mask" in params:
                _check_mask(live[src], params, {**{t.name: t for t in side}, **live})
            if name == "labels":
                classes = index_range.get(src, -1)
                if classes >= 0 and len(params["names"]) < classes:
                    raise StepIssue(f"expected at least {classes} names (one per class of {src!r}), "
                                    f"got {len(params['names'])}", "names")
        except StepIssue as issue:
            on_issue(i, issue)
            return Dataflow(tuple(resolved), tuple(start), tuple(live.values()))
        keep = bool(params.get("keep", False))
        inp = live[src]
        if not keep:
            del live[src]
        for t in outputs:
            live[t.name] = t
        if name == "topk":
            index_range[outputs[1].name] = int(extra["classes"])
        resolved.append(ResolvedStep(i, name, dict(params), inp, outputs, keep, extra))
        # topk's indices are what later steps (labels) usually want
        current = outputs[-1].name if name == "topk" else outputs[0].name
    return Dataflow(tuple(resolved), tuple(start), tuple(live.values()))
