"""Measure latency the way a bundle ships: adaptive, with confidence intervals and the host's noise.

`measure(call, budgets=...)` times single requests in rounds until every
budgeted percentile is decided (its confidence interval wholly below the budget:
pass, wholly above: fail) or the sample/time limit is reached (inconclusive).
Between rounds a fixed reference workload is timed, so the host's noise is
measured under the same load as the model (`HostNoise`). `measure_batches`
times whole batches per size (the serving table); `settle_heap` is what a
server does once after warm-up. Everything times through an injectable `clock`
so tests can drive the verdicts deterministically.

numpy and the standard library only: this module ships in every bundle.
"""

from __future__ import annotations

import gc
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from .cpus import affinity_cpus

__all__ = [
    "BatchPoint",
    "HostNoise",
    "Measurement",
    "Percentile",
    "QUIET_SPREAD",
    "measure",
    "measure_batches",
    "quantile_interval",
    "reference_workload",
    "settle_heap",
    "verdict",
]

Clock = Callable[[], float]

PERCENTILES = (("p50", 0.50), ("p95", 0.95), ("p99", 0.99))

QUIET_SPREAD = 1.5
"""A host is quiet when the reference workload's p99/p50 is below this (and the load is below the CPUs).

A fixed ~30 µs computation on an idle core has a p99 within ~1.2x of its
median; interrupts, other processes and frequency changes push the tail out.
At 1.5x the tail of everything measured alongside is inflated too.
"""

REFERENCE_BLOCK = 32  # reference calls timed after each round: ~1 ms, about 1% of a 0.1 s round

# Gen-0 collection runs when (allocations - deallocations) of container objects
# since the last one pass the threshold. Request-path garbage is mostly freed by
# reference counting, so the count grows with what outlives a request (futures
# and buffers of requests in flight under load, caches): 10,000 makes those
# passes ~14x rarer than the default 700 while each stays short (it scans only
# the young objects, about that many at most: well under a millisecond).
# Generations 1 and 2 keep their defaults: after `gc.freeze()` their passes no
# longer rescan the warmed-up heap.
GEN0_THRESHOLD = 10_000

_REF_MATRIX = (np.arange(256, dtype=np.float64).reshape(16, 16) % 7) / 7.0


def _json_float(x: float | None) -> float | None:
    """`x` for JSON: infinities and NaN become None."""
    return None if x is None or not math.isfinite(x) else float(x)


# -- statistics ----------------------------------------------------------------
def _binomial_cdf(n: int, q: float) -> tuple[int, npt.NDArray[np.float64]]:
    """P(B <= k) for B ~ Binomial(n, q) over the window of k holding all but ~1e-14 of the mass.

    Returns `(k0, cdf)` with `cdf[j] = P(B <= k0 + j)`; below the window the CDF
    is ~0, above it ~1 (Chernoff: a margin of 12 sd + 12 leaves < 1e-14).
    """
    sd = math.sqrt(n * q * (1 - q))
    k0 = max(0, math.floor(n * q - 12 * sd - 12))
    k1 = min(n, math.ceil(n * q + 12 * sd + 12))
    ks = np.arange(k0, k1 + 1, dtype=np.float64)
    lgamma = np.vectorize(math.lgamma, otypes=[np.float64])
    log_pmf = (math.lgamma(n + 1) - lgamma(ks + 1) - lgamma(n - ks + 1)
               + ks * math.log(q) + (n - ks) * math.log1p(-q))
    return k0, np.cumsum(np.exp(log_pmf))


def _lower_rank(n: int, k0: int, cdf: npt.NDArray[np.float64], tail: float) -> int | None:
    """Largest rank l (1-based) with P(X_(l) > Q) = P(B <= l-1) <= tail, or None."""
    k = k0 + int(np.searchsorted(cdf, tail, side="right")) - 1  # largest k with F(k) <= tail
    return k + 1 if 0 <= k <= n - 1 else None


def _upper_rank(n: int, k0: int, cdf: npt.NDArray[np.float64], tail: float) -> int | None:
    """Smallest rank u (1-based) with P(X_(u) < Q) = P(B >= u) <= tail, or None."""
    k = k0 + int(np.searchsorted(cdf, 1.0 - tail, side="left"))  # smallest k with F(k) >= 1 - tail
    return k + 1 if 0 <= k <= n - 1 else None


def quantile_interval(samples: Sequence[float] | npt.NDArray[Any], q: float,
                      confidence: float = 0.95) -> tuple[float, float, float]:
    """`(estimate, low, high)` for the q-quantile of the distribution the samples come from.

    The estimate is `np.percentile(samples, 100 * q)`. The bounds are
    distribution-free order statistics: with B ~ Binomial(n, q) the number of
    samples at or below the true quantile Q, P(X_(l) <= Q) = P(B >= l) and
    P(X_(u) >= Q) = P(B <= u - 1), so ranks l < u are chosen from the exact
    binomial CDF (log space, `math.lgamma`, over the window that holds its mass)
    with each tail at most (1 - confidence) / 2: the largest such l, the
    smallest such u. Coverage is at least `confidence` for any continuous
    distribution (and conservative for discrete ones). When n is too small for
    one side (no rank satisfies it: 50 samples cannot bound a p99 from above),
    that bound is -inf / +inf and the other side gets the whole 1 - confidence,
    so the one-sided interval still has the stated coverage.
    """
    x = np.sort(np.asarray(samples, dtype=np.float64).ravel())
    n = x.size
    if n == 0:
        raise ValueError("quantile_interval: no samples")
    if not 0.0 < q < 1.0:
        raise ValueError(f"quantile_interval: q must be in (0, 1), got {q}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"quantile_interval: confidence must be in (0, 1), got {confidence}")
    estimate = float(np.percentile(x, 100.0 * q))
    k0, cdf = _binomial_cdf(n, q)
    alpha = 1.0 - confidence
    lo, hi = _lower_rank(n, k0, cdf, alpha / 2), _upper_rank(n, k0, cdf, alpha / 2)
    if lo is None and hi is not None:
        hi = _upper_rank(n, k0, cdf, alpha)
    elif hi is None and lo is not None:
        lo = _lower_rank(n, k0, cdf, alpha)
    low = -math.inf if lo is None else float(x[lo - 1])
    high = math.inf if hi is None else float(x[hi - 1])
    return estimate, low, high


def verdict(low: float, high: float, bound: float) -> str:
    """`pass` when the interval is wholly within the bound, `fail` when wholly above, else `inconclusive`."""
    if high <= bound:
        return "pass"
    if low > bound:
        return "fail"
    return "inconclusive"


@dataclass(frozen=True)
class Percentile:
    """One percentile of the request latency, its confidence interval and its budget."""

    name: str
    q: float
    value_ms: float
    low_ms: float
    high_ms: float
    bound_ms: float | None
    verdict: str | None  # None when not budgeted

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe (an unbounded side of the interval is None)."""
        return {"name": self.name, "q": self.q, "value_ms": _json_float(self.value_ms),
                "low_ms": _json_float(self.low_ms), "high_ms": _json_float(self.high_ms),
                "bound_ms": self.bound_ms, "verdict": self.verdict}


def _percentiles(times_ms: Sequence[float], budgets: Mapping[str, float], confidence: float) -> tuple[Percentile, ...]:
    out = []
    for name, q in PERCENTILES:
        value, low, high = quantile_interval(times_ms, q, confidence)
        bound = budgets.get(name)
        out.append(Percentile(name, q, value, low, high, bound, None if bound is None else verdict(low, high, bound)))
    return tuple(out)


# -- the host ----------------------------------------------------------------
def reference_workload() -> float:
    """A fixed, deterministic ~20-50 µs of numpy and Python work: the yardstick of the host's noise."""
    m = _REF_MATRIX @ _REF_MATRIX
    total = 0
    for i in range(200):
        total += i * i % 7
    return float(m.trace()) + total + len(sorted(str(i) for i in range(40)))


@dataclass(frozen=True)
class HostNoise:
    """How noisy the host was while measuring: the reference workload's spread and the load.

    `quiet` means `spread < QUIET_SPREAD` (1.5) and a 1-minute load average at
    most the CPUs this process may use (the measuring process itself counts as
    one), or no load average where the OS has none.
    """

    reference_p50_ms: float
    reference_p99_ms: float
    spread: float
    loadavg: float | None
    cpus: int
    quiet: bool

    @classmethod
    def from_samples(cls, reference_ms: Sequence[float]) -> HostNoise:
        """The noise shown by the reference workload's timings, with the current load."""
        p50, p99 = (float(np.percentile(reference_ms, p)) for p in (50, 99))
        spread = p99 / p50 if p50 > 0 else math.inf
        try:
            loadavg: float | None = os.getloadavg()[0]
        except (AttributeError, OSError):
            loadavg = None
        cpus = affinity_cpus()
        quiet = spread < QUIET_SPREAD and (loadavg is None or loadavg <= cpus)
        return cls(p50, p99, spread, loadavg, cpus, quiet)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe."""
        return {"reference_p50_ms": self.reference_p50_ms, "reference_p99_ms": self.reference_p99_ms,
                "spread": _json_float(self.spread), "loadavg": self.loadavg, "cpus": self.cpus,
                "quiet": self.quiet, "quiet_spread": QUIET_SPREAD}


def settle_heap() -> dict[str, Any]:
    """Once, after warm-up: collect, freeze what survives, make gen-0 collections rare.

    Frozen objects (the model, kernels, modules: everything loaded so far) are
    never rescanned by the collector, so a collection on the request path costs
    only the young objects. Returns what it did, for logs and JSON.
    """
    previous = gc.get_threshold()
    collected = gc.collect()
    gc.freeze()
    gc.set_threshold(GEN0_THRESHOLD, *previous[1:])
    return {"collected": collected, "frozen": gc.get_freeze_count(),
            "threshold": list(gc.get_threshold()), "previous_threshold": list(previous)}


# -- batches -------------------------------------------------------------------
@dataclass(frozen=True)
class BatchPoint:
    """Latency of one whole batch (pre + model + post) and the rows per second it gives."""

    batch: int
    p50_ms: float
    p99_ms: float
    rows_per_s: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe."""
        return {"batch": self.batch, "p50_ms": self.p50_ms, "p99_ms": self.p99_ms,
                "rows_per_s": _json_float(self.rows_per_s)}


def measure_batches(run: Callable[[int], object], sizes: Sequence[int], *, iterations: int = 30,
                    seconds_per_size: float = 1.0, stop_above_ms: float | None = None,
                    clock: Clock = time.perf_counter) -> list[BatchPoint]:
    """Time `run(size)` (one batch of `size` rows; build it beforehand, the call is timed) per size.

    Each size gets up to `iterations` runs or about `seconds_per_size`, whichever
    is fewer (at least 5), after one untimed-for-the-table run that warms the
    shape; sizes stop growing once a batch's p99 passes `stop_above_ms` (larger
    ones cannot fit the budget either).
    """
    points: list[BatchPoint] = []
    for size in sizes:
        first = _timed(lambda: run(size), 1, clock)[0] / 1000  # noqa: B023  (warms this shape)
        runs = max(5, min(iterations, int(seconds_per_size / max(first, 1e-6))))
        times = _timed(lambda: run(size), runs, clock)  # noqa: B023  (called right here)
        p50 = float(np.percentile(times, 50))
        points.append(BatchPoint(size, p50, float(np.percentile(times, 99)), size / max(p50 / 1000, 1e-12)))
        if stop_above_ms is not None and points[-1].p99_ms > stop_above_ms:
            break
    return points


def _timed(fn: Callable[[], object], iterations: int, clock: Clock) -> list[float]:
    """Milliseconds of each of `iterations` calls of `fn`."""
    times = []
    for _ in range(iterations):
        t0 = clock()
        fn()
        times.append((clock() - t0) * 1000.0)
    return times


# -- single requests -------------------------------------------------------------
@dataclass(frozen=True)
class Measurement:
    """Single-request latency with confidence intervals, the host's noise and why measuring stopped."""

    samples: int
    rounds: int
    seconds: float
    confidence: float
    percentiles: tuple[Percentile, ...]  # p50, p95, p99
    noise: HostNoise
    gc: dict[str, Any]
    batches: tuple[BatchPoint, ...]
    stopped: str  # "decided", "max_samples", "max_seconds" or "min reached (no budget)"

    @property
    def verdict(self) -> str | None:
        """`fail` if any budgeted percentile fails, else `inconclusive` if any is, else `pass`; None without budgets."""
        verdicts = {p.verdict for p in self.percentiles if p.verdict is not None}
        if not verdicts:
            return None
        return next(v for v in ("fail", "inconclusive", "pass") if v in verdicts)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe (infinities as None)."""
        return {"verdict": self.verdict, "stopped": self.stopped, "samples": self.samples, "rounds": self.rounds,
                "seconds": self.seconds, "confidence": self.confidence,
                "percentiles": [p.to_dict() for p in self.percentiles], "noise": self.noise.to_dict(),
                "gc": self.gc, "batches": [b.to_dict() for b in self.batches]}


def measure(call: Callable[[int], object], *, budgets: Mapping[str, float] | None = None, min_samples: int = 300,
            max_samples: int = 20000, min_seconds: float = 1.0, max_seconds: float = 10.0,
            confidence: float = 0.95, clock: Clock = time.perf_counter,
            reference: Callable[[], object] | None = None, round_seconds: float = 0.1) -> Measurement:
    """Time `call(i)` (request number i) until every budgeted percentile is decided, or a limit is reached.

    Rounds of about `round_seconds` each; after each round a block of the
    reference workload (default `reference_workload`) is timed, interleaved so
    it sees the same load as the model. Measuring stops once there are
    `min_samples` samples, `min_seconds` have passed and every budgeted
    percentile (`budgets`: ms for "p50", "p95", "p99") passes or fails; else it
    goes on until `max_samples` or `max_seconds`. Elapsed time is read from
    `clock` only, so a fake clock drives it deterministically.
    """
    budgets = dict(budgets or {})
    unknown = sorted(set(budgets) - {name for name, _ in PERCENTILES})
    if unknown:
        raise ValueError(f"measure: unknown budget {', '.join(unknown)} (use p50, p95, p99)")
    if not 1 <= min_samples <= max_samples or not 0 <= min_seconds <= max_seconds or round_seconds <= 0:
        raise ValueError("measure: need 1 <= min_samples <= max_samples, 0 <= min_seconds <= max_seconds "
                         "and round_seconds > 0")
    ref = reference or reference_workload
    collections_before = [s["collections"] for s in gc.get_stats()]
    times: list[float] = []
    reference_ms: list[float] = []
    rounds = 0
    start = clock()
    while True:
        # one round of requests
        round_start = clock()
        while True:
            t0 = clock()
            call(len(times))
            t1 = clock()
            times.append((t1 - t0) * 1000.0)
            if len(times) >= max_samples or t1 - round_start >= round_seconds:
                break
        rounds += 1
        # the host's noise, under the same load (one untimed call first: the round evicted its caches)
        ref()
        reference_ms += _timed(ref, REFERENCE_BLOCK, clock)
        # decide, or go on
        percentiles = _percentiles(times, budgets, confidence)
        stopped = _stop_reason(percentiles, len(times), clock() - start, min_samples=min_samples,
                               max_samples=max_samples, min_seconds=min_seconds, max_seconds=max_seconds)
        if stopped is not None:
            break
    collections = [s["collections"] - b for s, b in zip(gc.get_stats(), collections_before, strict=True)]
    gc_state = {"enabled": gc.isenabled(), "threshold": list(gc.get_threshold()), "frozen": gc.get_freeze_count(),
                "collections": collections}
    return Measurement(samples=len(times), rounds=rounds, seconds=clock() - start, confidence=confidence,
                       percentiles=percentiles, noise=HostNoise.from_samples(reference_ms), gc=gc_state,
                       batches=(), stopped=stopped)


def _stop_reason(percentiles: Sequence[Percentile], samples: int, elapsed: float, *, min_samples: int,
                 max_samples: int, min_seconds: float, max_seconds: float) -> str | None:
    """Why measuring stops now, or None to go on."""
    if samples >= min_samples and elapsed >= min_seconds:
        budgeted = [p.verdict for p in percentiles if p.verdict is not None]
        if not budgeted:
            return "min reached (no budget)"
        if "inconclusive" not in budgeted:
            return "decided"
    if samples >= max_samples:
        return "max_samples"
    if elapsed >= max_seconds:
        return "max_seconds"
    return None
