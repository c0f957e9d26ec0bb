"""The choice rule, on made-up measurements: fastest inside every budget, never slower than fp32."""

from __future__ import annotations

from infc.gates import AccuracyResult, LatencyResult
from infc.plan import Candidate
from infc.search import Evaluation, choose


def _ev(name: str, p95: float, accurate: bool = True) -> Evaluation:
    acc = AccuracyResult("cosine", 0.995 if accurate else 0.98, 0.99, accurate, 100, {})
    lat = LatencyResult(p95 * 0.9, p95, p95 * 1.1, 100, 32, p95 * 8, 1000.0, True, True)
    return Evaluation(Candidate(name, ()), accuracy=[acc], latency=lat)


def test_int8_slower_than_fp32_is_never_chosen() -> None:
    evs = [_ev("fp32", 1.0), _ev("dynamic", 3.0), _ev("static", 1.5)]
    assert choose(evs).candidate.name == "fp32"
    assert "not faster than fp32" in evs[1].verdict and "x0.33" in evs[1].verdict


def test_marginal_speedups_do_not_count() -> None:
    evs = [_ev("fp32", 1.0), _ev("dynamic", 0.97)]  # 3% is timing noise
    assert choose(evs).candidate.name == "fp32"


def test_fastest_accurate_candidate_wins() -> None:
    evs = [_ev("fp32", 10.0), _ev("dynamic", 5.0, accurate=False), _ev("dynamic+fp32x2", 6.0), _ev("static", 7.0)]
    chosen = choose(evs)
    assert chosen.candidate.name == "dynamic+fp32x2" and chosen.verdict.startswith("chosen")
    assert evs[1].verdict == "misses the accuracy budget" and "slower than the chosen" in evs[3].verdict


def test_unmeasurable_host_keeps_fp32() -> None:
    evs = [_ev("fp32", 10.0), _ev("dynamic", 5.0)]
    assert choose(evs, measurable=False).candidate.name == "fp32"
    assert "cannot be measured on this host" in evs[1].verdict


def test_nothing_accurate_reports_the_closest() -> None:
    evs = [_ev("dynamic", 5.0, accurate=False), _ev("static", 4.0, accurate=False)]
    chosen = choose(evs)
    assert not chosen.accurate and "still outside" in chosen.verdict
