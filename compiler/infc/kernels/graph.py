"""Resolve a step list into a dataflow: which tensor each step reads and writes.

Pre-processing starts from the request tensors and must end with exactly the
model's inputs; post-processing starts from the model's outputs and ends with
the response tensors. Every step's output shape and dtype are inferred here
(by the step's own rule in the registry), so mistakes (a layout of the wrong
rank, `k` larger than the class count, label names that do not cover the
classes) are reported at `infc validate` time with the step's location.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from infc_runtime.types import TensorSpec

from .registry import get
from .types import Dataflow, ResolvedStep, StepIssue

__all__ = ["StepIssue", "ResolvedStep", "Dataflow", "resolve"]


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
        step = get(name)
        try:
            src = params.get("input", current)
            if src is None:
                raise StepIssue(f"there are several tensors ({', '.join(live)}); say which with `input:`")
            if src not in live:
                raise StepIssue(f"no tensor named {src!r} here (have: {', '.join(live) or 'none'})", "input")
            out_name = params.get("output", step.default_output or src)
            others = {**{t.name: t for t in side}, **live}
            outputs, extra = step.infer(live[src], params, out_name, others)
            classes = index_range.get(src, -1)
            if name == "labels" and classes >= 0 and len(params["names"]) < classes:
                raise StepIssue(f"expected at least {classes} names (one per class of {src!r}), "
                                f"got {len(params['names'])}", "names")
        except StepIssue as issue:
            on_issue(i, issue)
            return Dataflow(tuple(resolved), tuple(start), tuple(live.values()))
        keep = bool(params.get("keep", False))
        inp = live[src]
        if not keep:
            del live[src]
            for param in step.consumes:  # e.g. the scores nms reads beside its boxes
                live.pop(params[param], None)
        for t in outputs:
            live[t.name] = t
        if "classes" in extra:  # indices that later steps (labels) can check names against
            index_range[outputs[-1].name] = int(extra["classes"])
        resolved.append(ResolvedStep(i, name, dict(params), inp, outputs, keep, extra))
        # a step whose last output is an index tensor (topk) hands that on
        current = outputs[-1].name if "classes" in extra else outputs[0].name
    return Dataflow(tuple(resolved), tuple(start), tuple(live.values()))
