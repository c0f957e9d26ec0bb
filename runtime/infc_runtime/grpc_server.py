"""KServe V2 over gRPC (`inference.GRPCInferenceService`, grpcio's asyncio server), beside the HTTP app.

`serve --grpc-port PORT` starts it on the HTTP server's event loop and bind
host, serving the HTTP app's own pipeline, batcher, limits and metrics
(`attach`); without `--grpc-port` nothing imports this module, grpc or protobuf.
Clients such as `tritonclient.grpc` work unmodified: ServerLive, ServerReady,
ModelReady, ServerMetadata, ModelMetadata and ModelInfer, with the input data
in `raw_input_contents` (one entry per input, little-endian; a BYTES element is
a 4-byte length and its bytes) or in each input's typed `contents`. Outputs
are always returned in `raw_output_contents`.

Limits are those of HTTP: a message over `serving.max_body_bytes` is refused by
grpc (`grpc.max_receive_message_length`); every declared shape is checked
against the data received, then against `serving.max_rows` and
`serving.max_elements`, before any array is made for it. Errors name the field
at fault (`inputs[0].shape: ...`, `raw_input_contents[1]: ...`), as over HTTP:

| gRPC status          | HTTP | when                                                              |
|----------------------|------|-------------------------------------------------------------------|
| INVALID_ARGUMENT     | 400  | a malformed or inconsistent request; a non-finite model input     |
| NOT_FOUND            | 404  | unknown model or version                                          |
| RESOURCE_EXHAUSTED   | 413  | over `max_body_bytes` (grpc's own message), `max_rows`,           |
|                      | 429  | `max_elements`, `max_pixels`; the queue is full                   |
| UNAVAILABLE          | 503  | warm-up failed, or shutting down                                  |
| DEADLINE_EXCEEDED    | 504  | still queued at its deadline (the call's deadline, the `timeout`  |
|                      |      | parameter in microseconds, or `serving.timeout_ms`)               |
| INTERNAL             | 500  | a failure of the pipeline itself                                  |

ServerReady and ModelReady answer `ready: false` (status OK) while warming up
or shutting down. Metrics are the HTTP app's: an answered call counts in
`infc_requests_total` under the HTTP status of the table (200 for OK); a call
its client cancelled counts in `infc_client_disconnects_total`.

On shutdown the gRPC server stops after HTTP has drained and before the
batcher drains: new calls are refused (UNAVAILABLE), calls in progress are
answered (they wait only on the batcher), within at most `SHUTDOWN_TIMEOUT_S`.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import os
import re
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import grpc
import numpy as np

from . import __version__
from . import grpc_predict_v2_pb2 as pb
from . import grpc_predict_v2_pb2_grpc as pb_grpc
from ._tensors import ProtocolError, bytes_from_binary, bytes_to_binary, numpy_for_datatype, to_datatype
from .abi import RequestError, RequestTooLarge
from .app import EXTENSIONS, INLINE_BYTES, SERVER_NAME
from .audit import AuditLog, utc_now
from .auth import Auth
from .batching import BatcherClosed, DeadlineExceeded, QueueFull
from .http_server import SHUTDOWN_TIMEOUT_S
from .logs import request_id, requests_log
from .tracing import RequestTrace
from .types import ServingConfig, Tensors, TensorSpec

__all__ = ["CODES", "InferenceService", "attach", "decode_inputs", "start"]

CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    404: grpc.StatusCode.NOT_FOUND,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    500: grpc.StatusCode.INTERNAL,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}
"""The gRPC status for each HTTP status the app answers for the same mistake."""

_CONTENTS = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
"""The `InferTensorContents` field for each datatype (FP16 has none: it travels raw)."""

_HEAP_REPR = re.compile(r"<[^<>]*? at 0x[0-9a-fA-F]+>")

log = logging.getLogger("infc_runtime")


def attach(app: Any, *, host: str, port: int, auth: Auth | None = None, audit: AuditLog | None = None,
           log_level: int | None = None) -> Callable[[], None]:
    """Serve `app`'s model over gRPC on `host:port` for as long as the app runs (wraps its lifespan).

    The gRPC server starts once the app has started (batcher running, warm-up
    under way) and is stopped before the app drains its batcher. Returns
    `begin_stop`: called when the HTTP server's shutdown begins (SIGTERM), the
    gRPC server stops taking calls at the same moment, answering those in
    progress, instead of taking new ones until HTTP has drained. With `auth`
    (the HTTP app's key check), every call but ServerLive and ServerReady (when
    HTTP leaves liveness and readiness open) needs `authorization: Bearer KEY`
    metadata: UNAUTHENTICATED without it, PERMISSION_DENIED with a wrong key.
    With `audit`, every call is a line of the audit log, as an HTTP request is
    (`method` "gRPC", `path` the call's full method name, `status` its gRPC code);
    with `log_level`, each call is a line of the JSON request log at that level
    (`logs.requests_log`; the request id from `x-request-id` metadata, else
    made; no rows, batch or stage times, which HTTP's lines carry).
    """
    inner = app.router.lifespan_context
    endpoint = _Endpoint()

    @asynccontextmanager
    async def lifespan(app_: Any) -> AsyncIterator[Any]:
        async with inner(app_) as state:
            endpoint.server = await start(app.state.server, host=host, port=port, auth=auth, audit=audit,
                                          log_level=log_level)
            try:
                yield state
            finally:
                endpoint.begin_stop()
                await endpoint.stopped()

    app.router.lifespan_context = lifespan
    return endpoint.begin_stop


class _Endpoint:
    """The running gRPC server and its stop, begun once."""

    def __init__(self) -> None:
        self.server: grpc.aio.Server | None = None
        self.stopping: asyncio.Future[None] | None = None

    def begin_stop(self) -> None:
        """Stop taking calls now; calls in progress are answered (within the shutdown timeout)."""
        if self.server is not None and self.stopping is None:
            log.info("gRPC: stopping (calls in progress are answered)")
            self.stopping = asyncio.ensure_future(self.server.stop(SHUTDOWN_TIMEOUT_S))

    async def stopped(self) -> None:
        if self.stopping is not None:
            await self.stopping


async def start(state: Any, *, host: str, port: int, auth: Auth | None = None, audit: AuditLog | None = None,
                log_level: int | None = None) -> grpc.aio.Server:
    """A started gRPC server on `host:port` for the app's state (`app.state.server`); OSError if it cannot bind."""
    options = [
        ("grpc.max_receive_message_length", state.pipeline.serving.max_body_bytes),
        ("grpc.so_reuseport", 0),  # a port in use is an error, as for HTTP, not silently shared
    ]
    guard = [] if auth is None and audit is None and log_level is None else [_Guard(auth, audit, log_level)]
    server = grpc.aio.server(options=options, interceptors=guard)
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceService(state), server)  # type: ignore[no-untyped-call]
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError as exc:
        bound, reason = 0, str(exc)
    else:
        reason = "in use?"
    if not bound:
        log.error("gRPC: cannot listen on %s (%s)", address, reason)
        raise OSError(f"gRPC: cannot listen on {address} ({reason})")
    await server.start()
    log.info("gRPC (KServe V2) serving on %s", address)
    return server


class _Guard(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """For gRPC calls: the API key check of `auth.Auth` (the key in the `authorization` metadata), when keys are
    configured, and a line of the audit log and of the JSON request log per call, when they are kept."""

    def __init__(self, auth: Auth | None, audit: AuditLog | None, log_level: int | None = None) -> None:
        self.auth, self.audit, self.log_level = auth, audit, log_level
        self._made = itertools.count()
        health = {"/v2/health/live": "ServerLive", "/v2/health/ready": "ServerReady"}
        self.open = frozenset(f"/inference.GRPCInferenceService/{health[p]}"
                              for p in (auth.open_paths if auth is not None else ()) if p in health)

    async def intercept_service(self, continuation: Any, details: Any) -> Any:
        key_id, refused = self._check(details)
        handler = refused[0] if refused is not None else await continuation(details)
        if (self.audit is None and self.log_level is None) or handler is None or handler.unary_unary is None:
            return handler
        given = next((v for k, v in details.invocation_metadata or () if k == "x-request-id"), None)
        rid = request_id(given) or f"grpc-{os.getpid():x}-{next(self._made):08x}"
        return self._recorded(handler, details.method, key_id, None if refused is None else refused[1], rid)

    def _check(self, details: Any) -> tuple[str | None, tuple[grpc.RpcMethodHandler, grpc.StatusCode] | None]:
        """The caller's key id, and the refusal (handler, code) when the call may not go on."""
        if self.auth is None or details.method in self.open or not self.auth.checks_all:
            return None, None
        token = next((v for k, v in details.invocation_metadata or () if k == "authorization"), None)
        scheme, _, key = (token or "").partition(" ")
        if not key or scheme.lower() != "bearer":
            code = grpc.StatusCode.UNAUTHENTICATED
            return None, (_refusal(code, "authorization metadata: expected 'Bearer KEY'"), code)
        key_id = self.auth.match(key.strip().encode())
        if key_id is None:
            code = grpc.StatusCode.PERMISSION_DENIED
            return None, (_refusal(code, "authorization metadata: the key is not valid"), code)
        return key_id, None

    def _recorded(self, handler: grpc.RpcMethodHandler, method: str, key_id: str | None,
                  refused: grpc.StatusCode | None, rid: str) -> grpc.RpcMethodHandler:
        audit, level, inner = self.audit, self.log_level, handler.unary_unary

        async def call(request: Any, context: Any) -> Any:
            response, failed, started = None, False, time.perf_counter()
            try:
                response = await inner(request, context)
                return response
            except BaseException:
                failed = True
                raise
            finally:
                code = refused or _code(context.code(), failed)
                peer = context.peer() or ""
                record = {"key_id": key_id, "client": peer.partition(":")[2].rsplit(":", 1)[0] or None,
                          "method": "gRPC", "path": method, "model": getattr(request, "model_name", None) or None,
                          "version": getattr(response, "model_version", None)
                          or getattr(request, "model_version", None) or None, "status": code.name}
                if audit is not None:
                    audit.write({"time": utc_now(), "action": "denied" if refused is not None else "request",
                                 **record})
                if level is not None:
                    requests_log.log(level, "request", extra={"fields": {
                        "request_id": rid, **record, "duration_ms": round((time.perf_counter() - started) * 1e3, 3)}})

        return grpc.unary_unary_rpc_method_handler(call, request_deserializer=handler.request_deserializer,
                                                   response_serializer=handler.response_serializer)


_CODES = {code.value[0]: code for code in grpc.StatusCode}


def _code(code: Any, failed: bool) -> grpc.StatusCode:
    """A call's gRPC status code from its context (grpc.aio gives the enum or its number; None when not set)."""
    if isinstance(code, grpc.StatusCode):
        return code
    if isinstance(code, int) and code in _CODES:
        return _CODES[code]
    return grpc.StatusCode.UNKNOWN if failed else grpc.StatusCode.OK


def _refusal(code: grpc.StatusCode, message: str) -> grpc.RpcMethodHandler:
    async def refuse(request: Any, context: Any) -> None:
        await context.abort(code, message)

    return grpc.unary_unary_rpc_method_handler(refuse)


class _Failure(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = _HEAP_REPR.sub("<object>", message)


class InferenceService(pb_grpc.GRPCInferenceServiceServicer):
    """The six calls of `inference.GRPCInferenceService` over the HTTP app's state (pipeline, batcher, metrics)."""

    def __init__(self, state: Any) -> None:
        self.state = state

    async def ServerLive(self, request: Any, context: Any) -> Any:  # noqa: N802 (the protocol's names)
        return pb.ServerLiveResponse(live=True)  # type: ignore[attr-defined]

    async def ServerReady(self, request: Any, context: Any) -> Any:  # noqa: N802
        return pb.ServerReadyResponse(ready=self.state.is_ready)  # type: ignore[attr-defined]

    async def ModelReady(self, request: Any, context: Any) -> Any:  # noqa: N802
        await self._check_model(context, request.name, request.version, "name", "version")
        return pb.ModelReadyResponse(ready=self.state.is_ready)  # type: ignore[attr-defined]

    async def ServerMetadata(self, request: Any, context: Any) -> Any:  # noqa: N802
        return pb.ServerMetadataResponse(  # type: ignore[attr-defined]
            name=SERVER_NAME, version=__version__, extensions=EXTENSIONS)

    async def ModelMetadata(self, request: Any, context: Any) -> Any:  # noqa: N802
        await self._check_model(context, request.name, request.version, "name", "version")
        p = self.state.pipeline
        tensor = pb.ModelMetadataResponse.TensorMetadata  # type: ignore[attr-defined]
        return pb.ModelMetadataResponse(  # type: ignore[attr-defined]
            name=p.name,
            versions=[p.version],
            platform=SERVER_NAME,
            inputs=[tensor(name=s.name, datatype=to_datatype(s.dtype), shape=[-1, *s.shape]) for s in p.inputs],
            outputs=[tensor(name=s.name, datatype=to_datatype(s.dtype), shape=[-1, *s.shape]) for s in p.outputs],
        )

    async def ModelInfer(self, request: Any, context: Any) -> Any:  # noqa: N802
        await self._check_model(context, request.model_name, request.model_version, "model_name", "model_version")
        metrics, tracing, p = self.state.metrics, self.state.tracing, self.state.pipeline
        started = time.perf_counter()
        metrics.request_started()
        status: int | None = 500
        trace = None if tracing is None else tracing.call(context.invocation_metadata() or (), "ModelInfer",
                                                          context.peer(), p.name, p.version)
        try:
            response = await self._infer(request, context, trace)
            status = 200
            return response
        except _Failure as failure:
            status = failure.status
            if status >= 500:
                log.warning("model %r: %s", self.state.pipeline.name, failure.message)
            await context.abort(CODES.get(status, grpc.StatusCode.INTERNAL), failure.message)
        except asyncio.CancelledError:  # the client cancelled the call or went away: nobody to answer
            status = None
            metrics.client_disconnected()
            raise
        finally:
            metrics.request_finished()
            if status is not None:
                metrics.observe_request(status, time.perf_counter() - started)
            if trace is not None:
                trace.finish(status)

    async def _check_model(self, context: Any, name: str, version: str, name_field: str, version_field: str) -> None:
        p = self.state.pipeline
        if name != p.name:
            await context.abort(grpc.StatusCode.NOT_FOUND,
                                f"{name_field}: unknown model {name!r}; this server serves {p.name!r}")
        if version and version != p.version:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"{version_field}: model {name!r} has no version "
                                                           f"{version!r}; it serves version {p.version!r}")

    async def _infer(self, request: Any, context: Any, trace: RequestTrace | None = None) -> Any:
        state, p = self.state, self.state.pipeline
        if state.broken:  # requests sent while it warms up wait for it instead
            raise _Failure(503, f"model {p.name!r} is not ready: {state.not_ready_reason}")
        try:
            if sum(len(raw) for raw in request.raw_input_contents) <= INLINE_BYTES:
                tensors = decode_inputs(request, p.inputs, p.serving)
            else:
                tensors = await asyncio.to_thread(decode_inputs, request, p.inputs, p.serving)
            outputs = _requested_outputs(request, p.outputs)
            if trace is not None:
                trace.mark_decoded(len(next(iter(tensors.values()))) if tensors else 0)
            result = await state.batcher.submit(tensors, timeout_s=_timeout_s(request, context), trace=trace)
            if trace is not None:
                trace.mark_encoding()
            return _response(request, result, outputs, p.outputs, p.name, p.version)
        except ProtocolError as exc:
            raise _Failure(exc.status, exc.message) from None
        except RequestTooLarge as exc:
            raise _Failure(413, f"inputs: {exc}") from None
        except RequestError as exc:
            raise _Failure(400, f"inputs: {exc}") from None
        except QueueFull as exc:
            raise _Failure(429, f"{exc}; retry after {QueueFull.retry_after_s} s") from None
        except DeadlineExceeded as exc:
            raise _Failure(504, str(exc)) from None
        except BatcherClosed as exc:
            raise _Failure(503, str(exc)) from None
        except Exception as exc:
            log.exception("inference failed for model %r", p.name)
            raise _Failure(500, f"inference failed: {type(exc).__name__}: {exc}") from None


# -- request and response ----------------------------------------------------


def decode_inputs(request: Any, specs: Sequence[TensorSpec], limits: ServingConfig) -> Tensors:
    """The input tensors of a `ModelInferRequest`, checked against the model's signature and `limits`.

    Every declared shape is compared with the data received, then counted
    against `max_rows` / `max_elements` (413), before its array is made.
    """
    raw = request.raw_input_contents
    if not request.inputs:
        raise ProtocolError(400, "inputs: expected a non-empty list of input tensors")
    if raw and len(raw) != len(request.inputs):
        raise ProtocolError(400, f"raw_input_contents: {len(raw)} entries for {len(request.inputs)} inputs; send "
                                 "one per input, in the order of inputs (or none, and each input's contents)")
    by_name = {s.name: s for s in specs}
    tensors: Tensors = {}
    rows: tuple[int, str] | None = None
    elements = 0
    for i, item in enumerate(request.inputs):
        where = f"inputs[{i}]"
        if item.name not in by_name:
            raise ProtocolError(400, f"{where}.name: unknown input {item.name!r}; the model takes {sorted(by_name)}")
        if item.name in tensors:
            raise ProtocolError(400, f"{where}.name: input {item.name!r} is given twice")
        spec = by_name[item.name]
        shape = _check_shape(list(item.shape), spec, where)
        datatype = to_datatype(spec.dtype)
        if item.datatype != datatype:
            raise ProtocolError(400, f"{where}.datatype: input {item.name!r} is {datatype}, got {item.datatype!r}")
        if rows is not None and shape[0] != rows[0]:
            raise ProtocolError(400, f"{where}.shape[0]: batch size {shape[0]} differs from {rows[0]} of input "
                                     f"{rows[1]!r}")
        rows = rows or (shape[0], item.name)
        if raw:
            if item.contents.ListFields():
                raise ProtocolError(400, f"{where}.contents: given together with raw_input_contents")
            count = _check_raw(memoryview(raw[i]), datatype, shape, f"raw_input_contents[{i}]")
        else:
            count = _check_contents(item.contents, datatype, shape, f"{where}.contents")
        # the data fills the declared shape: now the limits, before anything is allocated for it
        if shape[0] > limits.max_rows:
            raise ProtocolError(413, f"{where}.shape[0]: {shape[0]} rows, more than the {limits.max_rows} one "
                                     "request may carry (serving.max_rows); send them in several requests")
        elements += count
        if elements > limits.max_elements:
            raise ProtocolError(413, f"{where}.shape: the request's inputs hold {elements} elements so far, more "
                                     f"than the {limits.max_elements} one request may carry (serving.max_elements)")
        if raw:
            tensors[item.name] = _from_raw(memoryview(raw[i]), datatype, shape, f"raw_input_contents[{i}]")
        else:
            tensors[item.name] = _from_contents(item.contents, datatype, shape, f"{where}.contents")
    missing = [s.name for s in specs if s.name not in tensors]
    if missing:
        raise ProtocolError(400, f"inputs: missing input {missing[0]!r}; the model takes {[s.name for s in specs]}")
    return tensors


def _check_shape(raw: list[int], spec: TensorSpec, where: str) -> tuple[int, ...]:
    expected = [-1, *spec.shape]
    if len(raw) != len(expected) or any(d < 0 for d in raw) or any(
            e >= 0 and d != e for d, e in zip(raw, expected, strict=True)):
        raise ProtocolError(400, f"{where}.shape: input {spec.name!r} takes {expected}, got {raw}")
    if raw[0] == 0:
        raise ProtocolError(400, f"{where}.shape[0]: the batch needs at least one row")
    return tuple(raw)


def _check_raw(chunk: memoryview, datatype: str, shape: tuple[int, ...], where: str) -> int:
    """The element count of `shape` once `chunk` is found to hold it exactly (BYTES: at least plausibly)."""
    count = math.prod(shape)  # a Python int: a declared shape never wraps
    if datatype == "BYTES":
        if count > len(chunk) // 4:  # each element takes at least its 4-byte length
            bytes_from_binary(chunk, count, where)  # raises, naming what the bytes hold
        return count
    expected = count * numpy_for_datatype(datatype).itemsize
    if len(chunk) != expected:
        raise ProtocolError(400, f"{where}: {len(chunk)} bytes do not hold shape {list(shape)} of {datatype} "
                                 f"({expected} bytes)")
    return count


def _from_raw(chunk: memoryview, datatype: str, shape: tuple[int, ...], where: str) -> np.ndarray:
    if datatype == "BYTES":
        return bytes_from_binary(chunk, math.prod(shape), where).reshape(shape)
    dtype = numpy_for_datatype(datatype)
    # copy: writable and aligned, as kernels compiled at warm-up expect
    return np.frombuffer(chunk, dtype=dtype.newbyteorder("<")).astype(dtype).reshape(shape)


def _check_contents(contents: Any, datatype: str, shape: tuple[int, ...], where: str) -> int:
    wanted = _CONTENTS.get(datatype)
    if wanted is None:
        raise ProtocolError(400, f"{where}: {datatype} has no typed contents field; send it in raw_input_contents")
    for field, _ in contents.ListFields():
        if field.name != wanted:
            raise ProtocolError(400, f"{where}.{field.name}: the input is {datatype}, whose values go in "
                                     f"{where}.{wanted}")
    count = math.prod(shape)
    given = len(getattr(contents, wanted))
    if given != count:
        raise ProtocolError(400, f"{where}.{wanted}: {given} values do not fill shape {list(shape)} ({count} values)")
    return count


def _from_contents(contents: Any, datatype: str, shape: tuple[int, ...], where: str) -> np.ndarray:
    wanted = _CONTENTS[datatype]
    values = getattr(contents, wanted)
    if datatype == "BYTES":
        array = np.empty(len(values), dtype=object)
        array[:] = list(values)
        return array.reshape(shape)
    dtype = numpy_for_datatype(datatype)
    wide = np.array(values, dtype={"int_contents": np.int32, "uint_contents": np.uint32}.get(wanted, dtype))
    if wide.dtype != dtype:  # INT8/16, UINT8/16 travel in 32-bit fields: each value must fit
        info = np.iinfo(dtype)
        if wide.size and (wide.min() < info.min or wide.max() > info.max):
            raise ProtocolError(400, f"{where}.{wanted}: a value is out of range for {datatype} "
                                     f"({info.min} to {info.max})")
        wide = wide.astype(dtype)
    return wide.reshape(shape)


def _requested_outputs(request: Any, specs: Sequence[TensorSpec]) -> list[str]:
    names = [s.name for s in specs]
    if not request.outputs:
        return names
    requested = []
    for i, item in enumerate(request.outputs):
        if item.name not in names:
            raise ProtocolError(400, f"outputs[{i}].name: unknown output {item.name!r}; the model returns {names}")
        if "classification" in item.parameters:
            raise ProtocolError(400, f"outputs[{i}].parameters.classification: not supported by this server")
        requested.append(item.name)
    return requested


def _timeout_s(request: Any, context: Any) -> float | None:
    """The request's queue deadline: its `timeout` parameter (microseconds, as Triton), capped by the call's."""
    timeout: float | None = None
    if "timeout" in request.parameters:
        param = request.parameters["timeout"]
        kind = param.WhichOneof("parameter_choice")
        if kind not in ("int64_param", "uint64_param") or getattr(param, kind) < 0:
            raise ProtocolError(400, "parameters.timeout: expected int64_param, microseconds from 0")
        timeout = getattr(param, kind) / 1e6
    remaining = context.time_remaining()
    if remaining is not None:
        timeout = remaining if timeout is None else min(timeout, remaining)
    return timeout


def _response(request: Any, result: Tensors, outputs: list[str], specs: Sequence[TensorSpec], model_name: str,
              model_version: str) -> Any:
    by_name = {s.name: s for s in specs}
    response = pb.ModelInferResponse(  # type: ignore[attr-defined]
        model_name=model_name, model_version=model_version, id=request.id)
    for name in outputs:
        datatype = to_datatype(by_name[name].dtype)
        array = np.asarray(result[name])
        if datatype == "BYTES":
            raw = bytes_to_binary(array)
        else:
            dtype = numpy_for_datatype(datatype)
            raw = array.astype(dtype.newbyteorder("<"), copy=False).tobytes()
        response.outputs.add(name=name, datatype=datatype, shape=array.shape)
        response.raw_output_contents.append(raw)
    return response
