"""The HTTP app: KServe V2 endpoints, health, metrics, over one pipeline.

| method | path                                                 | answer                          |
|--------|------------------------------------------------------|---------------------------------|
| GET    | /v2/health/live                                      | 200 while the process serves    |
| GET    | /v2/health/ready                                     | 200 once warmed up, else 503    |
| GET    | /v2                                                  | server metadata                 |
| GET    | /v2/models/{name}[/versions/{version}]               | model metadata                  |
| GET    | /v2/models/{name}[/versions/{version}]/ready         | 200 once warmed up, else 503    |
| POST   | /v2/models/{name}[/versions/{version}]/infer         | inference (JSON or binary)      |
| GET    | /metrics                                             | Prometheus text (see `metrics`) |

Every error is JSON `{"error": message}`: 400 bad request (the message names
the field), 404 unknown model or path, 429 queue full (with Retry-After), 503
not ready or shutting down, 504 deadline passed while queued, 500 a failure of
the pipeline itself. Warm-up runs on the worker thread after startup, so the
server answers health checks while it warms up (infer requests queue behind
it; if it fails, they get 503); once it succeeds the heap is settled
(`latency.settle_heap`: collect, `gc.freeze()`, rare gen-0 collections) so
garbage collection on the request path never rescans the warmed-up heap;
shutdown drains the batcher.
"""

from __future__ import annotations

import asyncio
import gzip
import logging
import time
import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from . import __version__
from .batching import Batcher, BatcherClosed, DeadlineExceeded, QueueFull
from .latency import settle_heap
from .metrics import CONTENT_TYPE, Metrics
from .pipeline import Pipeline, RequestError
from .protocol import HEADER_LENGTH, ProtocolError, decode_request, encode_response, tensor_metadata

__all__ = ["SERVER_NAME", "create_app"]

SERVER_NAME = "infc"
EXTENSIONS = ["binary_tensor_data"]

log = logging.getLogger("infc_runtime")


def create_app(pipeline: Pipeline, *, warmup: bool = True) -> Starlette:
    """A Starlette app serving `pipeline` over KServe V2, with health and metrics.

    With `warmup`, `pipeline.warmup()` runs on the worker thread at startup and
    readiness turns 200 when it is done; without it the app is ready at once.
    """
    server = _Server(pipeline, warmup=warmup)
    model = "/v2/models/{name}"
    versioned = "/v2/models/{name}/versions/{version}"
    routes = [
        Route("/v2/health/live", server.live),
        Route("/v2/health/ready", server.ready),
        Route("/v2", server.server_metadata),
        Route(model, server.model_metadata),
        Route(versioned, server.model_metadata),
        Route(model + "/ready", server.model_ready),
        Route(versioned + "/ready", server.model_ready),
        Route(model + "/infer", server.infer, methods=["POST"]),
        Route(versioned + "/infer", server.infer, methods=["POST"]),
        Route("/metrics", server.prometheus),
    ]
    handlers = {HTTPException: _http_error, Exception: _internal_error}
    # handlers take their exception subclass, which the Mapping[Any, Callable[..., Exception]] hint rejects
    return Starlette(routes=routes, lifespan=server.lifespan, exception_handlers=handlers)  # type: ignore[arg-type]


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """The JSON error response every endpoint uses."""
    return JSONResponse({"error": message}, status_code=status, headers=headers)


async def _http_error(request: Request, exc: HTTPException) -> Response:
    return _error(exc.status_code, exc.detail, dict(exc.headers or {}))


async def _internal_error(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return _error(500, f"internal server error: {type(exc).__name__}")


class _Server:
    """The state behind the routes: pipeline, batcher, metrics, readiness."""

    def __init__(self, pipeline: Pipeline, *, warmup: bool) -> None:
        self.pipeline = pipeline
        self.metrics = Metrics(pipeline.name, max_batch_size=pipeline.serving.max_batch_size)
        self.batcher = Batcher(pipeline, self.metrics)
        self.warmup = warmup
        self.is_ready = not warmup
        self.not_ready_reason = "warming up"
        self.broken = False  # warm-up failed: the pipeline cannot serve

    @asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        self.batcher.start()
        warming = asyncio.get_running_loop().create_task(self._warm_up()) if self.warmup else None
        try:
            yield
        finally:
            self.is_ready, self.not_ready_reason = False, "shutting down"
            log.info("draining %d queued request(s)", self.batcher.queued)
            await self.batcher.drain()
            if warming is not None:
                await warming

    async def _warm_up(self) -> None:
        started = time.perf_counter()
        try:
            await self.batcher.run_in_worker(self.pipeline.warmup)
        except Exception as exc:
            self.broken, self.not_ready_reason = True, f"warm-up failed: {exc}"
            log.exception("warm-up of model %r failed; the server stays not ready", self.pipeline.name)
            return
        # long-lived objects (model, kernels, modules) are never rescanned on the request path from here on
        settled = settle_heap()
        self.is_ready = True
        log.info("model %r ready (warm-up took %.2f s; heap settled: %d objects frozen, gc thresholds %s)",
                 self.pipeline.name, time.perf_counter() - started, settled["frozen"], tuple(settled["threshold"]))

    # -- health and metadata ------------------------------------------------
    async def live(self, request: Request) -> Response:
        return JSONResponse({"live": True})

    async def ready(self, request: Request) -> Response:
        return JSONResponse({"ready": True}) if self.is_ready else _error(503, self.not_ready_reason)

    async def server_metadata(self, request: Request) -> Response:
        return JSONResponse({"name": SERVER_NAME, "version": __version__, "extensions": EXTENSIONS})

    async def model_metadata(self, request: Request) -> Response:
        self._check_model(request)
        p = self.pipeline
        return JSONResponse(
            {
                "name": p.name,
                "versions": [p.version],
                "platform": SERVER_NAME,
                "inputs": [tensor_metadata(s) for s in p.inputs],
                "outputs": [tensor_metadata(s) for s in p.outputs],
            }
        )

    async def model_ready(self, request: Request) -> Response:
        self._check_model(request)
        return await self.ready(request)

    async def prometheus(self, request: Request) -> Response:
        return Response(self.metrics.render(), media_type=CONTENT_TYPE)

    def _check_model(self, request: Request) -> None:
        name = request.path_params["name"]
        version = request.path_params.get("version")
        if name != self.pipeline.name:
            raise HTTPException(404, f"unknown model {name!r}; this server serves {self.pipeline.name!r}")
        if version is not None and version != self.pipeline.version:
            raise HTTPException(
                404, f"model {name!r} has no version {version!r}; it serves version {self.pipeline.version!r}"
            )

    # -- inference ---------------------------------------------------------
    async def infer(self, request: Request) -> Response:
        self._check_model(request)
        started = time.perf_counter()
        self.metrics.request_started()
        status = 500
        try:
            response = await self._infer(request)
            status = response.status_code
            return response
        finally:
            self.metrics.request_finished()
            self.metrics.observe_request(status, time.perf_counter() - started)

    async def _infer(self, request: Request) -> Response:
        p = self.pipeline
        if self.broken:  # requests sent while it warms up wait for it instead
            return _error(503, f"model {p.name!r} is not ready: {self.not_ready_reason}")
        try:
            body = _decompress(await request.body(), request.headers.get("content-encoding"))
            req = decode_request(body, p.inputs, p.outputs, header_length=request.headers.get(HEADER_LENGTH))
            result = await self.batcher.submit(req.inputs, timeout_s=req.timeout_s)
            encoded = encode_response(req, result, p.outputs, model_name=p.name, model_version=p.version)
        except ProtocolError as exc:
            return _error(exc.status, exc.message)
        except RequestError as exc:
            return _error(400, f"inputs: {exc}")
        except QueueFull as exc:
            return _error(429, str(exc), {"Retry-After": str(QueueFull.retry_after_s)})
        except DeadlineExceeded as exc:
            return _error(504, str(exc))
        except BatcherClosed as exc:
            return _error(503, str(exc))
        except Exception as exc:
            log.exception("inference failed for model %r", p.name)
            return _error(500, f"inference failed: {type(exc).__name__}: {exc}")
        headers: dict[str, Any] = {}
        if encoded.header_length is not None:
            headers[HEADER_LENGTH] = str(encoded.header_length)
        return Response(encoded.body, media_type=encoded.media_type, headers=headers)


def _decompress(body: bytes, encoding: str | None) -> bytes:
    """The request body without its Content-Encoding (gzip and deflate, as tritonclient sends)."""
    if encoding in (None, "", "identity"):
        return body
    try:
        if encoding == "gzip":
            return gzip.decompress(body)
        if encoding == "deflate":
            return zlib.decompress(body)
    except (OSError, EOFError, zlib.error) as exc:
        raise ProtocolError(400, f"Content-Encoding header: body is not valid {encoding} data ({exc})") from None
    raise ProtocolError(415, f"Content-Encoding header: {encoding!r} is not supported (use gzip or deflate)")
