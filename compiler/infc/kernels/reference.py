"""Numpy references of every step: the meaning the generated kernels must match.

Each function takes the input tensor (batch on axis 0) and the step's
parameters and returns its outputs in the order `graph.RULES` declares them.
Tests compare every generated kernel and every fused group against these.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["REFERENCES", "run_reference"]

Array = npt.NDArray[Any]


def to_float(x: Array, p: Mapping[str, Any]) -> tuple[Array, ...]:
    return (x.astype(np.float32) * np.float32(p.get("scale", 1.0)),)


def normalize(x: Array, p: Mapping[str, Any]) -> tuple[Array, ...]:
    axis = int(p.get("axis", -1)) % (x.ndim - 1) + 1  # axis of the request tensor, after batch
    shape = [1] * x.ndim
    shape[axis] = -1
    mean = np.asarray(p["mean"], np.float32).reshape(shape)
    std = np.asarray(p["std"], np.float32).reshape(shape)
    return ((x.astype(np.float32) - mean) / std,)


def layout(x: Array, p: Mapping[str, Any]) -> tuple[Array, ...]:
    src, dst = "N" + str(p["from"]), "N" + str(p["to"])
    for c in dst:
        if c not in src:
            x, src = x[..., None], src + c
    return (np.ascontiguousarray(np.transpose(x, [src.index(c) for c in dst])),)


def softmax(x: Array, p: Mapping[str, Any]) -> tuple[Array, ...]:
    x = x.astype(np.float32)
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return ((e / e.sum(axis=-1, keepdims=True)).astype(np.float32),)


def topk(x: Array, p: Mapping[str, Any]) -> tuple[Array, ...]:
    k = int(p["k"])
    idx = np.argsort(-x.astype(np.float64), axis=-1, kind="stable")[..., :k]
    return np.take_along_axis(x, idx, axis=-1).astype(np.float32), idx.astype(np.int64)


def labels(x: Array, p: Mapping[str, Any]) -> tuple[Array, ...]:
    names = np.array([n.encode() for n in p["names"]], dtype=object)
    return (names[x],)


def mean_pool(x: Array, p: Mapping[str, Any], mask: Array | None = None) -> tuple[Array, ...]:
    assert mask is not None
    m = mask.astype(np.float32)[..., None]
    total = (x.astype(np.float32) * m).sum(axis=-2)
    return ((total / np.maximum(m.sum(axis=-2), np.float32(1e-9))).astype(np.float32),)


def l2_normalize(x: Array, p: Mapping[str, Any]) -> tuple[Array, ...]:
    x = x.astype(np.float32)
    norm = np.sqrt((x.astype(np.float64) ** 2).sum(axis=-1, keepdims=True))
    return ((x / np.maximum(norm, 1e-12)).astype(np.float32),)


REFERENCES = {f.__name__: f for f in (to_float, normalize, layout, softmax, topk, labels, mean_pool, l2_normalize)}


def run_reference(steps: list[tuple[str, Mapping[str, Any]]], tensors: dict[str, Array],
                  side: dict[str, Array] | None = None) -> dict[str, Array]:
    """Apply steps with the same dataflow rules as the kernels (see graph.resolve)."""
    from infc_runtime.types import TensorSpec

    from .graph import StepIssue, resolve

    def fail(i: int, issue: StepIssue) -> None:
        raise ValueError(f"step {i}: {issue}")

    def specs(arrays: dict[str, Array]) -> list[TensorSpec]:
        return [TensorSpec(k, str(v.dtype) if v.dtype != object else "bytes", v.shape[1:]) for k, v in arrays.items()]

    side = side or {}
    flow = resolve(steps, specs(tensors), fail, specs(side))
    live = dict(tensors)
    for step in flow.steps:
        if "mask" in step.params:
            mask = {**side, **live}[step.params["mask"]]
            outs = REFERENCES[step.name](live[step.input.name], step.params, mask)  # type: ignore[call-arg]
        else:
            outs = REFERENCES[step.name](live[step.input.name], step.params)
        if not step.keep:
            del live[step.input.name]
        live.update({spec.name: arr for spec, arr in zip(step.outputs, outs, strict=True)})
    return live
