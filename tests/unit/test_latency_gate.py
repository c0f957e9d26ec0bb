"""The latency gate's rule, driven by a fake timing source: pass, fail and inconclusive, in each mode."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest

from infc.latency_gate import LatencyGate, gate
from infc.plan import Plan
from infc.report import headline
from infc_runtime.latency import measure


def _fake_clock(durations_ms: Callable[[int], float]) -> tuple[Callable[[int], None], Callable[[], float]]:
    """A request `call(i)` that 'takes' durations_ms(i) on a clock that only it advances."""
    now = [0.0]
    counter = itertools.count()

    def call(i: int) -> None:
        now[0] += durations_ms(next(counter)) / 1000.0

    def clock() -> float:
        return now[0]

    return call, clock


def _measured(durations_ms: Callable[[int], float], budgets: dict[str, float], **kw: float) -> LatencyGate:
    call, clock = _fake_clock(durations_ms)
    m = measure(call, budgets=budgets, clock=clock, reference=lambda: None, min_samples=300, max_samples=5000,
                min_seconds=0.1, max_seconds=float(kw.get("max_seconds", 5.0)))
    return gate(m.to_dict(), mode=str(kw.get("mode", "lenient")), on_target=bool(kw.get("on_target", True)))


def _spiky(i: int) -> float:
    """1 ms, and 10 ms for 1 request in 100: the p99 sits on the edge between them."""
    return 10.0 if i % 100 == 0 else 1.0


@pytest.mark.parametrize("mode", ["strict", "lenient", "off"])
def test_a_clear_pass_passes_in_every_mode(mode: str) -> None:
    g = _measured(lambda i: 1.0 + (i % 7) * 0.01, {"p99": 5.0, "p95": 4.0}, mode=mode)
    assert g.measured == "pass" and g.state == "pass" and not g.fails_build and g.warning() is None
    assert g.stopped == "decided" and g.samples >= 300
    p99 = g.get("p99")
    assert p99.low_ms <= p99.value_ms <= p99.high_ms <= 5.0


def test_a_clear_miss_fails_unless_the_gate_is_off() -> None:
    for mode, fails in (("strict", True), ("lenient", True), ("off", False)):
        g = _measured(lambda i: 3.0, {"p99": 1.0}, mode=mode)
        assert g.measured == "fail" and g.fails_build is fails, mode
        assert g.get("p99").low_ms > 1.0
    off = _measured(lambda i: 3.0, {"p99": 1.0}, mode="off")
    assert off.state == "fail (not enforced: --latency-gate=off)"
    assert off.warning() is not None and "--latency-gate=off" in str(off.warning())


def test_an_interval_straddling_the_budget_is_inconclusive() -> None:
    # the p99 of 1-in-100 spikes is 1 ms or 10 ms by a hair: no sample count decides a 5 ms budget
    strict = _measured(_spiky, {"p99": 5.0}, mode="strict", max_seconds=2.0)
    assert strict.measured == "inconclusive" and strict.stopped in ("max_samples", "max_seconds")
    p99 = strict.get("p99")
    assert p99.low_ms <= 5.0 < p99.high_ms
    assert strict.fails_build and "straddles budget 5 ms" in strict.findings()[0]
    lenient = _measured(_spiky, {"p99": 5.0}, mode="lenient", max_seconds=2.0)
    assert not lenient.fails_build and lenient.state == "inconclusive"
    assert "not failed (--latency-gate=lenient)" in str(lenient.warning())


def test_off_the_target_nothing_is_enforced_and_nothing_reads_as_a_pass() -> None:
    g = _measured(lambda i: 3.0, {"p99": 1.0}, mode="strict", on_target=False)
    assert not g.fails_build and g.state == "not measured on the target"
    assert "not measured on the target" in str(g.warning())
    quick = _measured(lambda i: 0.1, {"p99": 1.0}, mode="strict", on_target=False)
    assert quick.state == "not measured on the target", "a pass measured elsewhere is not a pass"


def _plan(on_target: bool) -> Plan:
    return Plan(target="arm" if not on_target else "x86", isa="arm64" if not on_target else "avx2", host="x86",
                host_isa="avx2", host_matches_target=on_target, host_runs_target=on_target,
                provider="CPUExecutionProvider", candidates=())


def test_the_report_headline_says_pass_only_for_a_checked_pass() -> None:
    passing = _measured(lambda i: 1.0, {"p99": 5.0})
    assert headline(True, passing, _plan(True)) == "**PASS**: every budget met."
    assert headline(False, passing, _plan(True)).startswith("**FAIL**: an accuracy budget")
    missed = _measured(lambda i: 3.0, {"p99": 1.0}, mode="lenient")
    assert headline(True, missed, _plan(True)).startswith("**FAIL**: the latency budget was missed")
    off = _measured(lambda i: 3.0, {"p99": 1.0}, mode="off")
    text = headline(True, off, _plan(True))
    assert "**PASS**: every" not in text and "not enforced" in text
    elsewhere = _measured(lambda i: 0.1, {"p99": 1.0}, on_target=False)
    assert "not measured on the target" in headline(True, elsewhere, _plan(False))
    unsure = _measured(_spiky, {"p99": 5.0}, max_seconds=2.0)
    assert "inconclusive" in headline(True, unsure, _plan(True))
    no_budget = _measured(lambda i: 1.0, {})
    assert no_budget.measured is None and headline(True, no_budget, _plan(True)) == "**PASS**: every budget met."
