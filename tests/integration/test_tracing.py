"""Traces from the real server process, configured only by OTEL_* variables, exported over OTLP/HTTP to a
collector in the test (a loopback HTTP server decoding the OTLP protobuf the SDK's exporter sends)."""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
import tritonclient.grpc as grpcclient
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from runtime_bundle import make_request, write_bundle
from servers import Server, free_port

from infc_runtime.protocol import to_datatype

CALLER_TRACE = "0af7651916cd43dd8448eb211c80319c"
CALLER_SPAN = "b7ad6b7169203331"
GRPC_TRACE = "11112222333344445555666677778888"
GRPC_SPAN = "1234123412341234"
STAGES = {"decode", "queue", "pre", "infer", "post", "encode"}


class Collector(ThreadingHTTPServer):
    """An OTLP/HTTP trace receiver on a free loopback port: keeps every span it is sent, with its service name."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Receive)
        self.spans: list[tuple[str, Span]] = []
        self.lock = threading.Lock()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Receive(BaseHTTPRequestHandler):
    server: Collector

    def do_POST(self) -> None:  # noqa: N802  (http.server's name)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        export = ExportTraceServiceRequest.FromString(body)
        with self.server.lock:
            for resource_spans in export.resource_spans:
                service = next(a.value.string_value for a in resource_spans.resource.attributes
                               if a.key == "service.name")
                for scope_spans in resource_spans.scope_spans:
                    self.server.spans.extend((service, span) for span in scope_spans.spans)
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def collector() -> Iterator[Collector]:
    server = Collector()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def otel_env(**variables: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    return {**env, **variables}


def test_spans_reach_an_otlp_collector_with_the_callers_trace(tmp_path: Path, collector: Collector) -> None:
    bundle = write_bundle(tmp_path / "bundle")
    env = otel_env(OTEL_EXPORTER_OTLP_ENDPOINT=collector.endpoint, OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf",
                   OTEL_SERVICE_NAME="toy-server")
    grpc_port = free_port()
    server = Server([sys.executable, "-m", "infc_runtime", "serve", str(bundle), "--port", "{port}",
                     "--grpc-port", str(grpc_port)], tmp_path / "server.log", env=env)
    try:
        server.wait_ready()
        body = {"inputs": [{"name": k, "shape": list(v.shape), "datatype": to_datatype(v.dtype),
                            "data": v.ravel().tolist()} for k, v in make_request(2).items()]}
        with httpx.Client(base_url=f"http://{server.url}") as client:
            response = client.post("/v2/models/toy/infer", json=body,
                                   headers={"traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"})
            assert response.status_code == 200
        triton = grpcclient.InferenceServerClient(f"127.0.0.1:{grpc_port}")
        try:
            inputs = [grpcclient.InferInput(name, list(array.shape), to_datatype(array.dtype)).set_data_from_numpy(
                array) for name, array in make_request(3).items()]
            triton.infer("toy", inputs, headers={"traceparent": f"00-{GRPC_TRACE}-{GRPC_SPAN}-01"})
        finally:
            triton.close()
    finally:
        code = server.stop()  # the spans are flushed as the server stops
    log = (tmp_path / "server.log").read_text()
    assert code == 0, log
    assert "tracing on" in log
    spans = [span for service, span in collector.spans if service == "toy-server"]
    assert len(spans) == len(collector.spans)
    request, call = sorted((s for s in spans if s.kind == Span.SPAN_KIND_SERVER), key=lambda s: s.start_time_unix_nano)
    assert request.name == "POST /v2/models/toy/infer"
    assert request.trace_id.hex() == CALLER_TRACE and request.parent_span_id.hex() == CALLER_SPAN
    assert call.name == "inference.GRPCInferenceService/ModelInfer"
    assert call.trace_id.hex() == GRPC_TRACE and call.parent_span_id.hex() == GRPC_SPAN
    for served in (request, call):
        stages = {s.name for s in spans if s.parent_span_id == served.span_id and s.trace_id == served.trace_id}
        assert stages == STAGES
    batches = [s for s in spans if s.name == "batch"]
    assert sorted([link.span_id for link in b.links] for b in batches) == sorted([[request.span_id], [call.span_id]])


def test_asked_for_traces_without_an_exporter_it_exits_2(tmp_path: Path) -> None:
    bundle = write_bundle(tmp_path / "bundle")
    server = Server([sys.executable, "-m", "infc_runtime", "serve", str(bundle), "--port", "{port}"],
                    tmp_path / "server.log", env=otel_env(OTEL_TRACES_EXPORTER="jaeger-thrift"))
    assert server.process.wait(timeout=60) == 2
    log = (tmp_path / "server.log").read_text()
    assert "OTEL_TRACES_EXPORTER: no span exporter 'jaeger-thrift' is installed" in log
    assert len(log.strip().splitlines()) == 1
