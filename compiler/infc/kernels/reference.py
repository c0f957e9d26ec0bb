"""Run steps with their numpy references: the meaning generated kernels must match.

Tests compare every generated kernel and every fused group against this.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy.typing as npt

from infc_runtime.types import TensorSpec

from .graph import resolve
from .registry import get
from .types import StepIssue

__all__ = ["run_reference"]

Array = npt.NDArray[Any]


def _specs(arrays: Mapping[str, Array]) -> list[TensorSpec]:
    return [TensorSpec(k, "bytes" if v.dtype == object else str(v.dtype), v.shape[1:]) for k, v in arrays.items()]


def run_reference(steps: list[tuple[str, Mapping[str, Any]]], tensors: dict[str, Array],
                  side: dict[str, Array] | None = None) -> dict[str, Array]:
    """Apply steps with the same dataflow rules as the kernels (see graph.resolve)."""

    def fail(i: int, issue: StepIssue) -> None:
        raise ValueError(f"step {i}: {issue}")

    side = side or {}
    flow = resolve(steps, _specs(tensors), fail, _specs(side))
    live = dict(tensors)
    for step in flow.steps:
        definition = get(step.name)
        readable = {**side, **live}
        extra = {param: readable[step.params[param]] for param in definition.side}
        # references see the facts `infer` found (e.g. a tabular step's column indices) beside the params
        outs = definition.reference(live[step.input.name], {**step.params, **step.extra}, **extra)
        if not step.keep:
            del live[step.input.name]
            for param in definition.consumes:
                live.pop(step.params[param], None)
        live.update({spec.name: arr for spec, arr in zip(step.outputs, outs, strict=True)})
    return live
