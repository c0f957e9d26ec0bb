"""The choice among evaluated candidates: the fastest inside every accuracy budget, never one not faster than
the plan's baseline.

An `Evaluation` is a candidate whose passes ran (its model, their records, its
accuracy and, when timed, its latency); a `Failure` is one whose passes failed.
`choose` returns a frozen `Choice`: the candidate to ship and one verdict per
candidate, each written once. A winner other than the baseline is confirmed
side by side first (the caller's `side_by_side` re-measures both interleaved):
it stays only if it still beats the baseline by `MIN_SPEEDUP`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import onnx

from .errors import InfcError
from .gates import AccuracyResult, LatencyResult
from .plan import Candidate

__all__ = ["MIN_SPEEDUP", "Choice", "Evaluation", "Failure", "SideBySide", "Tried", "choose"]

MIN_SPEEDUP = 1.05
"""An optimized candidate must beat the baseline (fp32) by this much (p50 at batch 1) to be chosen."""


@dataclass(frozen=True)
class Evaluation:
    """A candidate whose passes ran: the model, their records, its accuracy and its latency."""

    candidate: Candidate
    model: onnx.ModelProto
    records: tuple[dict[str, Any], ...] = ()
    accuracy: tuple[AccuracyResult, ...] = ()
    """One per budget; empty: not measured (no validation data)."""
    latency: LatencyResult | None = None
    """None: not timed (a sensitivity variant that missed accuracy, or the lock's candidate)."""
    sensitivity: Mapping[str, Any] | None = None
    """How the quantized nodes were ranked when this candidate missed accuracy."""

    @property
    def error(self) -> None:
        return None

    @property
    def accurate(self) -> bool:
        return all(a.passed for a in self.accuracy)

    @property
    def worst_margin(self) -> float:
        """How far inside its accuracy budgets the candidate is, at the tightest one."""
        margins = [a.margin for a in self.accuracy if a.margin is not None]
        return min((float("-inf") if math.isnan(m) else m for m in margins), default=0.0)  # NaN: the worst


@dataclass(frozen=True)
class Failure:
    """A candidate whose passes failed: with several candidates, recorded rather than fatal."""

    candidate: Candidate
    exception: InfcError

    @property
    def error(self) -> str:
        return str(self.exception)

    # what an Evaluation says that a failed candidate has not (class attributes, not fields)
    accurate = False
    model = None
    records = ()
    accuracy = ()
    latency = None
    sensitivity = None


Tried = Evaluation | Failure
"""A candidate, evaluated or failed."""

SideBySide = Callable[[Evaluation, Evaluation, float], float]
"""`(winner, baseline, baseline's p50 ms) -> speedup`: the two re-measured interleaved, the winner's p50 speedup."""


@dataclass(frozen=True)
class Choice:
    """What the search decided: the candidate to ship, every candidate tried, a verdict for each (by name)."""

    chosen: Evaluation
    verdicts: Mapping[str, str]
    evaluations: tuple[Tried, ...]

    def verdict(self, tried: Tried) -> str:
        return self.verdicts.get(tried.candidate.name, "")


def choose(tried: Sequence[Tried], *, measurable: bool = True, side_by_side: SideBySide | None = None) -> Choice:
    """The fastest candidate inside every accuracy budget; never one not faster than the baseline.

    When this host's speed is not the target's (`measurable` False), no candidate
    can be proven faster than the baseline, so it is kept whenever it is accurate.
    Nothing inside the budgets: the closest candidate, to report (a build ships nothing).
    """
    ran = [t for t in tried if isinstance(t, Evaluation)]
    if not ran:
        raise ValueError("no candidate to choose from: every one failed")
    if len(tried) == 1:
        return Choice(ran[0], {ran[0].candidate.name: "chosen (the only candidate)"}, tuple(tried))
    verdicts = {t.candidate.name: f"failed: {t.error}" if t.error else "misses the accuracy budget"
                for t in tried if not t.accurate}
    timed = [(ev, ev.latency) for ev in ran if ev.accurate and ev.latency is not None]
    baseline = next(((ev, latency) for ev, latency in timed if ev.candidate.baseline), None)
    base = baseline[0].candidate.name if baseline else ""
    best: tuple[Evaluation, LatencyResult] | None = None
    for ev, latency in timed:
        if baseline is not None and ev is not baseline[0]:
            if not measurable:
                verdicts[ev.candidate.name] = "not chosen: its speed on the target cannot be measured on this host"
                continue
            speedup = baseline[1].p50_ms / latency.p50_ms
            if speedup < MIN_SPEEDUP:
                verdicts[ev.candidate.name] = f"not faster than {base} (p50 x{speedup:.2f})"
                continue
        if best is None or latency.p50_ms < best[1].p50_ms:
            best = (ev, latency)
    if best is None:  # nothing inside the budget: ship nothing, report the closest
        closest = max(ran, key=lambda e: e.worst_margin)
        verdicts[closest.candidate.name] = "closest to the accuracy budget, still outside it"
        return Choice(closest, verdicts, tuple(tried))
    winner = best[0]
    for ev, _ in timed:
        verdicts.setdefault(ev.candidate.name, "slower than the chosen candidate")
    if side_by_side is None or baseline is None or winner is baseline[0]:
        verdicts[winner.candidate.name] = "chosen: fastest inside the accuracy budget"
        return Choice(winner, verdicts, tuple(tried))
    # a winner other than the baseline was timed apart from it: it stays only if it still wins side by side
    confirmed = side_by_side(winner, baseline[0], baseline[1].p50_ms)
    if confirmed < MIN_SPEEDUP:
        verdicts[winner.candidate.name] = f"not faster than {base} when re-measured side by side (p50 x{confirmed:.2f})"
        verdicts[base] = f"chosen: the only candidate inside the budgets that is not slower than {base}"
        return Choice(baseline[0], verdicts, tuple(tried))
    verdicts[winner.candidate.name] = (f"chosen: fastest inside the accuracy budget (confirmed side by side: "
                                       f"x{confirmed:.2f} {base} at p50)")
    return Choice(winner, verdicts, tuple(tried))
