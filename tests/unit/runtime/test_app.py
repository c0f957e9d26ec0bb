"""The Starlette app in process: routes, error mapping, readiness and drain on shutdown."""

from __future__ import annotations

import asyncio
import gzip
import json
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.http as httpclient
from runtime_bundle import INPUTS, OUTPUTS, gated_pipeline, make_request

from infc_runtime.app import create_app
from infc_runtime.pipeline import Pipeline, load_kernel_module, make_session
from infc_runtime.protocol import to_datatype
from infc_runtime.types import ServingConfig, Tensors


@pytest.fixture(scope="module")
def pipeline(bundle: Path) -> Pipeline:
    return Pipeline.load(bundle)


@asynccontextmanager
async def serving(pipeline: Pipeline, *, warmup: bool = True) -> AsyncIterator[httpx.AsyncClient]:
    """The app with its lifespan running, and a client talking to it in process."""
    app = create_app(pipeline, warmup=warmup)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://infc") as client:
            yield client


def run(body: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(body(), timeout=20))


def json_request(tensors: Tensors, **extra: Any) -> dict[str, Any]:
    inputs = [
        {"name": k, "shape": list(v.shape), "datatype": to_datatype(v.dtype), "data": v.ravel().tolist()}
        for k, v in tensors.items()
    ]
    return {"inputs": inputs, **extra}


async def wait_ready(client: httpx.AsyncClient) -> None:
    while (await client.get("/v2/health/ready")).status_code != 200:
        await asyncio.sleep(0.01)


def test_metadata_and_health(pipeline: Pipeline) -> None:
    async def body() -> None:
        async with serving(pipeline) as client:
            await wait_ready(client)
            assert (await client.get("/v2/health/live")).status_code == 200
            server = (await client.get("/v2")).json()
            assert server["name"] == "infc" and "binary_tensor_data" in server["extensions"]
            for path in ("/v2/models/toy", "/v2/models/toy/versions/1"):
                meta = (await client.get(path)).json()
                assert meta["name"] == "toy" and meta["versions"] == ["1"]
                assert meta["inputs"] == [
                    {"name": "pixels", "datatype": "UINT8", "shape": [-1, 4]},
                    {"name": "offset", "datatype": "FP32", "shape": [-1, 3]},
                ]
                assert [o["datatype"] for o in meta["outputs"]] == ["FP32", "INT64", "BYTES"]
            assert (await client.get("/v2/models/toy/ready")).status_code == 200
            assert (await client.get("/v2/models/toy/versions/1/ready")).status_code == 200

    run(body)


@pytest.mark.parametrize(
    ("method", "path", "status", "message"),
    [
        ("GET", "/v2/models/nope", 404, "unknown model 'nope'"),
        ("POST", "/v2/models/nope/infer", 404, "unknown model 'nope'"),
        ("GET", "/v2/models/toy/versions/2", 404, "model 'toy' has no version '2'"),
        ("GET", "/v2/models/toy/versions/2/ready", 404, "model 'toy' has no version '2'"),
        ("GET", "/v3", 404, "Not Found"),
        ("GET", "/v2/models/toy/infer", 405, "Method Not Allowed"),
    ],
)
def test_unknown_routes_answer_json_errors(
    pipeline: Pipeline, method: str, path: str, status: int, message: str
) -> None:
    async def body() -> None:
        async with serving(pipeline, warmup=False) as client:
            response = await client.request(method, path, content=b"{}")
            assert response.status_code == status
            assert message in response.json()["error"]

    run(body)


def test_infer_json_and_binary(pipeline: Pipeline) -> None:
    request = make_request(3, seed=1)
    expected = pipeline.run(request)

    async def body() -> None:
        async with serving(pipeline, warmup=False) as client:
            doc = json_request(request, id="req-1")
            response = await client.post("/v2/models/toy/versions/1/infer", json=doc)
            assert response.status_code == 200 and response.headers["content-type"] == "application/json"
            out = {o["name"]: o for o in response.json()["outputs"]}
            assert response.json()["id"] == "req-1"
            np.testing.assert_allclose(np.array(out["probabilities"]["data"]).reshape(3, 3), expected["probabilities"])
            assert out["label"]["data"] == [b.decode() for b in expected["label"]]

            inputs = [
                httpclient.InferInput(k, list(v.shape), to_datatype(v.dtype)).set_data_from_numpy(v)
                for k, v in request.items()
            ]
            raw, json_size = httpclient.InferenceServerClient.generate_request_body(inputs)
            headers = {"Inference-Header-Content-Length": str(json_size)}
            response = await client.post("/v2/models/toy/infer", content=raw, headers=headers)
            assert response.status_code == 200
            length = int(response.headers["Inference-Header-Content-Length"])
            result = httpclient.InferenceServerClient.parse_response_body(response.content, header_length=length)
            np.testing.assert_array_equal(result.as_numpy("probabilities"), expected["probabilities"])
            assert result.as_numpy("label").tolist() == expected["label"].tolist()

            gz = await client.post(
                "/v2/models/toy/infer",
                content=gzip.compress(json.dumps(doc).encode()),
                headers={"Content-Encoding": "gzip"},
            )
            assert gz.status_code == 200 and gz.json()["outputs"] == response_json_outputs(doc, pipeline)

    run(body)


def response_json_outputs(doc: dict[str, Any], pipeline: Pipeline) -> list[dict[str, Any]]:
    """What the JSON response's outputs are for `doc`, computed in process."""
    tensors = {i["name"]: np.array(i["data"]).reshape(i["shape"]) for i in doc["inputs"]}
    tensors["pixels"] = tensors["pixels"].astype(np.uint8)
    tensors["offset"] = tensors["offset"].astype(np.float32)
    out = pipeline.run(tensors)
    return [
        {
            "name": s.name,
            "datatype": to_datatype(s.dtype),
            "shape": list(out[s.name].shape),
            "data": [b.decode() for b in out[s.name]] if s.dtype == "bytes" else out[s.name].ravel().tolist(),
        }
        for s in OUTPUTS
    ]


@pytest.mark.parametrize(
    ("content", "headers", "status", "message"),
    [
        (b"{oops", {}, 400, "request body: malformed JSON"),
        (b"not gzip", {"Content-Encoding": "gzip"}, 400, "Content-Encoding header: body is not valid gzip"),
        (b"{}", {"Content-Encoding": "br"}, 415, "Content-Encoding header: 'br' is not supported"),
        (b"{}", {"Inference-Header-Content-Length": "x"}, 400, "Inference-Header-Content-Length header"),
    ],
)
def test_bad_bodies_are_4xx_and_the_app_keeps_serving(
    pipeline: Pipeline, content: bytes, headers: dict[str, str], status: int, message: str
) -> None:
    async def body() -> None:
        async with serving(pipeline, warmup=False) as client:
            response = await client.post("/v2/models/toy/infer", content=content, headers=headers)
            assert response.status_code == status and response.json()["error"].startswith(message)
            ok = await client.post("/v2/models/toy/infer", json=json_request(make_request(1)))
            assert ok.status_code == 200

    run(body)


def test_request_error_from_the_kernel_is_400_and_counted(pipeline: Pipeline) -> None:
    bad = make_request(2)
    bad["offset"][1, 0] = np.inf

    async def body() -> None:
        async with serving(pipeline, warmup=False) as client:
            # Python's json writes (and reads) Infinity, which strict JSON lacks
            response = await client.post("/v2/models/toy/infer", content=json.dumps(json_request(bad)))
            assert response.status_code == 400 and "offset must be finite" in response.json()["error"]
            metrics = (await client.get("/metrics")).text
            assert 'infc_requests_total{model="toy",status="400",version="1"} 1.0' in metrics

    run(body)


def test_pipeline_failure_is_500_json(bundle: Path) -> None:
    broken = Pipeline(
        name="toy",
        version="1",
        inputs=INPUTS,
        outputs=OUTPUTS,
        session=make_session(bundle / "model.onnx"),
        pre=load_kernel_module(bundle / "kernels" / "pre.py").run,
        post=lambda tensors: {},  # forgets every output
    )

    async def body() -> None:
        async with serving(broken, warmup=False) as client:
            response = await client.post("/v2/models/toy/infer", json=json_request(make_request(1)))
            assert response.status_code == 500 and "inference failed: KeyError" in response.json()["error"]
            assert (await client.get("/v2/health/live")).status_code == 200

    run(body)


def test_full_queue_is_429_and_late_requests_504(bundle: Path) -> None:
    gate = threading.Event()
    calls: list[int] = []
    config = ServingConfig(max_batch_size=1, max_queue_delay_ms=0, max_queue=1, timeout_ms=5000)
    gated = gated_pipeline(bundle, config, gate, calls)
    held = make_request(1)
    held["pixels"][0, 0] = 255

    async def body() -> None:
        async with serving(gated, warmup=False) as client:
            busy = asyncio.ensure_future(client.post("/v2/models/toy/infer", json=json_request(held)))
            while not calls:
                await asyncio.sleep(0.005)
            late = json_request(make_request(1), parameters={"timeout": 30_000})  # 30 ms, in microseconds
            response = await client.post("/v2/models/toy/infer", json=late)
            assert response.status_code == 504 and "30 ms" in response.json()["error"]
            queued = asyncio.ensure_future(client.post("/v2/models/toy/infer", json=json_request(make_request(1))))
            await asyncio.sleep(0.02)
            full = await client.post("/v2/models/toy/infer", json=json_request(make_request(1)))
            assert full.status_code == 429 and full.headers["Retry-After"] == "1"
            assert "queue is full" in full.json()["error"]
            gate.set()
            assert (await busy).status_code == 200 and (await queued).status_code == 200

    run(body)


def test_ready_only_after_warm_up(bundle: Path) -> None:
    gate = threading.Event()
    config = ServingConfig(max_batch_size=2)
    slow = gated_pipeline(bundle, config, gate, hold=lambda tensors: True)

    async def body() -> None:
        async with serving(slow) as client:
            assert (await client.get("/v2/health/live")).status_code == 200
            response = await client.get("/v2/health/ready")
            assert response.status_code == 503 and response.json() == {"error": "warming up"}
            assert (await client.get("/v2/models/toy/ready")).status_code == 503
            gate.set()
            await wait_ready(client)

    run(body)


def test_failed_warm_up_keeps_the_server_not_ready(bundle: Path) -> None:
    def failing_pre(tensors: Tensors) -> Tensors:
        raise ValueError("kernel is broken")

    broken = Pipeline(
        name="toy",
        version="1",
        inputs=INPUTS,
        outputs=OUTPUTS,
        session=make_session(bundle / "model.onnx"),
        pre=failing_pre,
        post=load_kernel_module(bundle / "kernels" / "post.py").run,
    )

    async def body() -> None:
        async with serving(broken) as client:
            for _ in range(100):
                response = await client.get("/v2/health/ready")
                if "failed" in response.json()["error"]:
                    break
                await asyncio.sleep(0.01)
            assert response.status_code == 503
            assert response.json()["error"] == "warm-up failed: kernel is broken"
            infer = await client.post("/v2/models/toy/infer", json=json_request(make_request(1)))
            assert infer.status_code == 503 and "not ready: warm-up failed" in infer.json()["error"]

    run(body)


def test_shutdown_drains_queued_requests(bundle: Path) -> None:
    slow_batches = ServingConfig(max_batch_size=64, max_queue_delay_ms=10_000)
    pipeline = gated_pipeline(bundle, slow_batches, threading.Event())

    async def body() -> None:
        app = create_app(pipeline, warmup=False)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://infc") as client:
            async with app.router.lifespan_context(app):
                pending = [
                    asyncio.ensure_future(
                        client.post("/v2/models/toy/infer", json=json_request(make_request(1, seed=i)))
                    )
                    for i in range(3)
                ]
                while 'infc_queue_depth{model="toy",version="1"} 3.0' not in (await client.get("/metrics")).text:
                    await asyncio.sleep(0.01)
            # the lifespan has ended: every queued request was answered, long before the 10 s delay
            assert [p.done() for p in pending] == [True] * 3
            assert [(await p).status_code for p in pending] == [200] * 3

    run(body)


def test_infer_goes_straight_to_its_handler_and_other_routes_through_the_router(
    pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def body() -> None:
        async with serving(pipeline, warmup=False) as client:
            versioned = await client.post("/v2/models/toy/versions/1/infer", json=json_request(make_request(1)))
            assert versioned.status_code == 200
            wrong = await client.post("/v2/models/toy/versions/2/infer", json=json_request(make_request(1)))
            assert wrong.status_code == 404 and "has no version '2'" in wrong.json()["error"]
            other = await client.post("/v2/models/other/infer", json=json_request(make_request(1)))
            assert other.status_code == 404 and "unknown model 'other'" in other.json()["error"]

            def broken() -> None:
                raise RuntimeError("a bug")

            monkeypatch.setattr(client._transport.app.state.metrics, "request_started", broken)  # type: ignore[attr-defined]
            failed = await client.post("/v2/models/toy/infer", json=json_request(make_request(1)))
            assert failed.status_code == 500
            assert failed.json() == {"error": "internal server error: RuntimeError"}

    run(body)
