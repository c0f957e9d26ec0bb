"""The choice rule, on made-up measurements: fastest inside every budget, never slower than fp32 (the baseline)."""

from __future__ import annotations

import onnx
import pytest

from infc.choice import MIN_SPEEDUP, Evaluation, Failure, choose
from infc.errors import PassError
from infc.gates import AccuracyResult, LatencyResult
from infc.plan import Candidate


def _ev(name: str, p95: float, accurate: bool = True) -> Evaluation:
    acc = AccuracyResult("cosine", 0.995 if accurate else 0.98, 0.99, accurate, 100, {})
    lat = LatencyResult(p95 * 0.9, p95, p95 * 1.1, 100, 32, p95 * 8, 1000.0, True, True)
    return Evaluation(Candidate(name, (), baseline=name == "fp32"), onnx.ModelProto(), accuracy=(acc,), latency=lat)


def test_int8_slower_than_fp32_is_never_chosen() -> None:
    evs = [_ev("fp32", 1.0), _ev("dynamic", 3.0), _ev("static", 1.5)]
    choice = choose(evs)
    assert choice.chosen.candidate.name == "fp32"
    assert "not faster than fp32" in choice.verdicts["dynamic"] and "x0.33" in choice.verdicts["dynamic"]


def test_marginal_speedups_do_not_count() -> None:
    evs = [_ev("fp32", 1.0), _ev("dynamic", 0.97)]  # 3% is timing noise
    assert choose(evs).chosen.candidate.name == "fp32"


def test_fastest_accurate_candidate_wins() -> None:
    evs = [_ev("fp32", 10.0), _ev("dynamic", 5.0, accurate=False), _ev("dynamic+fp32x2", 6.0), _ev("static", 7.0)]
    choice = choose(evs)
    assert choice.chosen.candidate.name == "dynamic+fp32x2" and choice.verdict(choice.chosen).startswith("chosen")
    assert choice.verdict(evs[1]) == "misses the accuracy budget" and "slower than the chosen" in choice.verdict(evs[3])


def test_unmeasurable_host_keeps_fp32() -> None:
    evs = [_ev("fp32", 10.0), _ev("dynamic", 5.0)]
    choice = choose(evs, measurable=False)
    assert choice.chosen.candidate.name == "fp32"
    assert "cannot be measured on this host" in choice.verdict(evs[1])


def test_nothing_accurate_reports_the_closest() -> None:
    evs = [_ev("dynamic", 5.0, accurate=False), _ev("static", 4.0, accurate=False)]
    choice = choose(evs)
    assert not choice.chosen.accurate and "still outside" in choice.verdict(choice.chosen)


def test_a_failed_candidate_is_reported_and_never_chosen() -> None:
    failed = Failure(Candidate("static", ()), PassError("quantize_static", ["normalize"], "ValueError: boom"))
    choice = choose([_ev("fp32", 1.0), failed])
    assert choice.chosen.candidate.name == "fp32" and choice.verdict(failed).startswith("failed: ")
    with pytest.raises(ValueError, match="every one failed"):
        choose([failed])


@pytest.mark.parametrize(("side_by_side", "chosen"), [(MIN_SPEEDUP + 0.5, "dynamic"), (1.0, "fp32")])
def test_a_winner_other_than_the_baseline_is_confirmed_side_by_side(side_by_side: float, chosen: str) -> None:
    evs = [_ev("fp32", 10.0), _ev("dynamic", 5.0)]
    asked = []

    def measure(fast: Evaluation, base: Evaluation, base_p50_ms: float) -> float:
        asked.append((fast.candidate.name, base.candidate.name, base_p50_ms))
        return side_by_side

    choice = choose(evs, side_by_side=measure)
    assert asked == [("dynamic", "fp32", 9.0)] and choice.chosen.candidate.name == chosen
    if chosen == "dynamic":
        assert choice.verdicts["dynamic"].endswith("(confirmed side by side: x1.55 fp32 at p50)")
        assert choice.verdicts["fp32"] == "slower than the chosen candidate"
    else:
        assert choice.verdicts["dynamic"] == "not faster than fp32 when re-measured side by side (p50 x1.00)"
        assert choice.verdicts["fp32"] == "chosen: the only candidate inside the budgets that is not slower than fp32"
    assert choose([evs[0]], side_by_side=measure).verdicts == {"fp32": "chosen (the only candidate)"}
