"""Let the latency budget set the batching: measure latency per batch size, then choose.

A request can wait for the batch window (`max_queue_delay_ms`), then for the
batch already running, then for its own batch: worst case about
`delay + 2 x p99(batch)`. The largest batch size whose worst case fits the
budget (p99, else p95, else p50) is chosen, unless the spec pins the setting.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from infc_runtime.latency import BatchPoint
from infc_runtime.latency import measure_batches as measure_batch_sizes
from infc_runtime.pipeline import Pipeline
from infc_runtime.types import ServingConfig, Tensors

from .spec import LatencyBudget

__all__ = ["BatchPoint", "measure_batches", "choose_serving", "SIZES"]

SIZES = (1, 2, 4, 8, 16, 32, 64, 128)


def measure_batches(pipeline: Pipeline, requests: Tensors, sizes: Sequence[int] = SIZES, iterations: int = 30,
                    seconds_per_size: float = 1.0, stop_above_ms: float | None = None) -> list[BatchPoint]:
    """Time batches of each size, built from the validation requests, in this process.

    `infc_runtime.latency.measure_batches` over `pipeline.run` (the runtime's
    `measure` command runs the same sweep in the bundle's own process): each
    size gets up to `iterations` runs or about `seconds_per_size` (at least 5);
    sizes stop growing once a batch's p99 passes `stop_above_ms`.
    """
    n = len(next(iter(requests.values())))
    batches = {size: {k: v[np.arange(size) % n] for k, v in requests.items()} for size in sizes}
    return measure_batch_sizes(lambda size: pipeline.run(batches[size]), sizes, iterations=iterations,
                               seconds_per_size=seconds_per_size, stop_above_ms=stop_above_ms)


def choose_serving(points: Sequence[BatchPoint], budget: LatencyBudget | None, pinned: frozenset[str],
                   current: ServingConfig) -> tuple[ServingConfig, str]:
    """The serving settings to ship, and one sentence saying why."""
    if {"max_batch_size", "max_queue_delay_ms"} <= pinned:
        return current, "max_batch_size and max_queue_delay_ms pinned by the spec"
    limit = None if budget is None else (budget.p99 or budget.p95 or budget.p50)
    if limit is None:
        best = max(points, key=lambda p: p.rows_per_s)
        batch, delay = best.batch, current.max_queue_delay_ms
        why = f"no latency budget: batch {batch} gives the most rows/s ({best.rows_per_s:.0f})"
    else:
        delay = min(max(0.1 * limit, 0.5), 5.0)
        fits = [p for p in points if delay + 2 * p.p99_ms <= limit]
        if fits:
            best = max(fits, key=lambda p: p.batch)
            batch = best.batch
            why = (f"largest batch whose worst case (window {delay:g} ms + 2 x p99 {best.p99_ms:.2f} ms) "
                   f"fits the {limit:g} ms budget")
        else:
            batch, delay = 1, 0.0
            why = f"even batch 1 (p99 {points[0].p99_ms:.2f} ms) leaves no room to wait within {limit:g} ms"
    chosen = replace(current,
                     max_batch_size=current.max_batch_size if "max_batch_size" in pinned else batch,
                     max_queue_delay_ms=current.max_queue_delay_ms if "max_queue_delay_ms" in pinned else delay)
    return chosen, why
