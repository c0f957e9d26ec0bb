"""What serving costs, live: CPU seconds per request and USD per 1,000 requests, computed when scraped.

At each scrape of `/metrics` the meter reads the process's CPU time
(`time.process_time()`: every thread, onnxruntime's included) and each served
version's answered requests (status 200) and busy seconds (its batches' pre,
infer and post time), and compares them with the snapshot taken at least
`WINDOW_S` earlier (else the oldest one it has: the first scrape only starts
the window). A version's share of the CPU time is its share of the busy
seconds (with one model: all of it), so

    infc_cpu_seconds_per_request = CPU seconds (its share) / its requests answered
    infc_cost_usd_per_1000_requests = 1000 x that x the price of a vCPU-second

The price comes from the bundle's manifest (`cost`: the spec's `deploy:
{usd_per_hour, vcpus}` or `{instance}`), per vCPU: `usd_per_hour / vcpus`
(vcpus unset: the vCPUs the server uses, its compute threads). What is
charged is the CPU time used, not the vCPUs reserved: an idle server's cost
per request does not grow. A bundle running on CUDA is charged the whole host
for the window instead (a GPU is busy or idle as a whole): `usd_per_hour x
seconds / requests`. A version without requests in the window has no sample.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from .cpus import usable_cpus

if TYPE_CHECKING:
    from prometheus_client.core import Metric

    from .pipeline import Pipeline

__all__ = ["METER", "WINDOW_S", "CostMeter", "LivePrice", "Metered", "live_price"]

WINDOW_S = 60.0
"""How far back the deltas reach (at least; the oldest snapshot kept when the meter is younger)."""
_MAX_SNAPSHOTS = 4096


@dataclass(frozen=True)
class LivePrice:
    """The price the meter charges a version: per CPU-second used, or (on a GPU) per second of the whole host."""

    usd_per_hour: float
    vcpus: int
    whole_host: bool

    @property
    def usd_per_cpu_second(self) -> float:
        return self.usd_per_hour / self.vcpus / 3600.0


def live_price(pipeline: Pipeline) -> LivePrice | None:
    """The price in `pipeline`'s manifest (None without one, or for a pipeline made in process)."""
    manifest = pipeline.manifest
    stated = None if manifest is None else manifest.cost
    if not stated or not stated.get("usd_per_hour"):
        return None
    threads = int(manifest.session.get("intra_op_num_threads") or 0) if manifest is not None else 0
    vcpus = int(stated.get("vcpus") or threads or usable_cpus())
    return LivePrice(float(stated["usd_per_hour"]), max(1, vcpus), "CUDAExecutionProvider" in pipeline.providers)


class Metered(Protocol):
    """What the meter reads of a served version (`metrics.Metrics`)."""

    model: str
    version: str | None
    price: LivePrice | None

    def work(self) -> tuple[int, float]: ...


@dataclass(frozen=True)
class _Snapshot:
    at: float
    cpu: float
    versions: dict[int, tuple[int, float]]  # id(metrics) -> (requests answered 200, busy seconds)


class CostMeter:
    """Deltas of CPU time, requests and busy time between scrapes; one per process (`METER`)."""

    def __init__(self, window_s: float = WINDOW_S, *, cpu: Callable[[], float] = time.process_time,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.window_s = window_s
        self._cpu, self._clock = cpu, clock
        self._snapshots: deque[_Snapshot] = deque(maxlen=_MAX_SNAPSHOTS)

    def measure(self, models: Sequence[Metered]) -> dict[int, tuple[float, float | None]]:
        """Take a snapshot; for each version with requests in the window, by `id(metrics)`: (CPU seconds per
        request, USD per 1,000 requests or None without a price)."""
        now = _Snapshot(self._clock(), self._cpu(), {id(m): m.work() for m in models})
        snapshots = self._snapshots
        snapshots.append(now)
        while len(snapshots) > 2 and snapshots[1].at <= now.at - self.window_s:
            snapshots.popleft()
        base = snapshots[0]
        if base is now:
            return {}
        seconds, cpu = now.at - base.at, max(0.0, now.cpu - base.cpu)
        deltas = {key: (requests - base.versions.get(key, (0, 0.0))[0], busy - base.versions.get(key, (0, 0.0))[1])
                  for key, (requests, busy) in now.versions.items()}
        total_busy = sum(max(0.0, busy) for _, busy in deltas.values())
        total_requests = sum(max(0, requests) for requests, _ in deltas.values())
        out: dict[int, tuple[float, float | None]] = {}
        for m in models:
            requests, busy = deltas[id(m)]
            if requests <= 0:
                continue
            share = max(0.0, busy) / total_busy if total_busy > 0 else requests / total_requests
            per_request = cpu * share / requests
            price = m.price
            usd = None
            if price is not None:
                usd = (price.usd_per_hour / 3600.0 * seconds * share / requests * 1000.0 if price.whole_host
                       else per_request * price.usd_per_cpu_second * 1000.0)
            out[id(m)] = (per_request, usd)
        return out

    def families(self, models: Sequence[Metered]) -> list[Metric]:
        """`infc_cpu_seconds_per_request` and `infc_cost_usd_per_1000_requests` of `models` (a snapshot taken)."""
        from prometheus_client.core import GaugeMetricFamily

        measured = self.measure(models)
        labels = ["model", "version"]
        cpu = GaugeMetricFamily("infc_cpu_seconds_per_request",
                                f"Process CPU seconds per request answered (200), this version's share, over the "
                                f"last {self.window_s:g} s (between scrapes).", labels=labels)
        usd = GaugeMetricFamily("infc_cost_usd_per_1000_requests",
                                "USD per 1,000 requests answered (200): the CPU seconds they used at the bundle's "
                                "price per vCPU (deploy: usd_per_hour / vcpus, or instance), over the same window.",
                                labels=labels)
        for m in models:
            if id(m) in measured:
                per_request, cost = measured[id(m)]
                values: Any = [m.model, m.version or ""]
                cpu.add_metric(values, per_request)
                if cost is not None:
                    usd.add_metric(values, cost)
        return [cpu, usd]


METER = CostMeter()
"""The process's meter: one CPU clock, every version served."""
