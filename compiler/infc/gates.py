"""Measure what the spec budgets: accuracy against the fp32 reference, and latency.

Both pipelines (reference = the original fp32 model, candidate = the optimized
one) run the same generated pre/post kernels on the spec's validation data, so
the accuracy measured here is the accuracy of what ships. Latency is measured
server-side style: one request through pre -> model -> post, timed per call.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from infc_runtime.pipeline import Pipeline
from infc_runtime.types import Tensors

from .spec import AccuracyBudget, LatencyBudget

__all__ = ["AccuracyResult", "LatencyResult", "measure_accuracy", "measure_latency", "METRICS"]

Array = npt.NDArray[Any]


def _top1_agreement(ref: Array, cand: Array, labels: Array | None) -> float:
    return float(np.mean(ref.reshape(len(ref), -1).argmax(1) == cand.reshape(len(cand), -1).argmax(1)))


def _accuracy(ref: Array, cand: Array, labels: Array | None) -> float:
    assert labels is not None  # the spec loader requires labels for this metric
    return float(np.mean(cand.reshape(len(cand), -1).argmax(1) == labels))


def _cosines(ref: Array, cand: Array) -> Array:
    a = ref.reshape(len(ref), -1).astype(np.float64)
    b = cand.reshape(len(cand), -1).astype(np.float64)
    denom = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return np.sum(a * b, axis=1) / np.where(denom == 0, 1.0, denom)


def _cosine(ref: Array, cand: Array, labels: Array | None) -> float:
    return float(np.mean(_cosines(ref, cand)))


def _max_abs_error(ref: Array, cand: Array, labels: Array | None) -> float:
    return float(np.max(np.abs(ref.astype(np.float64) - cand.astype(np.float64))))


Metric = Callable[[Array, Array, "Array | None"], float]
METRICS: dict[str, Metric] = {
    "top1_agreement": _top1_agreement,
    "accuracy": _accuracy,
    "cosine": _cosine,
    "max_abs_error": _max_abs_error,
}
LOWER_IS_BETTER = {"max_abs_error"}


@dataclass(frozen=True)
class AccuracyResult:
    """The budgeted metric of the candidate, with context for the report."""

    metric: str
    value: float
    bound: float | None
    passed: bool
    samples: int
    details: dict[str, float] = field(default_factory=dict)


def _model_outputs(pipeline: Pipeline, requests: Tensors, batch: int = 64) -> Array:
    """The first model output for every validation row (pre + model, no post)."""
    n = len(next(iter(requests.values())))
    chunks = []
    for start in range(0, n, batch):
        part = {k: v[start:start + batch] for k, v in requests.items()}
        out = pipeline.infer(pipeline.preprocess(part))
        chunks.append(out[pipeline.session.get_outputs()[0].name])
    return np.concatenate(chunks)


def measure_accuracy(reference: Pipeline, candidate: Pipeline, requests: Tensors, labels: Array | None,
                     budget: AccuracyBudget | None) -> AccuracyResult:
    """Compare candidate to reference on the validation requests (first model output)."""
    ref = _model_outputs(reference, requests)
    cand = _model_outputs(candidate, requests)
    details = {"top1_agreement": _top1_agreement(ref, cand, None), "max_abs_error": _max_abs_error(ref, cand, None)}
    cos = _cosines(ref, cand)
    details.update({"cosine_mean": float(cos.mean()), "cosine_min": float(cos.min())})
    if labels is not None:
        details["accuracy"] = _accuracy(ref, cand, labels)
        details["reference_accuracy"] = _accuracy(ref, ref, labels)
    metric = budget.metric if budget else "top1_agreement"
    value = METRICS[metric](ref, cand, labels)
    if budget is None:
        return AccuracyResult(metric, value, None, True, len(ref), details)
    if metric in LOWER_IS_BETTER:
        bound = budget.max
        passed = bound is None or value <= bound
    else:
        bound = budget.min
        passed = bound is None or value >= bound
    return AccuracyResult(metric, value, bound, passed, len(ref), details)


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


def _timed(fn: Callable[[], object], iterations: int) -> Array:
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

    single = _timed(one, iterations)
    bs = pipeline.serving.max_batch_size
    idx = np.arange(bs) % n
    big = {k: v[idx] for k, v in requests.items()}
    batched = _timed(lambda: pipeline.run(big), max(10, iterations // 10))
    p50, p95, p99 = (float(np.percentile(single, q)) for q in (50, 95, 99))
    misses = []
    if budget is not None:
        for name, value, limit in (("p50", p50, budget.p50), ("p95", p95, budget.p95), ("p99", p99, budget.p99)):
            if limit is not None and value > limit:
                misses.append(f"{name} {value:.3f} ms > budget {limit:g} ms")
    batch_p50 = float(np.percentile(batched, 50))
    return LatencyResult(p50, p95, p99, iterations, bs, batch_p50, bs / (batch_p50 / 1000.0), enforce,
                         passed=not (enforce and misses), misses=tuple(misses))
