"""Classifier post-processing: softmax, topk, labels."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from infc_runtime.types import TensorSpec

from ..registry import StepDef, register
from ..types import INTEGER, EmitContext, ModuleText, ResolvedStep, StepIssue, require_numeric

Array = npt.NDArray[Any]
Out = tuple[tuple[TensorSpec, ...], dict[str, Any]]


def _rows(t: TensorSpec, step: str) -> None:
    require_numeric(t)
    if not t.shape:
        raise StepIssue(f"tensor {t.name!r} is a scalar per row; {step} needs a class axis")


# -- softmax ----------------------------------------------------------------
def _softmax_infer(t: TensorSpec, p: Mapping[str, Any], out: str, others: Mapping[str, TensorSpec]) -> Out:
    _rows(t, "softmax")
    return (TensorSpec(out, "float32", t.shape),), {}


def _softmax_ref(x: Array, p: Mapping[str, Any]) -> tuple[Array, ...]:
    x = x.astype(np.float32)
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return ((e / e.sum(axis=-1, keepdims=True)).astype(np.float32),)


def _softmax_emit(text: ModuleText, step: ResolvedStep, ctx: EmitContext) -> None:
    text.call(ctx, "softmax", outputs=[step.outputs[0].name])


register(StepDef("softmax", ("post",), "softmax over the last axis", _softmax_infer, _softmax_ref,
                 emit=_softmax_emit))


# -- log_softmax --------------------------------------------------------------
def _log_softmax_infer(t: TensorSpec, p: Mapping[str, Any], out: str, others: Mapping[str, TensorSpec]) -> Out:
    _rows(t, "log_softmax")
    return (TensorSpec(out, "float32", t.shape),), {}


def _log_softmax_ref(x: Array, p: Mapping[str, Any]) -> tuple[Array, ...]:
    """x - max - log(sum(exp(x - max))) in float32, the sum of exponentials in float64."""
    shifted = x.astype(np.float32) - x.astype(np.float32).max(axis=-1, keepdims=True)
    lse = np.log(np.exp(shifted.astype(np.float64)).sum(axis=-1, keepdims=True)).astype(np.float32)
    return ((shifted - lse).astype(np.float32),)


def _log_softmax_emit(text: ModuleText, step: ResolvedStep, ctx: EmitContext) -> None:
    text.call(ctx, "log_softmax", outputs=[step.outputs[0].name], module="infc_runtime.ops.rowwise")


register(StepDef("log_softmax", ("post",), "log of the softmax over the last axis (float32, stable for large "
                 "logits)", _log_softmax_infer, _log_softmax_ref, emit=_log_softmax_emit))


# -- topk -------------------------------------------------------------------
def _topk_infer(t: TensorSpec, p: Mapping[str, Any], out: str, others: Mapping[str, TensorSpec]) -> Out:
    _rows(t, "topk")
    k, classes = int(p["k"]), t.shape[-1]
    if classes >= 0 and k > classes:
        raise StepIssue(f"k={k} is larger than the {classes} classes of {t.name!r}", "k")
    prefix = f"{p['output']}_" if "output" in p else ""
    shape = (*t.shape[:-1], k)
    return ((TensorSpec(f"{prefix}scores", "float32", shape), TensorSpec(f"{prefix}indices", "int64", shape)),
            {"classes": classes})


def _topk_ref(x: Array, p: Mapping[str, Any]) -> tuple[Array, ...]:
    k = int(p["k"])
    idx = np.argsort(-x.astype(np.float64), axis=-1, kind="stable")[..., :k]
    return np.take_along_axis(x, idx, axis=-1).astype(np.float32), idx.astype(np.int64)


def _topk_emit(text: ModuleText, step: ResolvedStep, ctx: EmitContext) -> None:
    text.call(ctx, "topk", str(int(step.params["k"])), outputs=[o.name for o in step.outputs])


register(StepDef("topk", ("post",), "the k largest values of the last axis: `scores` and `indices`",
                 _topk_infer, _topk_ref, emit=_topk_emit, params={"k": {"type": "integer", "minimum": 1}},
                 required=("k",)))


# -- labels -----------------------------------------------------------------
def _labels_infer(t: TensorSpec, p: Mapping[str, Any], out: str, others: Mapping[str, TensorSpec]) -> Out:
    if t.dtype not in INTEGER:
        raise StepIssue(f"expected an integer index tensor, got {t.dtype} tensor {t.name!r}")
    return (TensorSpec(out, "bytes", t.shape),), {}


def _labels_ref(x: Array, p: Mapping[str, Any]) -> tuple[Array, ...]:
    names = np.array([n.encode() for n in p["names"]], dtype=object)
    return (names[x],)


def _labels_check(classes: int, p: Mapping[str, Any], src: str) -> None:
    if len(p["names"]) < classes:
        raise StepIssue(f"expected at least {classes} names (one per class of {src!r}), got {len(p['names'])}",
                        "names")


def _labels_emit(text: ModuleText, step: ResolvedStep, ctx: EmitContext) -> None:
    names = text.constant(f"NAMES_{ctx.group}", f"np.array({[n.encode() for n in step.params['names']]!r}, "
                                                "dtype=object)")
    text.call(ctx, "labels", names, outputs=[step.outputs[0].name])


register(StepDef("labels", ("post",), "map class indices to names (BYTES output)", _labels_infer, _labels_ref,
                 emit=_labels_emit, check_classes=_labels_check, default_output="labels",
                 params={"names": {"type": "array", "items": {"type": "string"}, "minItems": 1}},
                 required=("names",)))
