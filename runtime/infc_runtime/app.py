"""The HTTP app: KServe V2 endpoints, health, metrics, over one pipeline.

| method | path                                                 | answer                          |
|--------|------------------------------------------------------|---------------------------------|
| GET    | /v2/health/live                                      | 200 while the process serves    |
| GET    | /v2/health/ready                                     | 200 once warmed up, else 503    |
| GET    | /v2                                                  | server metadata                 |
| GET    | /v2/models/{name}[/versions/{version}]               | model metadata                  |
| GET    | /v2/models/{name}[/versions/{version}]/ready         | 200 once warmed up, else 503    |
| POST   | /v2/models/{name}[/versions/{version}]/infer         | inference (JSON or binary)      |
| POST   | /v2/models/{name}[/versions/{version}]/infer_stream  | JSON lines in, streamed out     |
| GET    | /v2/models/{name}[/versions/{version}]/drift         | drift indicators (see `drift`)  |
| GET    | /metrics                                             | Prometheus text (see `metrics`) |

Every error is JSON `{"error": message}` naming the field, input or limit at
fault (a limit by its spec key, `serving.max_rows`):

| status | when                                                                           |
|--------|--------------------------------------------------------------------------------|
| 400    | a malformed or inconsistent request; a non-finite model input (per request)    |
| 404    | unknown model, version or path                                                 |
| 408    | a body chunk did not arrive within `body_timeout_s`, or the body trickles in   |
|        | (`_body.MIN_RATE`); the connection closes                                      |
| 413    | over a limit: `serving.max_body_bytes` (from Content-Length, or while          |
|        | streaming), `max_decompressed_bytes`, `max_rows`, `max_elements`, `max_pixels` |
| 415    | Content-Encoding other than gzip/deflate; a Content-Type a browser may send    |
|        | cross-site without asking first (text/plain, form encodings)                   |
| 421    | a Host header not in `allowed_hosts` (when given)                              |
| 429    | queue full (with Retry-After)                                                  |
| 500    | a failure of the pipeline itself; a model output holding NaN or infinity that  |
|        | was asked for as JSON data (JSON cannot carry it: ask for binary data)         |
| 503    | not ready or shutting down; 504 deadline passed while queued                   |

A request is read in chunks (each within `body_timeout_s`) and refused as soon
as it exceeds its limits; decompression, JSON parsing and tensor decoding of
bodies over `INLINE_BYTES` (or compressed) run on a thread, so the event loop
keeps answering `/v2/health/live`. A client that disconnects before its answer
(mid-body, or while its request waits or runs) is counted in
`infc_client_disconnects_total`, logged at DEBUG, and not in
`infc_requests_total`; a queued request whose client left never reaches the
model (the client is watched once its request has waited `WATCH_AFTER_S`, 0.1 s:
a watch per request costs more than most requests wait).

Warm-up runs on the worker thread after startup, so the server answers health
checks while it warms up (infer requests queue behind it; if it fails, they get
503); once it succeeds the heap is settled (`latency.settle_heap`: collect,
`gc.freeze()`, rare gen-0 collections) so garbage collection on the request
path never rescans the warmed-up heap; shutdown drains the batcher.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from . import __version__, _json, cost, metrics
from ._body import decompress, read_body
from .abi import RequestError, RequestTooLarge
from .batching import Batcher, BatcherClosed, DeadlineExceeded, QueueFull
from .cache import ResponseCache
from .latency import settle_heap
from .logs import LOG_SCOPE
from .metrics import Metrics
from .pipeline import Pipeline
from .protocol import HEADER_LENGTH, InferRequest, ProtocolError, decode_request, encode_response, tensor_metadata
from .tracing import RequestTrace, Tracing
from .types import Tensors

__all__ = ["BODY_TIMEOUT_S", "BROWSER_CONTENT_TYPES", "INLINE_BYTES", "SERVER_NAME", "HostCheck", "create_app",
           "drift_answer"]

SERVER_NAME = "infc"
EXTENSIONS = ["binary_tensor_data"]
BODY_TIMEOUT_S = 30.0
"""How long the server waits for each chunk of a request body before answering 408."""
WATCH_AFTER_S = 0.1
"""A request's client is watched for a disconnect once the request has waited this long for its result."""
INLINE_BYTES = 64 << 10
"""Bodies up to this size (not compressed) are decoded on the event loop: a thread costs more than they do."""
BROWSER_CONTENT_TYPES = frozenset({"text/plain", "application/x-www-form-urlencoded", "multipart/form-data"})
"""Media types a web page may POST to another site without a CORS preflight: refused for inference (415)."""

log = logging.getLogger("infc_runtime")

_JSON_TYPE = (b"content-type", b"application/json")
_BINARY_TYPE = (b"content-type", b"application/octet-stream")
_HEADER_LENGTH_KEY = HEADER_LENGTH.lower().encode()
_CLOSE = ((b"connection", b"close"),)


def body_headers(scope: Scope) -> tuple[str | None, str | None, str | None, str | None]:
    """Content-Type, Content-Length, Content-Encoding and the binary extension's header length of an infer
    request (None where absent), in one scan of its headers."""
    content_type = content_length = encoding = header_length = None
    for key, value in scope["headers"]:
        if key == b"content-type":
            content_type = value.decode("latin-1")
        elif key == b"content-length":
            content_length = value.decode("latin-1")
        elif key == b"content-encoding":
            encoding = value.decode("latin-1")
        elif key == _HEADER_LENGTH_KEY:
            header_length = value.decode("latin-1")
    return content_type, content_length, encoding, header_length


MODEL_PATH = "/v2/models/{name}"
VERSIONED_PATH = "/v2/models/{name}/versions/{version}"


def v2_routes(server: Any) -> list[Route]:
    """The KServe V2 health and metadata routes, answered by `server`'s `live`, `ready`, `server_metadata`,
    `model_metadata` and `model_ready` (one model's `_Server`, or the repository's hub)."""
    return [
        Route("/v2/health/live", server.live),
        Route("/v2/health/ready", server.ready),
        Route("/v2", server.server_metadata),
        *(Route(path, server.model_metadata) for path in (MODEL_PATH, VERSIONED_PATH)),
        *(Route(path + "/ready", server.model_ready) for path in (MODEL_PATH, VERSIONED_PATH)),
    ]


def create_app(
    pipeline: Pipeline,
    *,
    warmup: bool = True,
    allowed_hosts: Sequence[str] | None = None,
    body_timeout_s: float = BODY_TIMEOUT_S,
    tracing: Tracing | None = None,
) -> Starlette:
    """A Starlette app serving `pipeline` over KServe V2, with health and metrics.

    With `warmup`, `pipeline.warmup()` runs on the worker thread at startup and
    readiness turns 200 when it is done; without it the app is ready at once.
    With `allowed_hosts` (names or addresses; a port in the Host header is
    ignored), any request whose Host header names another host is answered 421:
    a server bound to loopback is then out of reach of DNS rebinding. Each chunk
    of a request body must arrive within `body_timeout_s` (else 408). With
    `tracing`, every infer request over HTTP is traced (`tracing` module).
    The app's `Metrics` are `app.state.metrics` (the serve command records
    `set_bundle_verified` there).
    """
    server = _Server(pipeline, warmup=warmup, body_timeout_s=body_timeout_s, tracing=tracing)
    routes = [
        *v2_routes(server),
        Route(MODEL_PATH + "/infer", _Endpoint(server.infer_routed), methods=["POST"]),
        Route(VERSIONED_PATH + "/infer", _Endpoint(server.infer_routed), methods=["POST"]),
        *(Route(path + "/infer_stream", _Endpoint(server.infer_stream), methods=["POST"])
          for path in (MODEL_PATH, VERSIONED_PATH)),
        *(Route(path + "/drift", server.drift) for path in (MODEL_PATH, VERSIONED_PATH)),
        Route("/metrics", server.prometheus),
    ]
    handlers = {HTTPException: _http_error, Exception: _internal_error}
    hosts = None if allowed_hosts is None else frozenset(_host_name(h) for h in allowed_hosts)
    app = _App(
        server,
        hosts,
        routes=routes,
        lifespan=server.lifespan,
        exception_handlers=handlers,  # type: ignore[arg-type]  # handlers take their exception subclass
        middleware=[] if hosts is None else [Middleware(HostCheck, allowed_hosts=hosts)],
    )
    app.state.metrics = server.metrics
    app.state.server = server  # what `grpc_server` serves beside HTTP (same pipeline, batcher, metrics)
    return app


class HostCheck:
    """ASGI middleware: 421 for a request whose Host header (port ignored) is not an allowed name."""

    def __init__(self, app: ASGIApp, allowed_hosts: Iterable[str]) -> None:
        self.app = app
        self.allowed = frozenset(_host_name(h) for h in allowed_hosts)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not _host_allowed(scope, self.allowed):
            host = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"host"), "")
            names = ", ".join(sorted(self.allowed))
            response = _error(421, f"Host header: {host[:100]!r} is not a name this server answers to "
                                   f"({names}); start the server with --allow-host to add one",
                              {"Connection": "close"})  # its body, if any, is not read
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


class _App(Starlette):
    """Starlette, where an infer request for the served model goes straight to its raw ASGI handler.

    Starlette's middleware, router and request/response objects took about a
    fifth of the event loop's time per request under load (py-spy, an MLP at
    concurrency 64); the handler answers every error itself. A request from a
    host not allowed, and every other request, goes the usual way.
    """

    def __init__(self, server: _Server, hosts: frozenset[str] | None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.hosts = hosts
        self.infer_server = server
        name, version = server.pipeline.name, server.pipeline.version
        self.infer_paths = frozenset({f"/v2/models/{name}/infer", f"/v2/models/{name}/versions/{version}/infer"})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] == "http" and scope["method"] == "POST" and scope["path"] in self.infer_paths
                and (self.hosts is None or _host_allowed(scope, self.hosts))):
            await self.infer_server.infer(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


class _Endpoint:
    """A raw ASGI route endpoint (Starlette calls a plain function with a request, for a response)."""

    def __init__(self, handler: ASGIApp) -> None:
        self.handler = handler

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.handler(scope, receive, send)


def _host_allowed(scope: Scope, allowed: frozenset[str]) -> bool:
    """Whether the Host header of `scope` names one of the `allowed` hosts."""
    host = next((v for k, v in scope["headers"] if k == b"host"), b"")
    return _host_name(host.decode("latin-1")) in allowed


def _host_name(host: str) -> str:
    """The name in a Host header without its port, lower case (`[::1]:8000` -> `::1`)."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    name, colon, port = host.rpartition(":")
    return name.rstrip(".") if colon and port.isdigit() and ":" not in name else host.rstrip(".")


_HEAP_REPR = re.compile(r"<[^<>]*? at 0x[0-9a-fA-F]+>")


def _error_body(message: str) -> bytes:
    """`{"error": message}` as JSON, never with an object's repr or heap address."""
    return _json.dumps({"error": _HEAP_REPR.sub("<object>", message)})


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    """The JSON error response every endpoint but infer uses."""
    return Response(_error_body(message), status_code=status, headers=headers, media_type="application/json")


def _error_answer(status: int, message: str, headers: Sequence[tuple[bytes, bytes]] = ()
                  ) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
    """The same error as status, body and raw headers, for the infer handler."""
    body = _error_body(message)
    return status, body, [(b"content-length", str(len(body)).encode()), _JSON_TYPE, *headers]


async def _http_error(request: Request, exc: HTTPException) -> Response:
    return _error(exc.status_code, exc.detail, dict(exc.headers or {}))


async def _internal_error(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return _error(500, f"internal server error: {type(exc).__name__}")


def response_cache(pipeline: Pipeline) -> ResponseCache | None:
    """The response cache `pipeline`'s serving settings ask for (None: off), keyed to its bundle's identity."""
    config = pipeline.serving.cache
    if config is None:
        return None
    manifest = pipeline.manifest
    return ResponseCache(config, manifest.content_hash if manifest else f"{pipeline.name}:{pipeline.version}")


class _Server:
    """The state behind the routes: pipeline, batcher, metrics, readiness."""

    def __init__(self, pipeline: Pipeline, *, warmup: bool, body_timeout_s: float,
                 tracing: Tracing | None = None) -> None:
        self.pipeline = pipeline
        self.body_timeout_s = body_timeout_s
        self.metrics = Metrics(pipeline.name, version=pipeline.version, max_batch_size=pipeline.serving.max_batch_size)
        self.metrics.set_providers(pipeline.providers, cpu_fallback=bool(pipeline.cpu_fallback))
        self.metrics.drift = pipeline.drift
        self.tracing = tracing  # None: off, and no per-request work for it
        self.batcher = Batcher(pipeline, self.metrics, tracing=tracing)
        self.cache = response_cache(pipeline)  # None: off (serving.cache)
        self.metrics.watch(cache=self.cache, price=cost.live_price(pipeline))
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
            if self.tracing is not None:
                await asyncio.to_thread(self.tracing.flush)

    async def _warm_up(self) -> None:
        started = time.perf_counter()
        try:
            await self.batcher.warm_up()
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
                # a `$parameters` object, as requests and responses carry (MLServer's model metadata has one too):
                # V2 clients read the keys they know and pass the rest through
                "parameters": {"execution_providers": list(p.providers), "cpu_fallback": bool(p.cpu_fallback)},
            }
        )

    async def model_ready(self, request: Request) -> Response:
        self._check_model(request)
        return await self.ready(request)

    async def prometheus(self, request: Request) -> Response:
        return Response(self.metrics.render(), media_type=metrics.content_type())

    async def drift(self, request: Request) -> Response:
        self._check_model(request)
        return drift_answer(self)

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
    async def infer_routed(self, scope: Scope, receive: Receive, send: Send) -> None:
        """An infer request the app did not send straight to `infer`: 404 unless it names the served model."""
        try:
            self._check_model(Request(scope))
        except HTTPException as exc:
            await _error(exc.status_code, exc.detail)(scope, receive, send)
            return
        await self.infer(scope, receive, send)

    async def infer_stream(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Newline-delimited requests in, results streamed back as they finish (`infc_runtime.stream`)."""
        from .stream import serve_stream

        try:
            self._check_model(Request(scope))
        except HTTPException as exc:
            await _error(exc.status_code, exc.detail)(scope, receive, send)
            return
        await serve_stream(self, scope, receive, send, reject=_error)

    async def infer(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer one infer request (raw ASGI: no request or response objects on this path)."""
        try:
            answer = await self._counted(scope, receive)
        except Exception as exc:  # a bug outside the request's own handling: the same 500 as through the app
            log.exception("unhandled error on POST %s", scope["path"])
            answer = _error_answer(500, f"internal server error: {type(exc).__name__}")
        if answer is None:
            return  # the client is gone: nothing to send
        status, body, headers = answer
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _counted(self, scope: Scope, receive: Receive) -> tuple[int, bytes, list[tuple[bytes, bytes]]] | None:
        """`_infer`'s answer, counted in the metrics; None when the client left first."""
        started = time.perf_counter()
        self.metrics.request_started()
        status: int | None = 500
        trace = None if self.tracing is None else self.tracing.request(scope, self.pipeline.name,
                                                                        self.pipeline.version)
        try:
            answer = await self._infer(scope, receive, trace)
            status = answer[0]
            return answer
        except ClientDisconnect:
            status = None  # nobody to answer: counted apart, not as a status
            self.metrics.client_disconnected()
            client = scope.get("client")
            log.debug("client %s disconnected before the answer to %s", f"{client[0]}:{client[1]}" if client else "?",
                      scope["path"])
            return None
        finally:
            self.metrics.request_finished()
            if status is not None:
                self.metrics.observe_request(status, time.perf_counter() - started)
            if trace is not None:
                trace.finish(status)

    async def _infer(self, scope: Scope, receive: Receive, trace: RequestTrace | None = None
                     ) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        """Status, body and headers of the answer to one infer request (marking its `trace`'s stages)."""
        p = self.pipeline
        if self.broken:  # requests sent while it warms up wait for it instead
            return _error_answer(503, f"model {p.name!r} is not ready: {self.not_ready_reason}")
        content_type, content_length, encoding, header_length = body_headers(scope)
        info = scope.get(LOG_SCOPE)  # a request log's record (`logs.RequestLog`), when one is kept
        try:
            _check_content_type(content_type)
            body = await read_body(receive, content_length, max_bytes=p.serving.max_body_bytes,
                                   timeout_s=self.body_timeout_s)
            decoding = time.perf_counter()
            req = await self._decode(body, encoding, header_length)
            if trace is not None:
                trace.mark_decoded(req.rows)
            if info is not None:
                info.update(id=req.id, model=p.name, version=p.version, rows=req.rows)
                info.setdefault("stages", {})["decode"] = time.perf_counter() - decoding
            result = await self._cached(req, receive, info, trace)
            if trace is not None:
                trace.mark_encoding()
            encoding_at = time.perf_counter()
            encoded = await self._encode(req, result)
            if info is not None:
                info["stages"]["encode"] = time.perf_counter() - encoding_at
        except ProtocolError as exc:
            if exc.status >= 500:
                log.warning("model %r: %s", p.name, exc.message)
            return _error_answer(exc.status, exc.message, _CLOSE if exc.close else ())
        except RequestTooLarge as exc:
            return _error_answer(413, f"inputs: {exc}")
        except RequestError as exc:
            return _error_answer(400, f"inputs: {exc}")
        except QueueFull as exc:
            return _error_answer(429, str(exc), ((b"retry-after", str(QueueFull.retry_after_s).encode()),))
        except DeadlineExceeded as exc:
            return _error_answer(504, str(exc))
        except BatcherClosed as exc:
            return _error_answer(503, str(exc))
        except ClientDisconnect:
            raise
        except Exception as exc:
            log.exception("inference failed for model %r", p.name)
            return _error_answer(500, f"inference failed: {type(exc).__name__}: {exc}")
        headers = [(b"content-length", str(len(encoded.body)).encode()),
                   _JSON_TYPE if encoded.header_length is None else _BINARY_TYPE]
        if encoded.header_length is not None:
            headers.append((_HEADER_LENGTH_KEY, str(encoded.header_length).encode()))
        return 200, encoded.body, headers

    async def _cached(self, req: InferRequest, receive: Receive, info: dict[str, Any] | None,
                      trace: RequestTrace | None) -> Tensors:
        """The result of `req`: from the response cache when it holds it (no queue, no model), else from the
        batcher (and kept there)."""
        cache = self.cache
        if cache is None:
            return await self._result(self.batcher.enqueue(req.inputs, timeout_s=req.timeout_s, info=info,
                                                           trace=trace), receive)
        started = time.perf_counter()
        large = sum(a.nbytes for a in req.inputs.values()) > INLINE_BYTES
        key = await asyncio.to_thread(cache.key, req.inputs) if large else cache.key(req.inputs)
        result = cache.get(key, started)
        if result is None:
            result = await self._result(self.batcher.enqueue(req.inputs, timeout_s=req.timeout_s, info=info,
                                                             trace=trace), receive)
            cache.put(key, result)
        return result

    async def _result(self, future: asyncio.Future[Tensors], receive: Receive) -> Tensors:
        """The batcher's answer in `future`; `ClientDisconnect` if the client leaves while it waits.

        The client is watched only once the request has waited `WATCH_AFTER_S`
        (a task per request costs more than most requests wait); a request whose
        client left is withdrawn: still queued, it never reaches the model.
        """
        watch = _Watch(future, receive)
        timer = asyncio.get_running_loop().call_later(WATCH_AFTER_S, watch.start)
        try:
            return await future  # cancelled with the handler (the server stops): so is the request
        except asyncio.CancelledError:
            if watch.gone:
                raise ClientDisconnect() from None
            raise
        finally:
            timer.cancel()
            watch.stop()

    async def _decode(self, body: bytearray, encoding: str | None, header_length: str | None) -> InferRequest:
        """The request in `body`: decompressed and decoded against the limits, off the loop unless small."""
        p = self.pipeline

        def decode() -> InferRequest:
            raw = decompress(body, encoding, max_bytes=p.serving.max_decompressed_bytes)
            return decode_request(raw, p.inputs, p.outputs, header_length=header_length, limits=p.serving)

        if len(body) <= INLINE_BYTES and (encoding or "identity").strip().lower() == "identity":
            return decode()
        return await asyncio.to_thread(decode)

    async def _encode(self, req: InferRequest, result: Tensors) -> Any:
        p = self.pipeline

        def encode() -> Any:
            return encode_response(req, result, p.outputs, model_name=p.name, model_version=p.version)

        if sum(a.size for a in result.values()) <= INLINE_BYTES // 8:
            return encode()
        return await asyncio.to_thread(encode)


class _Watch:
    """Watches a request's client while its result is awaited; withdraws the request when the client leaves."""

    __slots__ = ("future", "gone", "receive", "task")

    def __init__(self, future: asyncio.Future[Tensors], receive: Receive) -> None:
        self.future, self.receive = future, receive
        self.task: asyncio.Task[None] | None = None
        self.gone = False

    def start(self) -> None:
        self.task = asyncio.ensure_future(self._disconnected())
        self.task.add_done_callback(self._done)

    def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()

    async def _disconnected(self) -> None:
        """Returns when the client (whose body was read) disconnects."""
        while (await self.receive())["type"] != "http.disconnect":
            pass

    def _done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        task.exception()  # seen: asyncio logs exceptions nobody retrieved; the client is gone either way
        if not self.future.done():
            self.gone = True
            self.future.cancel()


def drift_answer(server: _Server) -> Response:
    """The drift indicators of `server`'s model (`DriftMonitor.report`), or 404 when its bundle has no reference."""
    p = server.pipeline
    if p.drift is None:
        return _error(404, f"model {p.name!r} version {p.version!r} has no drift indicators: its bundle carries no "
                           "monitor/reference.json (the spec's monitor section is off, or it has no data)")
    return Response(_json.dumps(p.drift.report()), media_type="application/json")


def _check_content_type(value: str | None) -> None:
    """415 for the media types a web page may send cross-site without a preflight (none, JSON, binary are fine)."""
    media = (value or "").split(";", 1)[0].strip().lower()
    if media in BROWSER_CONTENT_TYPES:
        raise ProtocolError(415, f"Content-Type header: {media} is not accepted for inference (a web page on "
                                 "another site could send it); send application/json, application/octet-stream "
                                 "or no Content-Type", close=True)

