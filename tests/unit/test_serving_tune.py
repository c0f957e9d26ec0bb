"""The latency budget chooses the batch size and the batch window."""

from __future__ import annotations

from infc.serving_tune import BatchPoint, choose_serving
from infc.spec import LatencyBudget
from infc_runtime.types import ServingConfig

# p99 grows with the batch: 1 -> 1 ms ... 64 -> 12 ms
POINTS = [BatchPoint(b, p99 * 0.8, p99, b / (p99 * 0.8 / 1000))
          for b, p99 in [(1, 1.0), (2, 1.2), (4, 1.5), (8, 2.2), (16, 3.5), (32, 6.0), (64, 12.0)]]


def test_largest_batch_whose_worst_case_fits() -> None:
    chosen, why = choose_serving(POINTS, LatencyBudget(p99=10.0), frozenset(), ServingConfig())
    # window 1 ms + 2 x 3.5 ms = 8 <= 10; batch 32 would be 1 + 12 = 13
    assert (chosen.max_batch_size, chosen.max_queue_delay_ms) == (16, 1.0)
    assert "fits the 10 ms budget" in why


def test_pinned_settings_are_kept() -> None:
    pinned = ServingConfig(max_batch_size=4, max_queue_delay_ms=7.0)
    chosen, _ = choose_serving(POINTS, LatencyBudget(p99=10.0), frozenset({"max_batch_size"}), pinned)
    assert chosen.max_batch_size == 4 and chosen.max_queue_delay_ms == 1.0
    chosen, why = choose_serving(POINTS, LatencyBudget(p99=10.0),
                                 frozenset({"max_batch_size", "max_queue_delay_ms"}), pinned)
    assert chosen == pinned and "pinned" in why


def test_tight_budget_means_no_waiting() -> None:
    chosen, why = choose_serving(POINTS, LatencyBudget(p95=1.5), frozenset(), ServingConfig())
    assert (chosen.max_batch_size, chosen.max_queue_delay_ms) == (1, 0.0)
    assert "leaves no room" in why


def test_no_budget_takes_the_best_throughput() -> None:
    chosen, why = choose_serving(POINTS, None, frozenset(), ServingConfig(max_queue_delay_ms=2.0))
    best = max(POINTS, key=lambda p: p.rows_per_s)
    assert chosen.max_batch_size == best.batch and chosen.max_queue_delay_ms == 2.0
