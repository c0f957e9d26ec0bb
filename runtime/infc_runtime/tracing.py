"""OpenTelemetry traces of infer requests: optional, and off unless the standard `OTEL_*` variables ask for them.

Off (the default) nothing of OpenTelemetry is imported and a request costs a
test of `_Server.tracing` against None. On when the environment says so
(`configured`):

- `OTEL_SDK_DISABLED` is not `true`, and
- `OTEL_TRACES_EXPORTER` names an exporter other than `none`, or
  `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` / `OTEL_EXPORTER_OTLP_ENDPOINT` is set
  (exporter `otlp`). Unlike the SDK, whose default exporter is `otlp`, an empty
  environment means no traces: a bundle never dials a collector nobody set up.

The rest is the SDK's own configuration, read by the SDK: the exporters by name
from their `opentelemetry_traces_exporter` entry points (`otlp`, whose protocol
`OTEL_EXPORTER_OTLP[_TRACES]_PROTOCOL` picks gRPC or `http/protobuf`; `console`;
each with its own `OTEL_EXPORTER_*` variables), one `BatchSpanProcessor` per
exporter (`OTEL_BSP_*`), the sampler (`OTEL_TRACES_SAMPLER[_ARG]`), the resource
(`OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`; `service.name` is `infc` when
neither sets it) and the propagators (`OTEL_PROPAGATORS`, W3C `traceparent` and
baggage by default). The packages are the `otel` extra (`pip install
"infc[otel]"`; beside a bundle, `pip install opentelemetry-sdk
opentelemetry-exporter-otlp`): configured without them, `serve` exits 2.

Spans of one infer request, all with the request span as parent (over gRPC, with `--grpc-port`, the request
span is `inference.GRPCInferenceService/ModelInfer`, its parent from the call's `traceparent` metadata):

| span                     | from                      | to                          |
|--------------------------|---------------------------|-----------------------------|
| `POST /v2/models/M/infer`| the request arrived       | its answer was ready        |
| `decode`                 | the request arrived       | its body read and decoded   |
| `queue`                  | enqueued                  | its batch started           |
| `pre`, `infer`, `post`   | the batch's stage began   | it ended (one per run)      |
| `encode`                 | its result came back      | its answer was encoded      |

The request span is a child of the caller's span when the request carries a
`traceparent` header, else a root. A batch is a span of its own, `batch`, a
root linked to the spans of the requests it served; their `pre`, `infer` and
`post` spans link back to it (the stages run once for the whole batch). A
request the sampler drops costs its start and no more: no child spans, and a
batch none of whose requests was sampled makes no span (one that has one is
sampled as a root by the sampler: a ratio sampler may drop it).

Cost (bench/tracing_cost.py, bench/RESULTS.md): off, none measurable; on, the
SDK's spans and their export in the server's process, most of a millisecond of
CPU per request at every request sampled: sample a busy server with
`OTEL_TRACES_SAMPLER=parentbased_traceidratio` and `OTEL_TRACES_SAMPLER_ARG`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Mapping
from typing import Any

from . import __version__

__all__ = ["SERVICE_NAME", "BatchTrace", "RequestTrace", "Tracing", "TracingError", "configured", "from_environment"]

GRPC_SERVICE = "inference.GRPCInferenceService"
SERVICE_NAME = "infc"
"""`service.name` of the spans when neither OTEL_SERVICE_NAME nor OTEL_RESOURCE_ATTRIBUTES names one."""
PACKAGES = "opentelemetry-sdk opentelemetry-exporter-otlp"
"""What to install for traces (the `otel` extra of infc)."""
_OTLP_BY_PROTOCOL = {"grpc": "otlp_proto_grpc", "http/protobuf": "otlp_proto_http"}
_TRUE = frozenset({"true", "1", "yes", "on"})


class TracingError(Exception):
    """The environment asks for traces the server cannot make (packages missing, an unknown exporter)."""


def configured(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether the `OTEL_*` variables in `environ` turn tracing on (see the module docstring); imports nothing."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() in _TRUE:
        return False
    exporters = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporters:
        return exporters != "none"
    return any(environ.get(name, "").strip() for name in
               ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"))


def from_environment(environ: Mapping[str, str] = os.environ) -> Tracing | None:
    """Tracing as `environ` configures it, exporting through the SDK; None when it is off.

    Raises `TracingError` when it is on but the packages are missing or an
    exporter name is unknown.
    """
    if not configured(environ):
        return None
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as exc:
        raise TracingError(f"OTEL_* variables turn tracing on, but OpenTelemetry is not installed ({exc}): "
                           f"pip install {PACKAGES} (or infc[otel]), or unset them") from None
    resource = Resource.create()  # OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES
    if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        resource = resource.merge(Resource({"service.name": SERVICE_NAME}))
    provider = TracerProvider(resource=resource)  # the sampler from OTEL_TRACES_SAMPLER[_ARG]
    for exporter in _exporters(environ):
        provider.add_span_processor(BatchSpanProcessor(exporter))  # OTEL_BSP_*
    return Tracing(provider)


def _exporters(environ: Mapping[str, str]) -> list[Any]:
    """The span exporters OTEL_TRACES_EXPORTER names (`otlp` when only an endpoint is set), each made by its own
    entry point, so it reads its own OTEL_EXPORTER_* variables."""
    from importlib.metadata import entry_points

    names = [n.strip() for n in environ.get("OTEL_TRACES_EXPORTER", "otlp").lower().split(",") if n.strip()]
    protocol = (environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
                or "grpc").strip().lower()
    exporters = []
    for name in names:
        if name == "none":
            continue
        # as the SDK's own configurator does: `otlp` is the gRPC exporter unless the protocol says http/protobuf
        entry = _OTLP_BY_PROTOCOL.get(protocol) if name == "otlp" else name
        if entry is None:
            raise TracingError(f"OTEL_EXPORTER_OTLP_PROTOCOL: {protocol!r} is not grpc or http/protobuf")
        found = entry_points(group="opentelemetry_traces_exporter", name=entry)
        if not found:
            raise TracingError(f"OTEL_TRACES_EXPORTER: no span exporter {name!r} is installed (for otlp and console: "
                               f"pip install {PACKAGES})")
        exporters.append(next(iter(found)).load()())
    return exporters


class Tracing:
    """Makes the spans of infer requests and batches with the tracers of `provider` (an SDK `TracerProvider`)."""

    def __init__(self, provider: Any) -> None:
        from opentelemetry import propagate, trace
        from opentelemetry.context import Context

        self.provider = provider
        self.tracer = provider.get_tracer("infc_runtime", __version__)
        self.propagator = propagate.get_global_textmap()  # as OTEL_PROPAGATORS says (tracecontext, baggage)
        self._trace = trace
        self._server = trace.SpanKind.SERVER
        self._error = trace.Status(trace.StatusCode.ERROR)
        self._root = Context()  # a batch span's: no parent

    def request(self, scope: Mapping[str, Any], model: str, version: str) -> RequestTrace | None:
        """The trace of the infer request `scope` (ASGI), started now, its parent from the `traceparent` header;
        None when the sampler drops it (then nothing more is done for it)."""
        client = scope.get("client")
        attributes = {"http.request.method": scope["method"], "url.path": scope["path"], "http.route": scope["path"],
                      "infc.model": model, "infc.model_version": version}
        if client:
            attributes["client.address"] = client[0]
        return self._start(f"{scope['method']} {scope['path']}", scope["headers"], _HEADERS, attributes)

    def call(self, metadata: Iterable[tuple[str, str]], method: str, peer: str | None, model: str,
             version: str) -> RequestTrace | None:
        """The trace of a gRPC call of `method` with its invocation `metadata` (`traceparent` there), as `request`."""
        attributes = {"rpc.system": "grpc", "rpc.service": GRPC_SERVICE, "rpc.method": method, "infc.model": model,
                      "infc.model_version": version}
        kind, _, address = (peer or "").partition(":")  # ipv4:127.0.0.1:5555, ipv6:[::1]:5555, unix:PATH
        if address:
            attributes["client.address"] = address.rsplit(":", 1)[0].strip("[]") if kind in ("ipv4", "ipv6") \
                else address
        return self._start(f"{GRPC_SERVICE}/{method}", metadata, _METADATA, attributes)

    def _start(self, name: str, carrier: Any, getter: Any, attributes: dict[str, Any]) -> RequestTrace | None:
        start = time.time_ns()
        parent = self.propagator.extract(carrier, getter=getter)
        span = self.tracer.start_span(name, context=parent, kind=self._server, attributes=attributes,
                                      start_time=start)
        return RequestTrace(self, span, start) if span.is_recording() else None

    def batch(self) -> BatchTrace:
        """The trace of a batch that starts now: the timings dict to give `Pipeline.run_batch`."""
        return BatchTrace(self)

    def flush(self) -> None:
        """Export the spans ended so far (at shutdown)."""
        self.provider.force_flush()


class RequestTrace:
    """One infer request's span and the times its children are made from."""

    __slots__ = ("batch_size", "context", "decoded", "encoding", "queue_end", "span", "start", "tracing")

    def __init__(self, tracing: Tracing, span: Any, start: int) -> None:
        self.tracing, self.span, self.start = tracing, span, start
        self.context = tracing._trace.set_span_in_context(span)  # its children's parent
        self.decoded = self.queue_end = self.encoding = 0
        self.batch_size = 0

    def child(self, name: str, start: int, end: int, links: Any = None) -> None:
        """A finished child span of the request."""
        self.tracing.tracer.start_span(name, context=self.context, links=links, start_time=start).end(end_time=end)

    def mark_decoded(self, rows: int) -> None:
        """The request's body is read and decoded, and it is about to be queued."""
        self.decoded = time.time_ns()
        self.child("decode", self.start, self.decoded)
        self.span.set_attribute("infc.rows", rows)

    def mark_encoding(self) -> None:
        """The request's result came back; its encoding starts."""
        self.encoding = time.time_ns()

    def finish(self, status: int | None) -> None:
        """End the request span with its HTTP status (a gRPC call's too: the status the server maps to its code;
        None: the client left before its answer)."""
        end = time.time_ns()
        if self.decoded and not self.queue_end:  # never reached a batch (429, 504, ...): queued until the end
            self.child("queue", self.decoded, self.encoding or end)
        elif self.queue_end:
            self.child("queue", self.decoded, self.queue_end)
        if self.encoding:
            self.child("encode", self.encoding, end)
        span = self.span
        if self.batch_size:
            span.set_attribute("infc.batch.rows", self.batch_size)
        if status is None:
            span.set_attribute("infc.client_disconnected", True)
        else:
            span.set_attribute("http.response.status_code", status)
            if status >= 500:
                span.set_status(self.tracing._error)
        span.end(end_time=end)


class BatchTrace:
    """One batch's trace: when it started, and `intervals`, which `Pipeline.run_batch` fills with each stage's
    run as (stage, start, end) in wall-clock ns."""

    def __init__(self, tracing: Tracing) -> None:
        self.tracing = tracing
        self.start = time.time_ns()
        self.intervals: list[tuple[str, int, int]] = []

    def finish(self, traces: Iterable[RequestTrace | None], rows: int, instance: int) -> None:
        """The batch's span, linked to the spans of the requests it ran (`traces`, None for one not traced), and
        theirs: the end of their queue, and their `pre`, `infer`, `post` spans, linked back to it."""
        traced = [t for t in traces if t is not None]
        if not traced:
            return
        tracing = self.tracing
        links = [tracing._trace.Link(t.span.get_span_context()) for t in traced]
        span = tracing.tracer.start_span("batch", context=tracing._root, links=links, start_time=self.start,
                                         attributes={"infc.batch.requests": len(traced), "infc.batch.rows": rows,
                                                     "infc.instance": instance})
        span.end()
        back = [tracing._trace.Link(span.get_span_context())]
        for t in traced:
            t.queue_end = self.start
            t.batch_size = rows
            for stage, began, ended in self.intervals:
                t.child(stage, began, ended, links=back)


class _HeaderGetter:
    """Reads a propagator's headers (`traceparent`, `tracestate`, `baggage`) from ASGI's raw header list
    (a Getter by its methods: subclassing opentelemetry's would import it when tracing is off)."""

    def get(self, carrier: Iterable[tuple[bytes, bytes]], key: str) -> list[str] | None:
        name = key.lower().encode("latin-1")
        values = [v.decode("latin-1") for k, v in carrier if k == name]
        return values or None

    def keys(self, carrier: Iterable[tuple[bytes, bytes]]) -> list[str]:
        return [k.decode("latin-1") for k, _ in carrier]


class _MetadataGetter:
    """The same from a gRPC call's invocation metadata ((key, value) pairs, keys in lower case; binary values,
    `-bin` keys, are not a propagator's)."""

    def get(self, carrier: Iterable[tuple[str, Any]], key: str) -> list[str] | None:
        name = key.lower()
        values = [v for k, v in carrier if k == name and isinstance(v, str)]
        return values or None

    def keys(self, carrier: Iterable[tuple[str, Any]]) -> list[str]:
        return [k for k, _ in carrier]


_HEADERS = _HeaderGetter()
_METADATA = _MetadataGetter()
