"""Measure what the spec budgets: accuracy against the fp32 reference, and latency.

Both pipelines (reference = the original fp32 model, candidate = the optimized
one) run the same generated pre/post kernels on the spec's validation data, so
the accuracy measured here is the accuracy of what ships. The metrics themselves
live in `infc.accuracy`, one registry that the spec schema reads too. Latency is measured
server-side style: one request through pre -> model -> post, timed per call.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
import numpy.typing as npt

from infc_runtime.pipeline import Pipeline
from infc_runtime.types import Tensors

from .accuracy import METRICS, MetricError, Param
from .accuracy import PARAMS as METRIC_PARAMS
from .errors import format_path
from .spec import AccuracyBudget, LatencyBudget

__all__ = ["AccuracyResult", "LatencyResult", "Outputs", "measure_accuracy", "measure_latency", "timed", "METRICS",
           "METRIC_PARAMS", "MetricError", "Param"]

Array = npt.NDArray[Any]

# the neighbour matrix costs N * N * values per sample; past this it is left out of the details
_DETAIL_NEIGHBOUR_COST = 1 << 31


@dataclass(frozen=True)
class AccuracyResult:
    """One accuracy budget measured on the candidate: `value` against `bound` (None: not
    budgeted, informational); `op` says how they compare (`>=` for `min`, `<=` for `max`).

    `details` is shared by every result of one measurement: each metric that applies to
    the model's first output (and each budgeted one, under its `name`), for the report.
    """

    metric: str
    value: float
    bound: float | None
    passed: bool
    samples: int
    details: dict[str, float] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    op: str = ">="

    @property
    def name(self) -> str:
        """The metric with the parameters that differ from its defaults: `auc(column=0)`."""
        defaults = METRICS[self.metric].defaults() if self.metric in METRICS else {}
        shown = [f"{k}={v}" for k, v in self.params.items() if defaults.get(k) != v]
        return f"{self.metric}({', '.join(shown)})" if shown else self.metric

    @property
    def margin(self) -> float | None:
        """How far inside the bound the value is (negative: missed by that much)."""
        if self.bound is None:
            return None
        return self.value - self.bound if self.op == ">=" else self.bound - self.value


class Outputs:
    """The tensors one pipeline gives for every validation row: model outputs, and the
    response tensors when a budget names one. `infer` runs the model in the pipeline's place (model inputs ->
    outputs: under an emulator, with the target's numerics); pre- and post-processing stay the pipeline's."""

    def __init__(self, pipeline: Pipeline, requests: Tensors, response: bool, batch: int = 64,
                 infer: Callable[[Tensors], Tensors] | None = None) -> None:
        self.model_names = [o.name for o in pipeline.session.get_outputs()]
        n = len(next(iter(requests.values())))
        model: dict[str, list[Array]] = {}
        post: dict[str, list[Array]] = {}
        for start in range(0, n, batch):
            inputs = pipeline.preprocess({k: v[start:start + batch] for k, v in requests.items()})
            out = infer(inputs) if infer is not None else pipeline.infer(inputs)
            for k, v in out.items():
                model.setdefault(k, []).append(v)
            for k, v in (pipeline.postprocess(out, inputs) if response else {}).items():
                post.setdefault(k, []).append(v)
        self.model = {k: _concat(v) for k, v in model.items()}
        self.response = {k: _concat(v) for k, v in post.items()}

    def get(self, output: str | int | None) -> Array:
        """The tensor a budget's `output` names (see `AccuracyBudget.output`)."""
        if output is None or isinstance(output, int):
            index = output or 0
            if index >= len(self.model_names):
                raise MetricError(f"output {index}: the model has {len(self.model_names)} outputs")
            return self.model[self.model_names[index]]
        if output in self.model:
            return self.model[output]
        if output in self.response:
            return self.response[output]
        raise MetricError(f"no model output or response tensor {output!r}")


def _concat(chunks: list[Array]) -> Array:
    """Chunks on axis 0; token-level outputs of text padded per batch (`padding: longest`) may differ on
    axis 1: zeros pad them to the widest (the same chunks for the reference and the candidate)."""
    widths = {c.shape[1:] for c in chunks}
    if len(widths) > 1 and all(c.ndim >= 2 for c in chunks):
        wide = max(c.shape[1] for c in chunks)
        chunks = [np.pad(c, [(0, 0), (0, wide - c.shape[1])] + [(0, 0)] * (c.ndim - 2)) for c in chunks]
    return np.concatenate(chunks)


def _needs_response(budgets: Sequence[AccuracyBudget], model_names: Sequence[str]) -> bool:
    return any(isinstance(b.output, str) and b.output not in model_names for b in budgets)


def _details(ref: Array, cand: Array, labels: Array | None) -> dict[str, float]:
    """Every metric that applies to these outputs and labels, for the report."""
    candidates: list[tuple[str, Callable[[], float]]] = [
        ("top1_agreement", lambda: METRICS["top1_agreement"].compute(ref, cand, labels)),
        ("cosine", lambda: METRICS["cosine"].compute(ref, cand, labels)),
        ("cosine_min", lambda: METRICS["cosine_min"].compute(ref, cand, labels)),
        ("max_abs_error", lambda: METRICS["max_abs_error"].compute(ref, cand, labels)),
    ]
    if len(ref) * len(ref) * max(1, ref[0].size) <= _DETAIL_NEIGHBOUR_COST:
        candidates += [(name, partial(METRICS[name].compute, ref, cand, labels))
                       for name in ("neighbour_agreement", "recall_at_k", "spearman")]
    if labels is not None:
        candidates += [
            ("accuracy", lambda: METRICS["accuracy"].compute(ref, cand, labels)),
            ("reference_accuracy", lambda: METRICS["accuracy"].compute(ref, ref, labels)),
            ("auc", lambda: METRICS["auc"].compute(ref, cand, labels)),
            ("reference_auc", lambda: METRICS["auc"].compute(ref, ref, labels)),
        ]
    details = {}
    for name, compute in candidates:
        try:
            value = compute()
        except MetricError:
            continue  # does not apply to this output (one class, one value per sample, ...)
        details[name] = value  # NaN included: a candidate giving NaN is news for the report
    return details


def measure_accuracy(reference: Pipeline | Outputs, candidate: Pipeline, requests: Tensors, labels: Array | None,
                     budgets: Sequence[AccuracyBudget] = (), infer: Callable[[Tensors], Tensors] | None = None
                     ) -> list[AccuracyResult]:
    """Compare candidate to reference on the validation requests: one result per budget,
    in the spec's order; without budgets one informational result (top1_agreement, or
    cosine for an output of one value per sample) that passes.

    `reference` may be the reference's `Outputs`, computed once (with `response=True`)
    and reused for every candidate of a build. `infer`: the candidate's model run elsewhere (see `Outputs`).

    Raises MetricError (naming the budget) when a budget's metric cannot apply to the
    data, which the spec loader rules out wherever the model's shapes are static.
    """
    model_names = (reference.model_names if isinstance(reference, Outputs)
                   else [o.name for o in reference.session.get_outputs()])
    response = _needs_response(budgets, model_names)
    ref = reference if isinstance(reference, Outputs) else Outputs(reference, requests, response)
    cand = Outputs(candidate, requests, response, infer=infer)
    first_ref, first_cand = ref.get(None), cand.get(None)
    details = _details(first_ref, first_cand, labels)
    samples = len(first_ref)
    if not budgets:
        shown = "top1_agreement" if "top1_agreement" in details else "cosine"
        return [AccuracyResult(shown, details.get(shown, float("nan")), None, True, samples, details)]
    results = []
    for budget in budgets:
        metric = METRICS[budget.metric]
        kwargs = {k: v for k, v in budget.params.items() if k != "output"}
        try:
            value = metric.compute(ref.get(budget.output), cand.get(budget.output), labels, **kwargs)
        except MetricError as e:
            raise MetricError(f"{format_path(budget.path)} ({budget.metric}): {e}") from None
        bound = budget.bound
        op = "<=" if metric.bound == "max" else ">="
        passed = bound is None or (value <= bound if op == "<=" else value >= bound)  # NaN never passes
        results.append(AccuracyResult(budget.metric, value, bound, passed, samples, details,
                                      dict(budget.params), op))
    for r in results:
        details.setdefault(r.name, r.value)
    return results


@dataclass(frozen=True)
class LatencyResult:
    """Per-request latency at batch 1 and throughput at the serving batch size."""

    p50_ms: float
    p95_ms: float
    p99_ms: float
    iterations: int
    batch_size: int
    batch_p50_ms: float
    throughput_rps: float
    enforced: bool
    passed: bool
    misses: tuple[str, ...] = ()


def timed(fn: Callable[[], object], iterations: int) -> Array:
    """Milliseconds of each of `iterations` calls of `fn`."""
    times = np.empty(iterations)
    for i in range(iterations):
        t0 = time.perf_counter()
        fn()
        times[i] = time.perf_counter() - t0
    return times * 1000.0


def measure_latency(pipeline: Pipeline, requests: Tensors, budget: LatencyBudget | None, *,
                    enforce: bool, iterations: int = 300) -> LatencyResult:
    """Time single-row requests through the whole pipeline; compare with the budget."""
    n = len(next(iter(requests.values())))
    rows = [{k: v[i % n:i % n + 1] for k, v in requests.items()} for i in range(iterations)]
    pipeline.warmup()
    it = iter(range(iterations))

    def one() -> None:
        pipeline.run(rows[next(it)])

    single = timed(one, iterations)
    bs = pipeline.serving.max_batch_size
    idx = np.arange(bs) % n
    big = {k: v[idx] for k, v in requests.items()}
    batched = timed(lambda: pipeline.run(big), max(10, iterations // 10))
    p50, p95, p99 = (float(np.percentile(single, q)) for q in (50, 95, 99))
    misses = []
    if budget is not None:
        for name, value, limit in (("p50", p50, budget.p50), ("p95", p95, budget.p95), ("p99", p99, budget.p99)):
            if limit is not None and value > limit:
                misses.append(f"{name} {value:.3f} ms > budget {limit:g} ms")
    batch_p50 = float(np.percentile(batched, 50))
    return LatencyResult(p50, p95, p99, iterations, bs, batch_p50, bs / (batch_p50 / 1000.0), enforce,
                         passed=not (enforce and misses), misses=tuple(misses))
