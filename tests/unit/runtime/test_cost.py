"""The live cost meter: CPU seconds per request over a window between scrapes, shared by busy time, priced."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from infc_runtime.cost import CostMeter, LivePrice


@dataclass
class Version:
    model: str
    version: str | None
    price: LivePrice | None
    requests: int = 0
    busy: float = 0.0

    def work(self) -> tuple[int, float]:
        return self.requests, self.busy


class Clocks:
    def __init__(self) -> None:
        self.cpu, self.now = 10.0, 1000.0


def meter(clocks: Clocks, window: float = 60.0) -> CostMeter:
    return CostMeter(window, cpu=lambda: clocks.cpu, clock=lambda: clocks.now)


def test_cpu_seconds_are_shared_by_busy_time_and_priced_per_vcpu() -> None:
    clocks = Clocks()
    a = Version("a", "1", LivePrice(0.36, 4, whole_host=False))
    b = Version("b", "1", None)
    m = meter(clocks)
    assert m.measure([a, b]) == {}  # the first scrape starts the window
    clocks.cpu += 3.0
    clocks.now += 15
    a.requests, a.busy = 100, 2.0
    b.requests, b.busy = 50, 1.0
    got = m.measure([a, b])
    assert got[id(a)][0] == pytest.approx(3.0 * 2 / 3 / 100)
    assert got[id(a)][1] == pytest.approx(0.02 * 1000 * 0.36 / 4 / 3600)
    assert got[id(b)] == (pytest.approx(3.0 / 3 / 50), None)  # no price: CPU seconds only


def test_no_requests_in_the_window_no_sample_and_old_snapshots_leave_the_window() -> None:
    clocks = Clocks()
    v = Version("a", "1", None)
    m = meter(clocks, window=60)
    m.measure([v])
    clocks.now, clocks.cpu = clocks.now + 30, clocks.cpu + 1
    assert m.measure([v]) == {}
    v.requests = 10
    clocks.now, clocks.cpu = clocks.now + 30, clocks.cpu + 1
    assert m.measure([v])[id(v)][0] == pytest.approx(2 / 10)  # from the first snapshot, 60 s back
    clocks.now, clocks.cpu = clocks.now + 30, clocks.cpu + 4
    v.requests = 30
    assert m.measure([v])[id(v)][0] == pytest.approx(5 / 30)  # the window moved: from the second snapshot


def test_a_gpu_bundle_is_charged_its_whole_host_for_the_window() -> None:
    clocks = Clocks()
    v = Version("a", "1", LivePrice(3.6, 8, whole_host=True))
    m = meter(clocks)
    m.measure([v])
    clocks.now, clocks.cpu = clocks.now + 10, clocks.cpu + 0.5
    v.requests, v.busy = 1000, 1.0
    _, usd = m.measure([v])[id(v)]
    assert usd == pytest.approx(3.6 / 3600 * 10 / 1000 * 1000)  # USD 0.01: 10 s of the host for 1,000 requests
