"""Embedding post-processing: mean_pool (under a mask) and l2_normalize."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from infc_runtime.types import TensorSpec

from ...modelio import shape_matches
from ..registry import StepDef, register
from ..types import FLOAT, NUMERIC, EmitContext, ModuleText, ResolvedStep, StepIssue, require_numeric

Array = npt.NDArray[Any]
Out = tuple[tuple[TensorSpec, ...], dict[str, Any]]


# -- mean_pool --------------------------------------------------------------
def _mean_pool_infer(t: TensorSpec, p: Mapping[str, Any], out: str, others: Mapping[str, TensorSpec]) -> Out:
    if t.dtype not in FLOAT:
        raise StepIssue(f"expected a float tensor [.., sequence, hidden], got {t.dtype} tensor {t.name!r}")
    if len(t.shape) < 2:
        raise StepIssue(f"expected a tensor [.., sequence, hidden], got shape {list(t.shape)} for {t.name!r}")
    mask = others.get(p["mask"])
    if mask is None:
        raise StepIssue(f"no tensor named {p['mask']!r} to use as mask (have: {', '.join(others)})", "mask")
    if mask.dtype not in NUMERIC:
        raise StepIssue(f"mask {mask.name!r} must be numeric, got {mask.dtype}", "mask")
    if not shape_matches(mask.shape, t.shape[:-1]):
        raise StepIssue(f"mask {mask.name!r} has shape {list(mask.shape)}, expected {list(t.shape[:-1])} "
                        f"(the shape of {t.name!r} without its last axis)", "mask")
    return (TensorSpec(out, "float32", (*t.shape[:-2], t.shape[-1])),), {}


def _mean_pool_ref(x: Array, p: Mapping[str, Any], mask: Array | None = None) -> tuple[Array, ...]:
    assert mask is not None
    m = mask.astype(np.float32)[..., None]
    total = (x.astype(np.float32) * m).sum(axis=-2)
    return ((total / np.maximum(m.sum(axis=-2), np.float32(1e-9))).astype(np.float32),)


def _mean_pool_emit(text: ModuleText, step: ResolvedStep, ctx: EmitContext) -> None:
    text.call(ctx, "mean_pool", f"t[{step.params['mask']!r}]", outputs=[step.outputs[0].name])


register(StepDef("mean_pool", ("post",), "mean over the sequence axis (-2) of the rows where `mask` is non-zero",
                 _mean_pool_infer, _mean_pool_ref, emit=_mean_pool_emit, side=("mask",),
                 params={"mask": {"type": "string", "minLength": 1,
                                  "description": "tensor of weights [.., S], e.g. the request's attention_mask"}},
                 required=("mask",)))


# -- l2_normalize -----------------------------------------------------------
def _l2_infer(t: TensorSpec, p: Mapping[str, Any], out: str, others: Mapping[str, TensorSpec]) -> Out:
    require_numeric(t)
    if not t.shape:
        raise StepIssue(f"tensor {t.name!r} is a scalar per row; l2_normalize needs a vector axis")
    return (TensorSpec(out, "float32", t.shape),), {}


def _l2_ref(x: Array, p: Mapping[str, Any]) -> tuple[Array, ...]:
    x = x.astype(np.float32)
    norm = np.sqrt((x.astype(np.float64) ** 2).sum(axis=-1, keepdims=True))
    return ((x / np.maximum(norm, 1e-12)).astype(np.float32),)


def _l2_emit(text: ModuleText, step: ResolvedStep, ctx: EmitContext) -> None:
    text.call(ctx, "l2_normalize", outputs=[step.outputs[0].name])


register(StepDef("l2_normalize", ("post",), "divide by the L2 norm of the last axis (zero rows stay zero)",
                 _l2_infer, _l2_ref, emit=_l2_emit))
