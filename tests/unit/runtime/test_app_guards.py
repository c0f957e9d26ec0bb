"""The app against hostile requests, in process: browser-simple Content-Types, foreign Host headers, limits,
slow and vanishing clients, non-finite values, and error messages without internal reprs."""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.http as httpclient
from runtime_bundle import INPUTS, OUTPUTS, gated_pipeline, make_request
from starlette.applications import Starlette

from infc_runtime.abi import RequestError
from infc_runtime.app import INLINE_BYTES, create_app
from infc_runtime.metrics import Metrics
from infc_runtime.pipeline import Pipeline, load_kernel_module, make_session
from infc_runtime.protocol import to_datatype
from infc_runtime.types import ServingConfig, Tensors

Message = dict[str, Any]
INFER = "/v2/models/toy/infer"


def toy(bundle: Path, serving: ServingConfig | None = None,
        pre: Callable[[Tensors], Tensors] | None = None) -> Pipeline:
    """The toy bundle's pipeline with other limits, or another pre kernel."""
    return Pipeline(name="toy", version="1", inputs=INPUTS, outputs=OUTPUTS,
                    session=make_session(bundle / "model.onnx"),
                    pre=pre or load_kernel_module(bundle / "kernels" / "pre.py").run,
                    post=load_kernel_module(bundle / "kernels" / "post.py").run, serving=serving)


def passing_pre(tensors: Tensors) -> Tensors:
    """A pre kernel that lets non-finite offsets through to the model."""
    return {"x": tensors["pixels"].astype(np.float32) / 255, "offset": tensors["offset"]}


@asynccontextmanager
async def serving(pipeline: Pipeline, **options: Any) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(pipeline, warmup=False, **options)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
            client.app = app  # type: ignore[attr-defined]
            yield client


def run(body: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(body(), timeout=20))


def doc(tensors: Tensors, **extra: Any) -> dict[str, Any]:
    inputs = [{"name": k, "shape": list(v.shape), "datatype": to_datatype(v.dtype), "data": v.ravel().tolist()}
              for k, v in tensors.items()]
    return {"inputs": inputs, **extra}


def strict_json(content: bytes) -> Any:
    """JSON as strict parsers read it: no NaN or Infinity tokens."""
    def refuse(token: str) -> None:
        raise ValueError(f"not JSON: {token}")

    return json.loads(content, parse_constant=refuse)


async def metric(client: httpx.AsyncClient, sample: str) -> float:
    for line in (await client.get("/metrics")).text.splitlines():
        if line.startswith(sample + " "):
            return float(line.split()[-1])
    return 0.0


# -- browser safety --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content_type", "status"),
    [
        (None, 200),
        ("application/json", 200),
        ("application/json; charset=utf-8", 200),
        ("application/octet-stream", 200),
        ("text/plain", 415),
        ("Text/Plain; charset=UTF-8", 415),
        ("application/x-www-form-urlencoded", 415),
        ("multipart/form-data; boundary=x", 415),
    ],
)
def test_content_types_a_browser_sends_cross_site_are_refused(
        bundle: Path, content_type: str | None, status: int) -> None:
    async def body() -> None:
        async with serving(toy(bundle)) as client:
            headers = {} if content_type is None else {"Content-Type": content_type}
            response = await client.post(INFER, content=json.dumps(doc(make_request(1))), headers=headers)
            assert response.status_code == status, response.text
            if status == 415:
                assert response.json()["error"].startswith(
                    f"Content-Type header: {content_type.split(';')[0].lower()} is not accepted for inference")
                assert response.headers["connection"] == "close"

    run(body)


def test_tritonclient_bodies_without_a_content_type_are_accepted(bundle: Path) -> None:
    request = make_request(2)
    inputs = [httpclient.InferInput(k, list(v.shape), to_datatype(v.dtype)).set_data_from_numpy(v)
              for k, v in request.items()]
    raw, json_size = httpclient.InferenceServerClient.generate_request_body(inputs)

    async def body() -> None:
        async with serving(toy(bundle), allowed_hosts=["localhost"]) as client:
            headers = {"Inference-Header-Content-Length": str(json_size)}
            response = await client.post(INFER, content=raw, headers=headers)
            assert response.status_code == 200

    run(body)


@pytest.mark.parametrize(
    ("allowed", "host", "status"),
    [
        (["localhost", "127.0.0.1", "::1"], "localhost", 200),
        (["localhost", "127.0.0.1", "::1"], "LocalHost:8000", 200),
        (["localhost", "127.0.0.1", "::1"], "127.0.0.1:8000", 200),
        (["localhost", "127.0.0.1", "::1"], "[::1]:8000", 200),
        (["localhost", "127.0.0.1", "::1"], "localhost.:8000", 200),
        (["localhost", "127.0.0.1", "::1"], "evil.example", 421),
        (["localhost", "127.0.0.1", "::1"], "localhost.evil.example:8000", 421),
        (["localhost", "127.0.0.1", "::1"], "127.0.0.1.nip.io", 421),
        (["localhost", "127.0.0.1", "::1"], "", 421),
        (["localhost", "model.internal"], "model.internal:80", 200),
        (None, "evil.example", 200),
    ],
)
def test_a_host_outside_the_allowed_names_is_421(
        bundle: Path, allowed: Sequence[str] | None, host: str, status: int) -> None:
    async def body() -> None:
        async with serving(toy(bundle), allowed_hosts=allowed) as client:
            for method, path in (("POST", INFER), ("GET", "/v2/health/live"), ("GET", "/metrics")):
                content = json.dumps(doc(make_request(1))) if method == "POST" else None
                response = await client.request(method, path, content=content, headers={"Host": host})
                assert response.status_code == status, (path, response.text)
                if status == 421:
                    assert response.json()["error"].startswith(f"Host header: {host!r} is not a name this server")

    run(body)


# -- limits ---------------------------------------------------------------------------------------


def test_limits_answer_413_naming_their_spec_key(bundle: Path) -> None:
    limits = ServingConfig(max_body_bytes=4096, max_decompressed_bytes=8192, max_rows=8, max_elements=40)

    async def body() -> None:
        async with serving(toy(bundle, limits)) as client:
            big = json.dumps(doc(make_request(60))).encode()
            assert len(big) > 4096
            response = await client.post(INFER, content=big)
            assert response.status_code == 413 and response.headers["connection"] == "close"
            assert "serving.max_body_bytes" in response.json()["error"]
            bomb = gzip.compress(json.dumps(doc(make_request(1))).encode()[:-1] + b" " * 100_000 + b"}")
            assert len(bomb) < 4096
            response = await client.post(INFER, content=bomb, headers={"Content-Encoding": "gzip"})
            assert response.status_code == 413 and "serving.max_decompressed_bytes" in response.json()["error"]
            response = await client.post(INFER, content=json.dumps(doc(make_request(9))))
            assert response.status_code == 413 and "(serving.max_rows)" in response.json()["error"]
            response = await client.post(INFER, content=json.dumps(doc(make_request(6))))  # 6 x (4 + 3) = 42
            assert response.status_code == 413 and "(serving.max_elements)" in response.json()["error"]
            assert (await client.post(INFER, content=json.dumps(doc(make_request(5))))).status_code == 200
            assert await metric(client, 'infc_requests_total{model="toy",status="413",version="1"}') == 4

    run(body)


def test_big_bodies_decode_off_the_loop_as_small_ones_do(bundle: Path) -> None:
    request = make_request(1500, seed=3)
    expected = toy(bundle).run(request)

    async def body() -> None:
        async with serving(toy(bundle)) as client:
            content = json.dumps(doc(request)).encode()
            assert len(content) > INLINE_BYTES
            for encoded, headers in ((content, {}), (gzip.compress(content), {"Content-Encoding": "gzip"})):
                response = await client.post(INFER, content=encoded, headers=headers)
                assert response.status_code == 200
                out = {o["name"]: o["data"] for o in response.json()["outputs"]}
                np.testing.assert_array_equal(out["class_id"], expected["class_id"])

    run(body)


# -- slow and vanishing clients -----------------------------------------------------------------


def scope(headers: dict[str, str]) -> dict[str, Any]:
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
            "path": INFER, "raw_path": INFER.encode(), "query_string": b"", "root_path": "",
            "headers": [(k.lower().encode(), v.encode()) for k, v in {"host": "localhost", **headers}.items()],
            "client": ("127.0.0.1", 50000), "server": ("localhost", 80)}


async def call(app: Starlette, messages: list[Message], headers: dict[str, str],
               then: Callable[..., Awaitable[Any]], *args: Any) -> list[Message]:
    """Send `messages` as the request; the next receive waits for `then(*args)` and reports a disconnect."""
    pending = list(messages)
    sent: list[Message] = []

    async def receive() -> Message:
        if pending:
            return pending.pop(0)
        await then(*args)
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope(headers), receive, send)
    return sent


def test_a_stalled_body_is_408_and_closes_the_connection(bundle: Path) -> None:
    async def body() -> None:
        async with serving(toy(bundle), body_timeout_s=0.1) as client:
            app = client.app  # type: ignore[attr-defined]
            stalled = [{"type": "http.request", "body": b"{", "more_body": True}]
            sent = await asyncio.wait_for(call(app, stalled, {"content-length": "1000"}, asyncio.Event().wait), 5)
            start, content = sent[0], sent[1]["body"]
            assert start["status"] == 408 and (b"connection", b"close") in start["headers"]
            assert json.loads(content)["error"].startswith("request body: no data for 0.1 s after 1 bytes")

    run(body)


def test_clients_that_leave_are_counted_apart_and_logged_quietly(
        bundle: Path, caplog: pytest.LogCaptureFixture) -> None:
    gate = threading.Event()
    calls: list[int] = []
    pipeline = gated_pipeline(bundle, ServingConfig(max_batch_size=1, max_queue_delay_ms=0), gate, calls)
    held = make_request(1)
    held["pixels"][0, 0] = 255
    caplog.set_level(logging.DEBUG, logger="infc_runtime")

    async def body() -> None:
        async with serving(pipeline) as client:
            app = client.app  # type: ignore[attr-defined]
            # mid-body: the client goes away after the first chunk
            mid = [{"type": "http.request", "body": b'{"inputs"', "more_body": True}]
            await call(app, mid, {"content-length": "500"}, asyncio.sleep, 0)
            # queued: the worker is busy with a held request; the next client leaves while it waits
            busy = asyncio.ensure_future(client.post(INFER, content=json.dumps(doc(held))))
            while not calls:
                await asyncio.sleep(0.005)
            left = asyncio.Event()
            queued = json.dumps(doc(make_request(2, seed=9))).encode()
            waiting = asyncio.ensure_future(call(app, [{"type": "http.request", "body": queued}], {}, left.wait))
            while await metric(client, 'infc_queue_depth{model="toy",version="1"}') < 1:
                await asyncio.sleep(0.005)
            left.set()
            await waiting
            gate.set()
            assert (await busy).status_code == 200
            assert calls == [1], "the request whose client left never reached the model"
            assert await metric(client, 'infc_client_disconnects_total{model="toy",version="1"}') == 2
            assert await metric(client, 'infc_requests_total{model="toy",status="500",version="1"}') == 0
            assert await metric(client, 'infc_requests_total{model="toy",status="200",version="1"}') == 1

    run(body)
    quiet = [r for r in caplog.records if "disconnected before the answer" in r.getMessage()]
    assert len(quiet) == 2 and all(r.levelno == logging.DEBUG and not r.exc_info for r in quiet)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


# -- non-finite values, and what errors may say ---------------------------------------------------


def test_a_non_finite_model_input_is_400_for_its_request_only(bundle: Path) -> None:
    bad = make_request(3)
    bad["offset"][1, 2] = np.nan

    async def body() -> None:
        async with serving(toy(bundle, ServingConfig(max_queue_delay_ms=50), pre=passing_pre)) as client:
            answers = await asyncio.gather(*(client.post(INFER, content=json.dumps(doc(r)))
                                             for r in (make_request(2), bad, make_request(1))))
            assert [a.status_code for a in answers] == [200, 400, 200]
            assert answers[1].json()["error"].startswith(
                "inputs: row 1: model input 'offset' holds nan at column 2 after pre-processing")

    run(body)


def test_a_non_finite_model_output_is_a_json_error_or_ieee_in_binary(bundle: Path) -> None:
    nan = make_request(1)
    nan["offset"][0, 0] = np.nan
    pipeline = toy(bundle, ServingConfig(allow_non_finite=True), pre=passing_pre)

    async def body() -> None:
        async with serving(pipeline) as client:
            response = await client.post(INFER, content=json.dumps(doc(nan)))
            assert response.status_code == 500
            assert strict_json(response.content)["error"] == (
                "outputs: model output 'probabilities' holds NaN or infinity (row 0), which JSON cannot carry; "
                "ask for it with binary_data=true to get IEEE values")
            binary = doc(nan, outputs=[{"name": "probabilities", "parameters": {"binary_data": True}}])
            response = await client.post(INFER, content=json.dumps(binary))
            assert response.status_code == 200
            length = int(response.headers["Inference-Header-Content-Length"])
            result = httpclient.InferenceServerClient.parse_response_body(response.content, header_length=length)
            assert np.isnan(result.as_numpy("probabilities")).all()

    run(body)


def test_error_messages_carry_no_heap_address(bundle: Path) -> None:
    def leaky(tensors: Tensors) -> Tensors:
        raise RequestError(f"cannot read {object()!r}")

    async def body() -> None:
        async with serving(toy(bundle, pre=leaky)) as client:
            response = await client.post(INFER, content=json.dumps(doc(make_request(1))))
            assert response.status_code == 400
            assert response.json()["error"] == "inputs: cannot read <object>"

    run(body)


def test_the_app_exposes_its_metrics_for_the_serve_command(bundle: Path) -> None:
    async def body() -> None:
        async with serving(toy(bundle)) as client:
            metrics = client.app.state.metrics  # type: ignore[attr-defined]
            assert isinstance(metrics, Metrics)
            assert await metric(client, 'infc_bundle_verified{model="toy",version="1"}') == 0
            metrics.set_bundle_verified(True)
            assert await metric(client, 'infc_bundle_verified{model="toy",version="1"}') == 1

    run(body)
