"""Prometheus metrics of one served model, in a registry of their own.

Served as text at `GET /metrics`. Durations are in seconds. Every metric also
carries a `version` label (the bundle's version), so that two versions of one
model served at once (a canary beside the current version) can be compared;
a server of several models renders the metrics of all of them together
(`render_all`), one family per name.

| name                              | type      | labels        | what                                            |
|-----------------------------------|-----------|---------------|-------------------------------------------------|
| `infc_requests_total`             | counter   | model, status | infer requests answered, by HTTP status code    |
| `infc_request_duration_seconds`   | histogram | model         | infer request, body received to response ready  |
| `infc_stage_duration_seconds`     | histogram | model, stage  | `queue`: per request, queued until its batch    |
|                                   |           |               | starts; `pre`, `infer`, `post`: per batch       |
| `infc_batch_size`                 | histogram | model         | rows per batch run (buckets 1, 2, 4, ..., max)  |
| `infc_queue_depth`                | gauge     | model         | requests waiting in the batcher's queue         |
| `infc_inflight_requests`          | gauge     | model         | infer requests received and not yet answered    |
| `infc_client_disconnects_total`   | counter   | model         | infer requests whose client went away before    |
|                                   |           |               | the answer (mid-body or while queued / running; |
|                                   |           |               | not counted in `infc_requests_total`)           |
| `infc_bundle_verified`            | gauge     | model         | 1 when the bundle's files were checked against  |
|                                   |           |               | its manifest before loading, 0 if not (e.g.     |
|                                   |           |               | `--no-verify`, or an app built in process)      |
| `infc_cpu_fallback`               | gauge     | model         | 1 when the bundle was built for an accelerator  |
|                                   |           |               | (CUDA) it cannot use here and is served on CPU  |
|                                   |           |               | (`--allow-cpu-fallback`), else 0                |
| `infc_execution_provider`         | gauge     | model,        | 1 for each ONNX Runtime execution provider the  |
|                                   |           | provider      | model's session uses (`CPUExecutionProvider`)   |
| `infc_cache_hits_total`           | counter   | model         | infer requests answered from the response cache |
| `infc_cache_misses_total`         | counter   | model         | infer requests the cache did not hold (queued)  |
| `infc_cache_entries`              | gauge     | model         | answers kept; `infc_cache_bytes`: their bytes   |
| `infc_cache_evictions_total`      | counter   | model         | answers dropped to make room (LRU)              |
|                                   |           |               | (the four only with `serving.cache`: `cache`)   |
| `infc_cpu_seconds_per_request`    | gauge     | model         | process CPU seconds per request answered, over  |
|                                   |           |               | the last minute between scrapes (`cost`)        |
| `infc_cost_usd_per_1000_requests` | gauge     | model         | those CPU seconds at the bundle's price (only   |
|                                   |           |               | with a price: the spec's `deploy`)              |
| `infc_drift_*`                    | gauge     | model,        | drift indicators against the bundle's reference |
|                                   |           | (feature)     | (`drift` module), computed when scraped         |

Every update happens on the event loop's thread (the batcher records a batch's
stages there once the worker is done), so the values are plain Python numbers
and an update costs a few hundred nanoseconds; prometheus_client's own metric
objects take a lock and several calls per update (1-4 us each, 10-12 us per
request, measured). The registry reads them through a collector when scraped.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, cast

from .cost import METER

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from prometheus_client.core import GaugeMetricFamily, Metric
    from prometheus_client.registry import Collector

    from .cache import ResponseCache
    from .cost import LivePrice
    from .drift import DriftMonitor

__all__ = ["STAGES", "Metrics", "batch_buckets", "content_type", "render_all"]

STAGES = ("queue", "pre", "infer", "post")
"""The values of the `stage` label."""

_DURATION_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def batch_buckets(max_batch_size: int) -> tuple[float, ...]:
    """Histogram buckets for batch sizes: powers of two up to `max_batch_size`, then it."""
    buckets: list[float] = []
    size = 1
    while size < max_batch_size:
        buckets.append(size)
        size *= 2
    buckets.append(max(1, max_batch_size))
    return tuple(buckets)


class _Histogram:
    """Counts per bucket (upper bounds inclusive, as Prometheus's `le`) and the sum."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last: above every bound
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def buckets(self) -> list[tuple[str, float]]:
        cumulative = 0
        out: list[tuple[str, float]] = []
        for bound, count in zip((*map(float, self.bounds), float("inf")), self.counts, strict=True):
            cumulative += count
            out.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
        return out


def content_type() -> str:
    """Media type of `Metrics.render()`'s output: prometheus_client's latest text format."""
    from prometheus_client import CONTENT_TYPE_LATEST

    return str(CONTENT_TYPE_LATEST)


class Metrics:
    """The metrics of one model; every label but `status`/`stage` is bound to it.

    A collector of prometheus_client's (it has `collect`), registered in a registry of its own.
    """

    def __init__(self, model: str, *, version: str | None = None, max_batch_size: int,
                 registry: CollectorRegistry | None = None) -> None:
        self.model = model
        self.version = version
        # the servers always give a version; metrics made without one (tests, tools) have no `version` label
        self._label_names = ["model"] if version is None else ["model", "version"]
        self._label_values = [model] if version is None else [model, version]
        self._failed_seconds = 0.0
        self._last_batch = 0.0
        self._requests: dict[int, int] = {}
        self._duration = _Histogram(_DURATION_BUCKETS)
        self._stages = {stage: _Histogram(_DURATION_BUCKETS) for stage in STAGES}
        self._batch = _Histogram(batch_buckets(max_batch_size))
        self._queue = 0
        self._inflight = 0
        self._disconnects = 0
        self._verified = 0
        self._providers: tuple[str, ...] = ()
        self._cpu_fallback = 0
        self.cache: ResponseCache | None = None
        self.price: LivePrice | None = None
        self.drift: DriftMonitor | None = None
        """The model's drift indicators (their `infc_drift_*` gauges are collected with these), when monitored."""
        self._registry = registry
        if registry is not None:
            registry.register(cast("Collector", self))

    @property
    def registry(self) -> CollectorRegistry:
        """The registry these metrics are in: its own unless one was given (made on first use)."""
        if self._registry is None:
            from prometheus_client import CollectorRegistry

            self._registry = CollectorRegistry(auto_describe=True)
            self._registry.register(cast("Collector", self))
        return self._registry

    def observe_request(self, status: int, seconds: float) -> None:
        """Count an answered infer request and record how long it took."""
        self._requests[status] = self._requests.get(status, 0) + 1
        self._duration.observe(seconds)
        if status != 200:
            self._failed_seconds += seconds

    def observe_stage(self, stage: str, seconds: float) -> None:
        """Record time spent in one stage (one of `STAGES`)."""
        self._stages[stage].observe(seconds)

    def observe_batch(self, rows: int) -> None:
        """Record the size of a batch run."""
        self._batch.observe(rows)
        self._last_batch = time.time()

    def set_queue_depth(self, requests: int) -> None:
        """Set the number of requests waiting in the queue."""
        self._queue = requests

    @property
    def inflight(self) -> int:
        """Infer requests received and not yet answered (the batcher reads it: requests still arriving)."""
        return self._inflight

    def request_started(self) -> None:
        """An infer request arrived."""
        self._inflight += 1

    def request_finished(self) -> None:
        """An infer request was answered."""
        self._inflight -= 1

    def client_disconnected(self) -> None:
        """An infer request's client went away before its answer (counted instead of a status)."""
        self._disconnects += 1

    def set_bundle_verified(self, verified: bool) -> None:
        """Record whether the served bundle's files were verified before loading (the serve command sets it)."""
        self._verified = 1 if verified else 0

    def set_providers(self, providers: Sequence[str], *, cpu_fallback: bool) -> None:
        """Record the execution providers the model's session uses, and whether it runs on CPU for want of the
        one it was built for (the app sets it from its pipeline)."""
        self._providers = tuple(providers)
        self._cpu_fallback = 1 if cpu_fallback else 0

    def watch(self, *, cache: ResponseCache | None, price: LivePrice | None) -> None:
        """Report `cache`'s counters (None: no cache) and price the model's CPU time at `price` (None: no price;
        the CPU seconds per request are reported anyway)."""
        self.cache, self.price = cache, price

    def work(self) -> tuple[int, float]:
        """Requests answered with 200, and the seconds its batches ran (pre, infer, post): the cost meter's view."""
        return self._requests.get(200, 0), sum(self._stages[s].sum for s in ("pre", "infer", "post"))

    def render(self) -> bytes:
        """All metrics in the Prometheus text format (media type `content_type()`), the live cost included."""
        return render_all([self])

    def stats(self) -> dict[str, Any]:
        """This model version's inference statistics in Triton's shape (`/v2/models/NAME/stats`, read by
        tritonclient's `get_inference_statistics`): counts and total nanoseconds per stage."""
        succeeded = self._requests.get(200, 0)
        cache = self.cache
        failed = sum(count for status, count in self._requests.items() if status != 200)

        def duration(count: int, seconds: float) -> dict[str, int]:
            return {"count": count, "ns": int(seconds * 1e9)}

        def stage(name: str) -> dict[str, int]:
            histogram = self._stages[name]
            return duration(sum(histogram.counts), histogram.sum)

        return {
            "name": self.model,
            "version": self.version or "",
            "last_inference": int(self._last_batch * 1000),
            "inference_count": int(self._batch.sum),
            "execution_count": sum(self._batch.counts),
            "inference_stats": {
                "success": duration(succeeded, self._duration.sum - self._failed_seconds),
                "fail": duration(failed, self._failed_seconds),
                "queue": stage("queue"),
                "compute_input": stage("pre"),
                "compute_infer": stage("infer"),
                "compute_output": stage("post"),
                "cache_hit": duration(cache.hits, cache.lookup_seconds[0]) if cache else duration(0, 0.0),
                "cache_miss": duration(cache.misses, cache.lookup_seconds[1]) if cache else duration(0, 0.0),
            },
            "batch_stats": [],
        }

    def collect(self) -> Iterator[Metric]:
        """The metric families, as the registry reads them."""
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

        model, names = self._label_values, self._label_names
        requests = CounterMetricFamily("infc_requests_total", "Infer requests answered, by HTTP status.",
                                       labels=[*names, "status"])
        for status, count in sorted(self._requests.items()):
            requests.add_metric([*model, str(status)], count)
        yield requests
        duration = HistogramMetricFamily("infc_request_duration_seconds",
                                         "Infer request duration, body received to response ready.",
                                         labels=names)
        duration.add_metric(model, self._duration.buckets(), self._duration.sum)
        yield duration
        stages = HistogramMetricFamily("infc_stage_duration_seconds",
                                       "Time spent per stage: queue (per request), pre, infer, post (per batch).",
                                       labels=[*names, "stage"])
        for stage, histogram in self._stages.items():
            stages.add_metric([*model, stage], histogram.buckets(), histogram.sum)
        yield stages
        batch = HistogramMetricFamily("infc_batch_size", "Rows per batch run.", labels=names)
        batch.add_metric(model, self._batch.buckets(), self._batch.sum)
        yield batch
        yield _gauge("infc_queue_depth", "Requests waiting in the batcher's queue.", model, self._queue)
        yield _gauge("infc_inflight_requests", "Infer requests received and not yet answered.", model, self._inflight)
        disconnects = CounterMetricFamily(
            "infc_client_disconnects_total",
            "Infer requests whose client disconnected before the answer (not in infc_requests_total).",
            labels=names)
        disconnects.add_metric(model, self._disconnects)
        yield disconnects
        yield _gauge("infc_bundle_verified",
                     "1 when the bundle's files were verified against its manifest before loading, else 0.",
                     model, self._verified)
        yield _gauge("infc_cpu_fallback",
                     "1 when the model was built for an execution provider it cannot use here and runs on CPU.",
                     model, self._cpu_fallback)
        providers = GaugeMetricFamily("infc_execution_provider",
                                      "1 for each ONNX Runtime execution provider the model's session uses.",
                                      labels=[*names, "provider"])
        for provider in self._providers:
            providers.add_metric([*model, provider], 1)
        yield providers
        if self.cache is not None:
            yield from _cache_families(self.cache, names, model)
        if self.drift is not None:
            yield from self.drift.families(names, model)


def render_all(models: Iterable[Metrics]) -> bytes:
    """The metrics of several models (or versions) in the Prometheus text format, one family per name (a name
    may appear once only in an exposition), with their live cost (`cost.METER`: each call is a scrape)."""
    from prometheus_client import CollectorRegistry, generate_latest

    families: dict[str, Metric] = {}
    served = list(models)
    for family in (*(f for one in served for f in one.collect()), *METER.families(served)):
        if family.name in families:
            families[family.name].samples.extend(family.samples)
        else:
            families[family.name] = family
    registry = CollectorRegistry(auto_describe=False)
    registry.register(cast("Collector", _Families(list(families.values()))))
    return generate_latest(registry)


class _Families:
    """A collector of metric families already made (`render_all`)."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self.families)


def _cache_families(cache: ResponseCache, names: list[str], model: list[str]) -> Iterator[Metric]:
    from prometheus_client.core import CounterMetricFamily

    for name, doc, value in (("infc_cache_hits_total", "Infer requests answered from the response cache.", cache.hits),
                             ("infc_cache_misses_total", "Infer requests the response cache did not hold.",
                              cache.misses),
                             ("infc_cache_evictions_total", "Answers dropped from the response cache to make room.",
                              cache.evictions)):
        counter = CounterMetricFamily(name, doc, labels=names)
        counter.add_metric(model, value)
        yield counter
    yield _gauge("infc_cache_entries", "Answers kept in the response cache.", model, len(cache))
    yield _gauge("infc_cache_bytes", "Bytes of the answers kept in the response cache.", model, cache.bytes)


def _gauge(name: str, documentation: str, labels: list[str], value: float) -> GaugeMetricFamily:
    from prometheus_client.core import GaugeMetricFamily

    family = GaugeMetricFamily(name, documentation, labels=["model", "version"][:len(labels)])
    family.add_metric(labels, value)
    return family
