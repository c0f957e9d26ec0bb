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
    `mask`, but are not part of the result.

    A broken step is reported and resolution goes on: what it would have written
    is unknown, so a later step that reads an unknown tensor (or, once a step has
    failed, any tensor not known here: the broken step may have been meant to make
    it) is skipped without a report of its own, while steps on other tensors are
    still checked. The result holds the steps that resolved and the known tensors.
    """
    live: dict[str, TensorSpec] = {t.name: t for t in start}
    unknown: set[str] = set()  # tensors a broken (or skipped) step would have written
    current: str | None = start[0].name if len(start) == 1 else None
    resolved: list[ResolvedStep] = []
    index_range: dict[str, int] = {}
    for i, (name, params) in enumerate(steps):
        step = get(name)
        src = params.get("input", current)
        reads = [src, *(params[p] for p in step.side if isinstance(params.get(p), str))]
        known = live.keys() | {t.name for t in side}
        if unknown and any(r is None or r in unknown or r not in known for r in reads):
            current = _forget(live, unknown, params, step.default_output, src)  # follows from a broken step
            continue
        try:
            if src is None:
                raise StepIssue(f"there are several tensors ({', '.join(live)}); say which with `input:`")
            if src not in live:
                raise StepIssue(f"no tensor named {src!r} here (have: {', '.join(live) or 'none'})", "input")
            out_name = params.get("output", step.default_output or src)
            others = {**{t.name: t for t in side}, **live}
            outputs, extra = step.infer(live[src], params, out_name, others)
            classes = index_range.get(src, -1)
            if step.check_classes is not None and classes >= 0:
                step.check_classes(classes, params, src)
        except StepIssue as issue:
            on_issue(i, issue)
            current = _forget(live, unknown, params, step.default_output, src)
            continue
        keep = bool(params.get("keep", False))
        inp = live[src]
        if not keep:
            del live[src]
            for param in step.consumes:  # e.g. the scores nms reads beside its boxes
                live.pop(params[param], None)
        for t in outputs:
            live[t.name] = t
            unknown.discard(t.name)
        if "classes" in extra:  # indices that later steps (labels) can check names against
            index_range[outputs[-1].name] = int(extra["classes"])
        resolved.append(ResolvedStep(i, name, dict(params), inp, outputs, keep, extra))
        # a step whose last output is an index tensor (topk) hands that on
        current = outputs[-1].name if "classes" in extra else outputs[0].name
    return Dataflow(tuple(resolved), tuple(start), tuple(live.values()))


_UNNAMED = "\0unknown"
"""Stands for the result of a broken step that has no name yet (none given, no input known)."""


def _forget(live: dict[str, TensorSpec], unknown: set[str], params: Mapping[str, Any],
            default_output: str | None, src: str | None) -> str:
    """A step could not be resolved: what it reads (unless kept) and writes becomes unknown.
    Returns the name later steps read by default."""
    out_name = params.get("output", default_output or src) or _UNNAMED
    if src is not None and not params.get("keep", False):
        live.pop(src, None)
    live.pop(out_name, None)
    unknown.add(out_name)
    return str(out_name)
