"""Traces of infer requests: the real app in process, spans caught by the SDK's InMemorySpanExporter."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from runtime_bundle import gated_pipeline, make_request

from infc_runtime import tracing
from infc_runtime.app import create_app
from infc_runtime.pipeline import Pipeline
from infc_runtime.protocol import to_datatype
from infc_runtime.types import ServingConfig, Tensors

CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"
STAGES = {"decode", "queue", "pre", "infer", "post", "encode"}


@pytest.fixture(scope="module")
def pipeline(bundle: Path) -> Pipeline:
    return Pipeline.load(bundle)


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


def traced(exporter: InMemorySpanExporter) -> tracing.Tracing:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return tracing.Tracing(provider)


@asynccontextmanager
async def serving(pipeline: Pipeline, exporter: InMemorySpanExporter, *, warmup: bool = True
                  ) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(pipeline, warmup=warmup, tracing=traced(exporter))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=("10.1.2.3", 4567))
        async with httpx.AsyncClient(transport=transport, base_url="http://infc") as client:
            while (await client.get("/v2/health/ready")).status_code != 200:
                await asyncio.sleep(0.01)
            yield client


def run(body: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(body(), timeout=20))


def json_request(tensors: Tensors) -> dict[str, Any]:
    return {"inputs": [{"name": k, "shape": list(v.shape), "datatype": to_datatype(v.dtype),
                        "data": v.ravel().tolist()} for k, v in tensors.items()]}


def children(spans: list[ReadableSpan], parent: ReadableSpan) -> dict[str, list[ReadableSpan]]:
    found: dict[str, list[ReadableSpan]] = {}
    for span in spans:
        if span.parent is not None and span.parent.span_id == parent.context.span_id:
            found.setdefault(span.name, []).append(span)
    return found


def requests_of(spans: list[ReadableSpan]) -> list[ReadableSpan]:
    return [s for s in spans if s.kind == SpanKind.SERVER]


def test_request_span_is_the_callers_child_with_a_child_per_stage(pipeline: Pipeline,
                                                                   exporter: InMemorySpanExporter) -> None:
    async def body() -> None:
        async with serving(pipeline, exporter) as client:
            response = await client.post("/v2/models/toy/infer", json=json_request(make_request(3)),
                                         headers={"traceparent": TRACEPARENT})
            assert response.status_code == 200

    run(body)
    spans = list(exporter.get_finished_spans())
    (request,) = requests_of(spans)
    assert request.name == "POST /v2/models/toy/infer"
    assert request.parent is not None and request.parent.is_remote
    assert f"{request.context.trace_id:032x}" == CALLER_TRACE and f"{request.parent.span_id:016x}" == CALLER_SPAN
    attributes = dict(request.attributes or {})
    assert attributes["http.response.status_code"] == 200 and attributes["infc.rows"] == 3
    assert attributes["infc.model"] == "toy" and attributes["infc.model_version"] == "1"
    assert attributes["client.address"] == "10.1.2.3" and attributes["infc.batch.rows"] == 3
    assert request.status.status_code == StatusCode.UNSET
    stages = children(spans, request)
    assert set(stages) == STAGES and all(len(v) == 1 for v in stages.values())
    assert request.start_time is not None and request.end_time is not None
    for (span,) in stages.values():
        assert span.context.trace_id == request.context.trace_id
        assert span.start_time is not None and span.end_time is not None
        assert request.start_time <= span.start_time <= span.end_time <= request.end_time, span.name
    order = ["decode", "queue", "pre", "infer", "post", "encode"]
    starts = [stages[name][0].start_time or 0 for name in order]
    assert starts == sorted(starts)
    # the batch: its own trace, linked to the request; the request's stages of it link back
    (batch,) = [s for s in spans if s.name == "batch"]
    assert batch.parent is None and batch.context.trace_id != request.context.trace_id
    assert [link.context.span_id for link in batch.links] == [request.context.span_id]
    assert dict(batch.attributes or {})["infc.batch.requests"] == 1
    for name in ("pre", "infer", "post"):
        assert [link.context.span_id for link in stages[name][0].links] == [batch.context.span_id]


def test_a_batch_links_every_request_it_ran(bundle: Path, exporter: InMemorySpanExporter) -> None:
    gate = threading.Event()
    calls: list[int] = []
    gated = gated_pipeline(bundle, ServingConfig(max_batch_size=8, max_queue_delay_ms=50), gate, calls)
    held = make_request(1)
    held["pixels"][0, 0] = 255

    async def body() -> None:
        async with serving(gated, exporter, warmup=False) as client:
            first = asyncio.ensure_future(client.post("/v2/models/toy/infer", json=json_request(held)))
            while not calls:
                await asyncio.sleep(0.005)
            others = [asyncio.ensure_future(client.post("/v2/models/toy/infer", json=json_request(make_request(2)),
                                                        headers={"traceparent": TRACEPARENT}))
                      for _ in range(3)]
            while len(exporter.get_finished_spans()) < 3:  # each one's decode span: all three are queued
                await asyncio.sleep(0.005)
            gate.set()
            assert [r.status_code for r in await asyncio.gather(first, *others)] == [200] * 4

    run(body)
    spans = list(exporter.get_finished_spans())
    requests = requests_of(spans)
    assert len(requests) == 4
    batches = sorted((s for s in spans if s.name == "batch"), key=lambda s: s.start_time or 0)
    assert [len(b.links) for b in batches] == [1, 3]
    queued = {r.context.span_id for r in requests if dict(r.attributes or {})["infc.rows"] == 2}
    assert len(queued) == 3 and {link.context.span_id for link in batches[1].links} == queued
    for request in requests:
        infer = children(spans, request)["infer"][0]
        (batch,) = [b for b in batches if b.context.span_id == infer.links[0].context.span_id]
        assert request.context.span_id in {link.context.span_id for link in batch.links}
        assert dict(request.attributes or {})["infc.batch.rows"] == dict(batch.attributes or {})["infc.batch.rows"]
    assert dict(batches[1].attributes or {})["infc.batch.rows"] == 6


def test_a_refused_request_has_its_status_and_no_batch(pipeline: Pipeline, exporter: InMemorySpanExporter) -> None:
    async def body() -> None:
        async with serving(pipeline, exporter) as client:
            bad = await client.post("/v2/models/toy/infer", json={"inputs": []})
            assert bad.status_code == 400

    run(body)
    spans = list(exporter.get_finished_spans())
    (request,) = requests_of(spans)
    assert dict(request.attributes or {})["http.response.status_code"] == 400
    assert request.parent is None and request.status.status_code == StatusCode.UNSET  # 4xx is the client's
    assert not [s for s in spans if s.name == "batch"] and not children(spans, request)


def test_a_failed_batch_is_an_error_on_the_request_span(bundle: Path, exporter: InMemorySpanExporter) -> None:
    failing = Pipeline.load(bundle)

    def infer(inputs: Tensors, instance: int = 0) -> Tensors:
        raise RuntimeError("the model broke")

    failing.infer = infer  # type: ignore[method-assign]

    async def body() -> None:
        async with serving(failing, exporter, warmup=False) as client:
            response = await client.post("/v2/models/toy/infer", json=json_request(make_request(1)))
            assert response.status_code == 500 and "the model broke" in response.json()["error"]

    run(body)
    spans = list(exporter.get_finished_spans())
    (request,) = requests_of(spans)
    assert dict(request.attributes or {})["http.response.status_code"] == 500
    assert request.status.status_code == StatusCode.ERROR
    stages = set(children(spans, request))
    assert {"decode", "queue", "pre", "infer"} <= stages and "encode" not in stages


def test_a_request_the_caller_did_not_sample_makes_no_span(pipeline: Pipeline,
                                                          exporter: InMemorySpanExporter) -> None:
    async def body() -> None:
        async with serving(pipeline, exporter) as client:
            for flags in ("00", "01"):
                response = await client.post("/v2/models/toy/infer", json=json_request(make_request(1)),
                                             headers={"traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-{flags}"})
                assert response.status_code == 200

    run(body)
    spans = list(exporter.get_finished_spans())  # the default sampler follows the caller's flag
    (request,) = requests_of(spans)
    assert request.context.trace_flags.sampled and len(spans) == 1 + len(STAGES) + 1


@pytest.mark.parametrize(("environ", "on"), [
    ({}, False),
    ({"OTEL_SERVICE_NAME": "x", "OTEL_TRACES_SAMPLER": "always_on"}, False),
    ({"OTEL_TRACES_EXPORTER": "console"}, True),
    ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317"}, False),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317"}, True),
    ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"}, True),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317", "OTEL_SDK_DISABLED": "true"}, False),
])
def test_on_only_when_otel_variables_say_so(environ: dict[str, str], on: bool) -> None:
    assert tracing.configured(environ) is on
    if not on:
        assert tracing.from_environment(environ) is None


def test_an_unknown_exporter_or_protocol_is_an_error_naming_the_variable() -> None:
    with pytest.raises(tracing.TracingError, match="OTEL_TRACES_EXPORTER: no span exporter 'zipkin-x'"):
        tracing.from_environment({"OTEL_TRACES_EXPORTER": "zipkin-x"})
    with pytest.raises(tracing.TracingError, match="OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json'"):
        tracing.from_environment({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"})


def test_without_the_packages_the_error_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry.sdk.trace", None)  # as if not installed
    with pytest.raises(tracing.TracingError, match="pip install opentelemetry-sdk opentelemetry-exporter-otlp"):
        tracing.from_environment({"OTEL_TRACES_EXPORTER": "console"})


def test_configured_by_the_environment_with_the_sdks_names(monkeypatch: pytest.MonkeyPatch) -> None:
    environ = {"OTEL_TRACES_EXPORTER": "console", "OTEL_TRACES_SAMPLER": "traceidratio",
               "OTEL_TRACES_SAMPLER_ARG": "0.25"}
    for key, value in environ.items():
        monkeypatch.setenv(key, value)
    made = tracing.from_environment(environ)
    assert made is not None
    provider = made.provider
    assert provider.resource.attributes["service.name"] == tracing.SERVICE_NAME
    assert "0.25" in provider.sampler.get_description()
    made.provider.shutdown()
    monkeypatch.setenv("OTEL_SERVICE_NAME", "ranker")
    named = tracing.from_environment(environ)
    assert named is not None and named.provider.resource.attributes["service.name"] == "ranker"
    named.provider.shutdown()


def test_off_a_served_request_imports_nothing_of_opentelemetry(bundle: Path) -> None:
    script = f"""
import asyncio, sys
import httpx
from runtime_bundle import make_request
from infc_runtime.serve import _app, _parser
from infc_runtime.protocol import to_datatype

made = _app(_parser().parse_args(["serve", {str(bundle)!r}, "--no-warmup"]))
app = made[0]
body = {{"inputs": [{{"name": k, "shape": list(v.shape), "datatype": to_datatype(v.dtype),
                    "data": v.ravel().tolist()}} for k, v in make_request(2).items()]}}

async def main():
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost") as client:
            assert (await client.post("/v2/models/toy/infer", json=body)).status_code == 200

asyncio.run(main())
print(sorted(m for m in sys.modules if m.startswith("opentelemetry")))
"""
    tests = Path(__file__).parents[2]
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env["PYTHONPATH"] = str(tests)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"
