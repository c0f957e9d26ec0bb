"""Latency with confidence intervals: exact order-statistic bounds, and verdicts a fake clock decides."""

from __future__ import annotations

import gc
import json
import math
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

from infc_runtime.latency import (
    HostNoise,
    Measurement,
    Percentile,
    measure,
    measure_batches,
    quantile_interval,
    reference_workload,
    settle_heap,
    verdict,
)


class FakeClock:
    """Seconds that pass only when a fake call says so (integer microseconds: no drift)."""

    def __init__(self) -> None:
        self.us = 0

    def __call__(self) -> float:
        return self.us / 1e6

    def take(self, ms: float) -> None:
        self.us += round(ms * 1000)


def fake_call(clock: FakeClock, ms_of: dict[int, float] | None = None, default_ms: float = 1.0,
              every: int = 0) -> Callable[[int], None]:
    """A request that takes `default_ms`, or `ms_of[i % every]` for the i-th request."""

    def call(i: int) -> None:
        clock.take(ms_of.get(i % every, default_ms) if ms_of and every else default_ms)

    return call


def fake_measure(clock: FakeClock, call: Callable[[int], None], **kwargs: Any) -> Measurement:
    return measure(call, clock=clock, reference=lambda: clock.take(0.03), **kwargs)


# -- quantile_interval ---------------------------------------------------------
def test_median_of_ten_uses_the_textbook_ranks() -> None:
    # P(X_(2) <= median <= X_(9)) = 1 - 2 * 11/1024 = 0.9785 >= 0.95; ranks (3, 8) give only 0.891
    assert quantile_interval(np.arange(1.0, 11.0), 0.5) == (5.5, 2.0, 9.0)
    assert quantile_interval(np.arange(10.0, 0.0, -1.0), 0.5) == (5.5, 2.0, 9.0)  # order of samples is irrelevant


def test_the_interval_contains_the_quantile_of_uniform_samples() -> None:
    samples = np.random.default_rng(7).random(1000)
    estimate, low, high = quantile_interval(samples, 0.99)
    assert low <= 0.99 <= high and low <= estimate <= high
    assert high - low < 0.05


def test_too_few_samples_leave_the_upper_bound_open() -> None:
    samples = np.random.default_rng(3).random(50)
    estimate, low, high = quantile_interval(samples, 0.99)
    assert high == math.inf and low <= estimate
    assert math.isfinite(low)  # the lower side is still bounded, at the whole 1 - confidence
    assert quantile_interval([1.0], 0.5)[1:] == (-math.inf, math.inf)


def test_coverage_by_simulation_is_at_least_the_confidence() -> None:
    for n, q in ((200, 0.9), (60, 0.5), (1000, 0.99)):
        hits = 0
        seeds = 300
        for seed in range(seeds):
            _, low, high = quantile_interval(np.random.default_rng(seed).exponential(size=n), q)
            hits += low <= -math.log(1 - q) <= high
        assert 0.92 <= hits / seeds <= 1.0, (n, q, hits / seeds)


def test_a_million_samples_give_a_tight_interval() -> None:
    samples = np.random.default_rng(0).random(10**6)
    estimate, low, high = quantile_interval(samples, 0.99, confidence=0.99)
    assert low < 0.99 < high and high - low < 0.001


def test_bad_arguments_are_rejected() -> None:
    with pytest.raises(ValueError, match="no samples"):
        quantile_interval([], 0.5)
    with pytest.raises(ValueError, match="q must be"):
        quantile_interval([1.0], 99)
    with pytest.raises(ValueError, match="confidence"):
        quantile_interval([1.0], 0.5, confidence=95)


def test_verdict_needs_the_whole_interval_on_one_side() -> None:
    assert verdict(1.0, 2.0, 2.0) == "pass"
    assert verdict(2.1, 3.0, 2.0) == "fail"
    assert verdict(1.0, 3.0, 2.0) == "inconclusive"
    assert verdict(1.0, math.inf, 2.0) == "inconclusive"


# -- measure -------------------------------------------------------------------
def test_a_clear_pass_stops_as_soon_as_the_minimums_are_met() -> None:
    clock = FakeClock()
    m = fake_measure(clock, fake_call(clock), budgets={"p99": 2.0})
    assert m.verdict == "pass" and m.stopped == "decided"
    assert m.samples >= 300 and 1.0 <= m.seconds < 1.5  # 10 rounds of 0.1 s, not max_seconds
    p99 = {p.name: p for p in m.percentiles}["p99"]
    assert (p99.value_ms, p99.low_ms, p99.high_ms) == pytest.approx((1.0, 1.0, 1.0))
    assert (p99.bound_ms, p99.verdict) == (2.0, "pass")
    assert m.noise.reference_p50_ms == pytest.approx(0.03) and m.noise.spread == pytest.approx(1.0)


def test_a_clear_fail_is_decided_too() -> None:
    clock = FakeClock()
    m = fake_measure(clock, fake_call(clock), budgets={"p50": 0.5, "p99": 2.0})
    assert m.verdict == "fail" and m.stopped == "decided"
    assert [p.verdict for p in m.percentiles] == ["fail", None, "pass"]


def test_a_p99_right_at_the_budget_stays_inconclusive_until_a_limit() -> None:
    # exactly 1 request in 100 takes 10 ms: the true p99 is the 1 ms mode's edge, the interval spans both modes
    clock = FakeClock()
    m = fake_measure(clock, fake_call(clock, {0: 10.0}, every=100), budgets={"p99": 5.0}, max_seconds=3.0)
    p99 = m.percentiles[2]
    assert m.verdict == "inconclusive" and m.stopped == "max_seconds"
    assert (p99.low_ms, p99.high_ms) == pytest.approx((1.0, 10.0))
    clock = FakeClock()
    m = fake_measure(clock, fake_call(clock, {0: 10.0}, every=100), budgets={"p99": 5.0}, max_samples=2000)
    assert m.verdict == "inconclusive" and m.stopped == "max_samples" and m.samples == 2000


def test_without_budgets_it_stops_at_the_minimums() -> None:
    clock = FakeClock()
    m = fake_measure(clock, fake_call(clock), min_samples=500, min_seconds=0.2)
    assert m.verdict is None and m.stopped == "min reached (no budget)"
    assert m.samples >= 500
    assert all(p.verdict is None and p.bound_ms is None for p in m.percentiles)


def test_a_clock_that_never_moves_still_ends() -> None:
    m = measure(lambda i: None, budgets={"p99": 1.0}, clock=lambda: 0.0, max_samples=1000)
    assert m.samples == 1000 and m.stopped == "max_samples"


def test_unknown_budgets_and_limits_are_rejected() -> None:
    with pytest.raises(ValueError, match="unknown budget p98"):
        measure(lambda i: None, budgets={"p98": 1.0})
    with pytest.raises(ValueError, match="min_samples"):
        measure(lambda i: None, min_samples=10, max_samples=5)


def test_the_dict_is_json_with_open_bounds_as_null() -> None:
    clock = FakeClock()
    m = fake_measure(clock, fake_call(clock, {0: 10.0}, every=100), budgets={"p99": 5.0}, min_samples=20,
                     max_samples=50, min_seconds=0.0)
    d = json.loads(json.dumps(m.to_dict(), allow_nan=False))
    assert d["percentiles"][2]["high_ms"] is None and d["verdict"] == "inconclusive"
    assert set(d) == {"verdict", "stopped", "samples", "rounds", "seconds", "confidence", "percentiles", "noise",
                      "gc", "batches"}
    assert set(d["noise"]) >= {"reference_p50_ms", "reference_p99_ms", "spread", "loadavg", "cpus", "quiet"}


def test_measurement_verdict_is_the_worst_budgeted_one() -> None:
    def with_verdicts(*verdicts: str | None) -> Measurement:
        ps = tuple(Percentile(f"p{i}", 0.5, 1.0, 1.0, 1.0, None if v is None else 1.0, v)
                   for i, v in enumerate(verdicts))
        noise = HostNoise(0.03, 0.03, 1.0, None, 1, True)
        return Measurement(1, 1, 0.0, 0.95, ps, noise, {}, (), "decided")

    assert with_verdicts("pass", "inconclusive", "fail").verdict == "fail"
    assert with_verdicts("pass", "inconclusive", None).verdict == "inconclusive"
    assert with_verdicts("pass", None, None).verdict == "pass"
    assert with_verdicts(None, None, None).verdict is None


def test_the_reference_workload_is_deterministic() -> None:
    assert reference_workload() == reference_workload()


# -- batches and the heap --------------------------------------------------------
def test_batches_stop_growing_past_the_limit() -> None:
    clock = FakeClock()
    runs: list[int] = []

    def run(size: int) -> None:
        runs.append(size)
        clock.take(0.5 * size)

    points = measure_batches(run, [1, 2, 4, 8, 16], iterations=10, stop_above_ms=3.0, clock=clock)
    assert [p.batch for p in points] == [1, 2, 4, 8]  # batch 8 (4 ms) is the first past 3 ms: 16 is not tried
    assert [p.p50_ms for p in points] == pytest.approx([0.5, 1.0, 2.0, 4.0])
    assert [p.p99_ms for p in points] == pytest.approx([0.5, 1.0, 2.0, 4.0])
    assert points[1].rows_per_s == pytest.approx(2000.0)
    assert runs.count(1) == 11  # one warm-up run, then `iterations`


@pytest.fixture
def restored_gc() -> Iterator[None]:
    """Undo settle_heap: the rest of the test session keeps the collector as it was."""
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()  # also what an in-process server test froze: the test session's heap is its own again
    gc.set_threshold(*threshold)


@pytest.mark.usefixtures("restored_gc")
def test_settle_heap_freezes_and_raises_the_gen0_threshold() -> None:
    gc.set_threshold(700, 10, 10)  # CPython's defaults (an in-process server test may have settled already)
    before = gc.get_threshold()
    done = settle_heap()
    assert gc.get_freeze_count() == done["frozen"] > 0
    assert done["threshold"] == list(gc.get_threshold()) and done["threshold"][0] > before[0]
    assert done["previous_threshold"] == list(before) and done["threshold"][1:] == list(before[1:])
    json.dumps(done)
