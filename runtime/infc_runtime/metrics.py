"""Prometheus metrics of one served model, in a registry of their own.

Served as text at `GET /metrics`. Durations are in seconds.

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
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["CONTENT_TYPE", "STAGES", "Metrics", "batch_buckets"]

CONTENT_TYPE = CONTENT_TYPE_LATEST
"""Media type of `Metrics.render()`'s output."""

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


class Metrics:
    """The metrics of one model; every label but `status`/`stage` is bound to it."""

    def __init__(self, model: str, *, max_batch_size: int, registry: CollectorRegistry | None = None) -> None:
        self.model = model
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self._requests = Counter(
            "infc_requests_total",
            "Infer requests answered, by HTTP status.",
            ["model", "status"],
            registry=self.registry,
        )
        self._duration = Histogram(
            "infc_request_duration_seconds",
            "Infer request duration, body received to response ready.",
            ["model"],
            buckets=_DURATION_BUCKETS,
            registry=self.registry,
        ).labels(model=model)
        stages = Histogram(
            "infc_stage_duration_seconds",
            "Time spent per stage: queue (per request), pre, infer, post (per batch).",
            ["model", "stage"],
            buckets=_DURATION_BUCKETS,
            registry=self.registry,
        )
        self._stages = {stage: stages.labels(model=model, stage=stage) for stage in STAGES}
        self._batch = Histogram(
            "infc_batch_size",
            "Rows per batch run.",
            ["model"],
            buckets=batch_buckets(max_batch_size),
            registry=self.registry,
        ).labels(model=model)
        self._queue = Gauge(
            "infc_queue_depth", "Requests waiting in the batcher's queue.", ["model"], registry=self.registry
        ).labels(model=model)
        self.inflight = 0  # the gauge's value, read cheaply by the batcher (requests still arriving)
        self._inflight = Gauge(
            "infc_inflight_requests", "Infer requests received and not yet answered.", ["model"], registry=self.registry
        ).labels(model=model)
        self._disconnects = Counter(
            "infc_client_disconnects_total",
            "Infer requests whose client disconnected before the answer (not in infc_requests_total).",
            ["model"],
            registry=self.registry,
        ).labels(model=model)
        self._verified = Gauge(
            "infc_bundle_verified",
            "1 when the bundle's files were verified against its manifest before loading, else 0.",
            ["model"],
            registry=self.registry,
        ).labels(model=model)

    def observe_request(self, status: int, seconds: float) -> None:
        """Count an answered infer request and record how long it took."""
        self._requests.labels(model=self.model, status=str(status)).inc()
        self._duration.observe(seconds)

    def observe_stage(self, stage: str, seconds: float) -> None:
        """Record time spent in one stage (one of `STAGES`)."""
        self._stages[stage].observe(seconds)

    def observe_batch(self, rows: int) -> None:
        """Record the size of a batch run."""
        self._batch.observe(rows)

    def set_queue_depth(self, requests: int) -> None:
        """Set the number of requests waiting in the queue."""
        self._queue.set(requests)

    def request_started(self) -> None:
        """An infer request arrived."""
        self._inflight.inc()
        self.inflight += 1

    def request_finished(self) -> None:
        """An infer request was answered."""
        self._inflight.dec()
        self.inflight -= 1

    def client_disconnected(self) -> None:
        """An infer request's client went away before its answer (counted instead of a status)."""
        self._disconnects.inc()

    def set_bundle_verified(self, verified: bool) -> None:
        """Record whether the served bundle's files were verified before loading (the serve command sets it)."""
        self._verified.set(1 if verified else 0)

    def render(self) -> bytes:
        """All metrics in the Prometheus text format (media type `CONTENT_TYPE`)."""
        return generate_latest(self.registry)
