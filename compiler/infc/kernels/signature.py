"""Check that the pre steps turn the request inputs into what the model takes,
and that the post steps apply to what the model gives.

Runs at `infc validate` time; every problem is a located `SpecError`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import onnx

from ..modelio import graph_inputs, graph_outputs, shape_matches
from .graph import Dataflow, StepIssue, resolve

if TYPE_CHECKING:
    from ..errors import SpecError
    from ..spec import Spec

__all__ = ["check_pipeline", "resolve_stages"]


def resolve_stages(spec: Spec, model: onnx.ModelProto) -> tuple[Dataflow, Dataflow, list[SpecError]]:
    """The pre and post dataflows of a spec against its model, and their errors."""
    errors: list[SpecError] = []

    def on_issue(stage: str):  # noqa: ANN202 - a small closure factory
        steps = spec.preprocess if stage == "preprocess" else spec.postprocess

        def report(i: int, issue: StepIssue) -> None:
            step = steps[i]
            path = (*step.path, step.name, issue.key) if issue.key else tuple(step.path)
            errors.append(spec.error(path, str(issue)))
        return report

    pre = resolve([(s.name, s.params) for s in spec.preprocess], list(spec.inputs), on_issue("preprocess"))
    post = resolve([(s.name, s.params) for s in spec.postprocess], graph_outputs(model), on_issue("postprocess"),
                   side=graph_inputs(model))
    return pre, post, errors


def _fmt(dtype: str, shape: tuple[int, ...]) -> str:
    return f"{dtype} {list(shape)}"


def check_pipeline(spec: Spec, model: onnx.ModelProto) -> list[SpecError]:
    """Every located problem of the spec's pre/post steps against the model."""
    pre, _post, errors = resolve_stages(spec, model)
    if errors:
        return errors
    where = ("preprocess",) if spec.preprocess else ("inputs",)
    what = "pre-processing yields" if spec.preprocess else "the request inputs are"
    have = {t.name: t for t in pre.end}
    for want in graph_inputs(model):
        got = have.pop(want.name, None)
        if got is None:
            errors.append(spec.error(where, f"the model takes input {want.name!r} ({_fmt(want.dtype, want.shape)}), "
                                            f"but {what} {', '.join(repr(n) for n in [t.name for t in pre.end])}"))
        elif got.dtype != want.dtype or not shape_matches(got.shape, want.shape):
            errors.append(spec.error(where, f"model input {want.name!r} takes {_fmt(want.dtype, want.shape)} "
                                            f"(batch dimension aside), but {what} {_fmt(got.dtype, got.shape)}"))
    for extra in have:
        errors.append(spec.error(where, f"{what} tensor {extra!r}, which the model does not take"))
    return errors
