"""Score post-processing: sigmoid and round (per element, fused), argmax, threshold.

Float results are float32. NaN follows numpy where numpy has a rule (argmax:
the first NaN wins) and is a "no" where a decision is made (threshold: NaN is
below any threshold).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from infc_runtime.types import TensorSpec

from ..registry import StepDef, register
from ..types import EmitContext, FuseState, ModuleText, ResolvedStep, StepIssue, literal, require_numeric

Array = npt.NDArray[Any]
Out = tuple[tuple[TensorSpec, ...], dict[str, Any]]


def _classes(t: TensorSpec, step: str) -> int:
    require_numeric(t)
    if not t.shape:
        raise StepIssue(f"tensor {t.name!r} is a scalar per row; {step} needs a class axis (its last)")
    return t.shape[-1]


# -- sigmoid ----------------------------------------------------------------
def _sigmoid_infer(t: TensorSpec, p: Mapping[str, Any], out: str, others: Mapping[str, TensorSpec]) -> Out:
    require_numeric(t)
    return (TensorSpec(out, "float32", t.shape),), {}


def _sigmoid_ref(x: Array, p: Mapping[str, Any]) -> tuple[Array, ...]:
    x = x.astype(np.float32)
    with np.errstate(over="ignore"):  # exp(-x) overflows to inf for x < -88: 1 / inf = 0, as wanted
        return ((np.float32(1) / (np.float32(1) + np.exp(-x))).astype(np.float32),)


def _sigmoid_fuse(state: FuseState, step: ResolvedStep) -> None:
    state.values(["v = np.float32(1.0) / (np.float32(1.0) + np.exp(-np.float32(v)))"])


register(StepDef("sigmoid", ("post",), "1 / (1 + exp(-x)) per element (float32)", _sigmoid_infer, _sigmoid_ref,
                 fuse=_sigmoid_fuse))


# -- round ------------------------------------------------------------------
def _round_infer(t: TensorSpec, p: Mapping[str, Any], out: str, others: Mapping[str, TensorSpec]) -> Out:
    require_numeric(t)
    return (TensorSpec(out, "float32", t.shape),), {}


def _round_ref(x: Array, p: Mapping[str, Any]) -> tuple[Array, ...]:
    x, decimals = x.astype(np.float32), int(p.get("decimals", 0))
    with np.errstate(over="ignore", invalid="ignore"):
        rounded = np.round(x, decimals)
    if decimals >= 0:  # from 2^23 on, float32 holds whole numbers only: numpy's x * 10^d would overflow to inf
        rounded = np.where(np.abs(x) < np.float32(2**23), rounded, x)
    return (rounded,)


def _round_fuse(state: FuseState, step: ResolvedStep) -> None:
    # numpy's own recipe, in float32: rint(x * 10^d) / 10^d (or rint(x / 10^-d) * 10^-d for d < 0)
    decimals = int(step.params.get("decimals", 0))
    factor = f"np.float32({literal(10.0 ** abs(decimals))})"
    if decimals < 0:
        rounded = f"v = np.rint(v / {factor}) * {factor}"
    else:  # from 2^23 on, float32 holds whole numbers only: x * 10^d could overflow to inf
        rounded = f"v = np.rint(v * {factor}) / {factor} if abs(v) < np.float32(8388608.0) else v"
    state.values(["v = np.float32(v)", rounded])


register(StepDef("round", ("post",), "round half to even to `decimals` places, in float32 (numpy's rule; "
                 "values from 2^23 on, already whole, stay as they are)",
                 _round_infer, _round_ref, fuse=_round_fuse,
                 params={"decimals": {"type": "integer", "minimum": -15, "maximum": 15,
                                      "description": "decimal places (negative: tens, hundreds, ...); default 0"}}))


# -- argmax -----------------------------------------------------------------
def _argmax_infer(t: TensorSpec, p: Mapping[str, Any], out: str, others: Mapping[str, TensorSpec]) -> Out:
    classes = _classes(t, "argmax")
    if classes == 0:
        raise StepIssue(f"tensor {t.name!r} has no classes (its last axis is empty)")
    return (TensorSpec(out, "int64", t.shape[:-1]),), {"classes": classes}


def _argmax_ref(x: Array, p: Mapping[str, Any]) -> tuple[Array, ...]:
    return (np.argmax(x, axis=-1).astype(np.int64),)


def _argmax_emit(text: ModuleText, step: ResolvedStep, ctx: EmitContext) -> None:
    text.call(ctx, "argmax", outputs=[step.outputs[0].name])


register(StepDef("argmax", ("post",), "index of the largest value of the last axis (int64; ties and NaN: the "
                 "first, as numpy)", _argmax_infer, _argmax_ref, emit=_argmax_emit, default_output="class_id"))


# -- threshold --------------------------------------------------------------
def _threshold_infer(t: TensorSpec, p: Mapping[str, Any], out: str, others: Mapping[str, TensorSpec]) -> Out:
    require_numeric(t)
    if not math.isfinite(float(p.get("threshold", 0.5))):
        raise StepIssue("expected a finite threshold", "threshold")
    shape = t.shape
    if "column" in p:
        columns = _classes(t, "threshold with `column`")
        column = int(p["column"])
        if columns >= 0 and not -columns <= column < columns:
            raise StepIssue(f"column {column} is out of range for the {columns} columns of {t.name!r}", "column")
        shape = t.shape[:-1]
    if "names" in p:
        return (TensorSpec(out, "bytes", shape),), {}
    return (TensorSpec(out, "int64", shape),), {"classes": 2}


def _threshold_ref(x: Array, p: Mapping[str, Any]) -> tuple[Array, ...]:
    if "column" in p:
        x = x[..., int(p["column"])]
    decision = (x.astype(np.float64) >= float(p.get("threshold", 0.5))).astype(np.int64)
    if "names" in p:
        return (np.array([n.encode() for n in p["names"]], dtype=object)[decision],)
    return (decision,)


def _threshold_emit(text: ModuleText, step: ResolvedStep, ctx: EmitContext) -> None:
    p = step.params
    names = "None"
    if "names" in p:
        names = text.constant(f"NAMES_{ctx.group}", f"np.array({[n.encode() for n in p['names']]!r}, dtype=object)")
    text.call(ctx, "threshold", literal(p.get("threshold", 0.5)), repr(p.get("column")), names,
              outputs=[step.outputs[0].name])


register(StepDef("threshold", ("post",), "decision `score >= threshold` (NaN: below): 0/1 (int64), or `names`",
                 _threshold_infer, _threshold_ref, emit=_threshold_emit, default_output="decision",
                 params={"threshold": {"type": "number", "description": "the score at and above which the answer "
                                                                        "is the second name (1); default 0.5"},
                         "names": {"type": "array", "items": {"type": "string"}, "minItems": 2, "maxItems": 2,
                                   "description": "[below, at or above], e.g. [deny, approve]: BYTES output"},
                         "column": {"type": "integer", "description": "score column of the last axis (e.g. 1 of a "
                                                                      "2-class softmax); default: every element"}}))
