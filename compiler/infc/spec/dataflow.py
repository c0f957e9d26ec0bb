"""The spec's pre/post dataflows: resolved once, when the spec loads, and checked against the model.

The pre steps must turn the request inputs into what the model takes, and the
post steps must apply to what the model gives. Every problem is a located
`SpecError`. Both stages are checked in full: a broken step is reported and
the steps that do not depend on it are still checked (see `kernels.graph.resolve`).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from ..kernels.graph import Dataflow, StepIssue, resolve
from ..modelio import Signature, shape_matches

if TYPE_CHECKING:
    from infc_runtime.types import TensorSpec

    from ..errors import PathPart, SpecError
    from .model import Step

__all__ = ["Stages", "Pipeline", "check_pipeline", "broken"]


class Stages(Protocol):
    """What the pipeline check reads of a spec: a `Spec` is one, and so is what `load_spec`
    assembles from the usable parts of a spec that may have problems elsewhere."""

    @property
    def inputs(self) -> Sequence[TensorSpec]: ...
    @property
    def preprocess(self) -> Sequence[Step]: ...
    @property
    def postprocess(self) -> Sequence[Step]: ...
    def error(self, path: Sequence[PathPart], message: str) -> SpecError: ...


class Pipeline(NamedTuple):
    """A spec's resolved dataflows (request inputs -> model inputs, model outputs -> response)
    and every located problem found on the way."""

    pre: Dataflow
    post: Dataflow
    errors: list[SpecError]


def _resolve_stages(spec: Stages, signature: Signature, skip: Collection[str]) -> Pipeline:
    """The pre and post dataflows of a spec against its model, and their errors (a stage
    named in `skip` is taken as empty)."""
    errors: list[SpecError] = []

    def on_issue(stage: str):  # noqa: ANN202 - a small closure factory
        steps = spec.preprocess if stage == "preprocess" else spec.postprocess

        def report(i: int, issue: StepIssue) -> None:
            step = steps[i]
            path = (*step.path, step.name, issue.key) if issue.key else tuple(step.path)
            errors.append(spec.error(path, str(issue)))
        return report

    def steps(stage: str) -> list[tuple[str, Any]]:
        chosen = () if stage in skip else spec.preprocess if stage == "preprocess" else spec.postprocess
        return [(s.name, s.params) for s in chosen]

    pre = resolve(steps("preprocess"), list(spec.inputs), on_issue("preprocess"))
    post = resolve(steps("postprocess"), signature.outputs, on_issue("postprocess"), side=signature.inputs)
    return Pipeline(pre, post, errors)


def broken(errors: Sequence[SpecError], stage: str) -> bool:
    """Whether a step of `stage` is among `errors` (then some of its tensors are unknown)."""
    return any(e.path[:1] == (stage,) for e in errors)


def _fmt(dtype: str, shape: tuple[int, ...]) -> str:
    return f"{dtype} {list(shape)}"


def check_pipeline(spec: Stages, signature: Signature, skip: Collection[str] = ()) -> Pipeline:
    """The spec's pre/post dataflows against the model whose signature is given, with every
    located problem of its steps.

    `skip`: stages not to check, taken as empty (ones whose problems are already reported, e.g.
    a step list the schema rejected, or a preprocess whose request inputs are unknown).
    """
    pre, post, errors = _resolve_stages(spec, signature, skip)
    if "preprocess" in skip:
        return Pipeline(pre, post, errors)
    where = ("preprocess",) if spec.preprocess else ("inputs",)
    what = "pre-processing yields" if spec.preprocess else "the request inputs are"
    partial = broken(errors, "preprocess")  # some results unknown: judge only the tensors that are known
    have = {t.name: t for t in pre.end}
    for want in signature.inputs:
        got = have.pop(want.name, None)
        if got is None and not partial:
            errors.append(spec.error(where, f"the model takes input {want.name!r} ({_fmt(want.dtype, want.shape)}), "
                                            f"but {what} {', '.join(repr(n) for n in [t.name for t in pre.end])}"))
        elif got is not None and (got.dtype != want.dtype or not shape_matches(got.shape, want.shape)):
            errors.append(spec.error(where, f"model input {want.name!r} takes {_fmt(want.dtype, want.shape)} "
                                            f"(batch dimension aside), but {what} {_fmt(got.dtype, got.shape)}"))
    for extra in [] if partial else have:
        errors.append(spec.error(where, f"{what} tensor {extra!r}, which the model does not take"))
    return Pipeline(pre, post, errors)
