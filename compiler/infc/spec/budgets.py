"""Accuracy budgets of a spec: the rules the schema cannot state, and their resolved form.

`budget.accuracy` is one mapping or a list of them, each naming a metric of
`infc.accuracy` with its bound (`min`, or `max` for an error metric) and its
parameters. The schema checks types; here: the bound each metric takes and its
range, parameters a metric does not take, then, once the data and the model are
known, labels, sample counts and the tensor each budget compares.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from infc_runtime.types import TensorSpec

from ..accuracy import METRICS, PARAMS
from ..errors import format_path
from ..kernels.types import INTEGER
from .validate import Finding, suggest
from .yaml import KeyPath

__all__ = ["Written", "written", "static_findings", "resolve", "data_findings", "output_findings"]

_HERE: KeyPath = ("budget", "accuracy")


class Written(NamedTuple):
    """One budget as the spec wrote it, and where."""

    path: KeyPath
    entry: dict[str, Any]


def written(accuracy: Any) -> list[Written]:
    """Each budget mapping under `budget.accuracy` (tolerates data the schema rejected)."""
    if isinstance(accuracy, dict):
        return [Written(_HERE, accuracy)]
    if isinstance(accuracy, list):
        return [Written((*_HERE, i), a) for i, a in enumerate(accuracy) if isinstance(a, dict)]
    return []


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _named(path: KeyPath) -> str:
    return f" ({format_path(path)})" if len(path) > len(_HERE) else ""


def static_findings(accuracy: Any) -> list[Finding]:
    """Bounds and parameters of every budget against its metric."""
    out: list[Finding] = []
    for path, entry in written(accuracy):
        name = entry.get("metric")
        if not isinstance(name, str) or name not in METRICS:
            continue  # the schema reports it
        metric = METRICS[name]
        bound, other = metric.bound, "max" if metric.bound == "min" else "min"
        if other in entry:
            out.append(Finding((*path, other), f"metric {name} takes `{bound}`, not `{other}`"))
        value = entry.get(bound)
        if value is None:
            what = "lowest" if bound == "min" else "highest"
            out.append(Finding((*path, bound), f"missing required key for metric {name}: the {what} "
                                               "acceptable value", at=path))
        elif _number(value) and (value < metric.low or (metric.high is not None and value > metric.high)):
            wanted = f"in [{metric.low:g}, {metric.high:g}]" if metric.high is not None else f">= {metric.low:g}"
            out.append(Finding((*path, bound), f"expected a number {wanted} for {name}, got {value!r}"))
        for param in PARAMS:
            if param in entry and param not in metric.params:
                takes = [m for m in METRICS if param in METRICS[m].params]
                out.append(Finding((*path, param), f"metric {name} takes no `{param}` ({', '.join(takes)} "
                                                   f"{'does' if len(takes) == 1 else 'do'})", at_key=True))
    return out


def resolve(accuracy: Any) -> list[dict[str, Any]]:
    """Validated budgets in canonical form: a list; metric, bound, then every parameter
    the metric takes that is written or has a default, in the registry's order."""
    out = []
    for _, entry in written(accuracy):
        metric = METRICS[entry["metric"]]
        resolved: dict[str, Any] = {"metric": metric.name, metric.bound: float(entry[metric.bound])}
        defaults = metric.defaults()
        for param in metric.params:
            value = entry.get(param, defaults.get(param))
            if value is not None:
                resolved[param] = int(value) if PARAMS[param].schema.get("type") == "integer" else value
        out.append(resolved)
    return out


def data_findings(accuracy: Any, labels: np.ndarray | None, samples: int | None, file: str,
                  at: KeyPath) -> list[Finding]:
    """What each budget needs of the validation data at `file` (written at `at`): labels,
    binary labels for auc, more samples than neighbours."""
    out: list[Finding] = []
    for path, entry in written(accuracy):
        metric = METRICS[entry["metric"]]
        if metric.labels and labels is None:
            out.append(Finding(at, f"{file} has no `labels` array, which metric {metric.name} needs{_named(path)}"))
        elif metric.name == "auc" and labels is not None:
            classes = np.unique(labels)
            if not np.isin(classes, (0, 1)).all():
                shown = ", ".join(map(str, classes[:6])) + (", ..." if len(classes) > 6 else "")
                out.append(Finding((*path, "metric"), f"auc needs binary labels (0 and 1); {file} has labels "
                                                      f"{shown} ({len(classes)} classes)"))
            elif len(classes) < 2:
                out.append(Finding((*path, "metric"), f"auc needs both classes among the labels; {file} "
                                                      f"has only label {classes[0]}"))
        if "k" in metric.params and samples is not None:
            k = int(entry.get("k", metric.defaults()["k"]))
            if samples <= k:
                out.append(Finding((*path, "k"), f"k = {k} needs more than {k} validation samples; {file} has "
                                                 f"{samples}", at=(*path, "k") if "k" in entry else path))
        if metric.name == "spearman" and samples is not None and samples < 3:
            out.append(Finding((*path, "metric"), f"spearman ranks pairs of samples and needs at least 3 "
                                                  f"validation samples; {file} has {samples}"))
    return out


def _width(shape: Sequence[int]) -> int | None:
    """Values per sample, when every size is known."""
    return math.prod(shape) if all(d >= 0 for d in shape) else None


def output_findings(accuracy: Any, model: Sequence[TensorSpec], response: Sequence[TensorSpec], *,
                    complete: bool = True) -> list[Finding]:
    """The tensor each budget compares exists, holds numbers and has the values its metric reads.

    `complete` False: `response` lacks tensors a broken post step would have made (reported
    already), so a name found nowhere is not reported again.
    """
    out: list[Finding] = []
    by_name = {t.name: t for t in model}
    for t in response:
        by_name.setdefault(t.name, t)
    for path, entry in written(accuracy):
        metric = METRICS[entry["metric"]]
        output = entry.get("output")
        where: KeyPath = (*path, "output")
        if output is None:
            if not model:
                continue
            tensor, what, where = model[0], f"the model's first output {model[0].name!r}", (*path, "metric")
            hint = "; name another with `output`"
        elif isinstance(output, int):
            if output >= len(model):
                out.append(Finding(where, f"the model has {len(model)} output{'s' * (len(model) != 1)}, "
                                          f"so output is 0..{len(model) - 1}, got {output}"))
                continue
            tensor, what, hint = model[output], f"model output {output} ({model[output].name!r})", ""
        elif output in by_name:
            tensor, what, hint = by_name[output], f"output {output!r}", ""
        elif not complete:
            continue
        else:
            out.append(Finding(where, f"no model output or response tensor {output!r}"
                               + suggest(output, by_name, known="known")))
            continue
        if tensor.dtype == "bytes":
            out.append(Finding(where, f"{what} holds strings; {metric.name} compares numbers{hint}"))
            continue
        width = _width(tensor.shape)
        if width is None:
            continue
        # one integer per sample is a class label (skl2onnx's `label`): compared as it is
        if metric.name in ("top1_agreement", "accuracy") and width < 2 and tensor.dtype not in INTEGER:
            out.append(Finding(where, f"{what} has one {tensor.dtype} value per sample; {metric.name} compares "
                                      "the highest-scoring class (for a single score use decision_agreement "
                                      f"or auc){hint}"))
        if "column" in metric.params:
            column = entry.get("column")
            if column is None and width > 2:
                out.append(Finding(where, f"{what} has {width} values per sample: name the positive-class "
                                          "score with `column`"))
            elif column is not None and not -width <= column < width:
                out.append(Finding((*path, "column"), f"{what} has {width} value{'s' * (width != 1)} per "
                                                      f"sample, so column is {-width}..{width - 1}, got {column}"))
    return out
