"""`POST /v2/models/NAME[/versions/V]/infer_stream`: many requests on one HTTP request, results streamed back.

The body is newline-delimited JSON: each line one request in a form of
`infc_runtime.lines` (a V2 inference request in JSON form, a raw record for a
bundle with one BYTES input, or one row naming the inputs). Each line goes to
the same batcher as `/infer` as soon as it is read; the answer is `200` with
`Content-Type: application/x-ndjson`, sent chunked, one line per input line
as it finishes (so not necessarily in input order):

- the V2 response (outputs as JSON data) with `"line": N` first (lines are
  numbered from 1; blank lines are skipped but counted);
- for a line that failed, `{"line": N, "id": ..., "status": 400, "error": "..."}`
  with the status `/infer` would have answered (400, 413, 500, 504, ...); the
  stream goes on.

Bounded: a line longer than `serving.max_body_bytes` is an error line (413)
and the rest of it is skipped unread into memory; at most `MAX_INFLIGHT`
lines of one stream are read and not yet answered (the body is read no
further until one is written: a client that sends faster than the model runs,
or reads slower, is held back by TCP); each chunk of the body must arrive
within the body timeout (else a last error line, `"status": 408`, ends the
stream). A full queue (other clients' load) is waited out, up to the
request's timeout, instead of failing the line. Errors found before the
stream starts (unknown model, Content-Type, Content-Encoding, not ready) are
plain JSON error responses as for `/infer`. Each line counts in the metrics
as one request.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Any, Protocol

from starlette.requests import ClientDisconnect
from starlette.types import Receive, Scope, Send

from . import _json
from ._tensors import ProtocolError
from .abi import RequestError, RequestTooLarge
from .batching import Batcher, BatcherClosed, DeadlineExceeded, QueueFull
from .lines import Line, decode_line
from .metrics import Metrics
from .pipeline import Pipeline
from .protocol import InferRequest, RequestedOutput, encode_response

__all__ = ["MAX_INFLIGHT", "serve_stream"]

log = logging.getLogger("infc_runtime")
MAX_INFLIGHT = 64
"""Lines of one stream read and not yet answered; the body is read no further until one is written."""
_INLINE = 64 << 10
"""Lines up to this size are decoded on the event loop; longer ones on a thread (as `/infer`'s bodies)."""
_QUEUE_FULL_WAIT_S = 0.01


class _Server(Protocol):
    """What a stream needs of the server of one model (`app._Server`)."""

    pipeline: Pipeline
    batcher: Batcher
    metrics: Metrics
    broken: bool
    not_ready_reason: str
    body_timeout_s: float


async def serve_stream(server: _Server, scope: Scope, receive: Receive, send: Send,
                       reject: Any = None) -> None:
    """Answer one streaming request for `server`'s model (raw ASGI). `reject(status, message)` makes the
    plain error response sent instead of a stream (the app's `_error`)."""
    headers = {k.decode(): v.decode("latin-1") for k, v in scope["headers"]
               if k in (b"content-type", b"content-encoding")}
    media = headers.get("content-type", "").split(";", 1)[0].strip().lower()
    problem = None
    if server.broken:
        problem = 503, f"model {server.pipeline.name!r} is not ready: {server.not_ready_reason}"
    elif media in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data"):
        problem = 415, (f"Content-Type header: {media} is not accepted for inference (a web page on another site "
                        "could send it); send application/x-ndjson, application/json or no Content-Type")
    elif headers.get("content-encoding", "identity").strip().lower() != "identity":
        problem = 415, "Content-Encoding header: a stream is read as it comes; send it uncompressed"
    if problem is not None:
        await reject(*problem)(scope, receive, send)
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/x-ndjson")]})
    stream = _Stream(server)
    reader = asyncio.get_running_loop().create_task(stream.read(receive))
    ending = b""
    try:
        while (line := await stream.done.get()) is not None:
            await send({"type": "http.response.body", "body": line, "more_body": True})
            stream.inflight.release()
        await reader
    except ProtocolError as exc:  # the body itself: a late chunk
        ending = _json.dumps({"status": exc.status, "error": exc.message}) + b"\n"
    except (ClientDisconnect, OSError):
        reader.cancel()
        stream.cancel()
        return
    except Exception as exc:  # a bug: the stream ends with a line saying so, never silently
        log.exception("stream of model %r failed", server.pipeline.name)
        ending = _json.dumps({"status": 500, "error": f"internal server error: {type(exc).__name__}"}) + b"\n"
    finally:
        if not reader.done():
            reader.cancel()
            stream.cancel()
    await send({"type": "http.response.body", "body": ending, "more_body": False})


class _Stream:
    """One stream's lines in flight and its answers, ready to be written."""

    def __init__(self, server: _Server) -> None:
        self.server = server
        self.inflight = asyncio.Semaphore(MAX_INFLIGHT)
        self.done: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.tasks: set[asyncio.Task[None]] = set()

    def cancel(self) -> None:
        for task in list(self.tasks):
            task.cancel()

    async def read(self, receive: Receive) -> None:
        """Every line of the body, each answered by a task of its own; None on `done` after the last answer."""
        loop = asyncio.get_running_loop()
        try:
            async for number, raw in _lines(receive, self.server.pipeline.serving.max_body_bytes,
                                            self.server.body_timeout_s):
                await self.inflight.acquire()
                task = loop.create_task(self._answer(number, raw))
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)
        finally:  # the lines read so far are answered first, even when the body ends badly
            if self.tasks:
                await asyncio.gather(*self.tasks, return_exceptions=True)
            self.done.put_nowait(None)

    async def _answer(self, number: int, raw: bytes | None) -> None:
        server, p = self.server, self.server.pipeline
        started = time.perf_counter()
        server.metrics.request_started()
        status, message, line = 500, "", None
        try:
            if raw is None:
                status, message = 413, (f"line longer than the {p.serving.max_body_bytes} bytes allowed "
                                        "(serving.max_body_bytes)")
            else:
                line = await (asyncio.to_thread(self._decode, raw) if len(raw) > _INLINE else _now(self._decode(raw)))
                result = await self._result(line)
                outputs = [RequestedOutput(o.name, False) for o in (line.outputs or p.outputs)]
                request = InferRequest(line.tensors, outputs, line.rows, line.id)
                body = encode_response(request, result, p.outputs, model_name=p.name, model_version=p.version).body
                status = 200
                self.done.put_nowait(b'{"line":%d,' % number + bytes(body[1:]) + b"\n")
                return
        except ProtocolError as exc:
            status, message = exc.status, exc.message
        except RequestTooLarge as exc:
            status, message = 413, f"inputs: {exc}"
        except RequestError as exc:
            status, message = 400, f"inputs: {exc}"
        except DeadlineExceeded as exc:
            status, message = 504, str(exc)
        except BatcherClosed as exc:
            status, message = 503, str(exc)
        except Exception as exc:  # the pipeline itself: this line fails, the stream goes on
            message = f"inference failed: {type(exc).__name__}: {exc}"
        finally:
            server.metrics.request_finished()
            server.metrics.observe_request(status, time.perf_counter() - started)
        error: dict[str, Any] = {"line": number}
        if line is not None and line.id is not None:
            error["id"] = line.id
        self.done.put_nowait(_json.dumps({**error, "status": status, "error": message}) + b"\n")

    def _decode(self, raw: bytes) -> Line:
        p = self.server.pipeline
        return decode_line(raw, p.inputs, p.outputs, p.serving)

    async def _result(self, line: Line) -> Any:
        """The batcher's answer; a full queue is waited out (up to the timeout), not failed."""
        timeout = self.server.pipeline.serving.timeout_ms / 1000
        deadline = time.monotonic() + timeout
        while True:
            try:
                return await self.server.batcher.enqueue(line.tensors, timeout_s=timeout)
            except QueueFull:
                if time.monotonic() > deadline:
                    raise DeadlineExceeded("the queue stayed full for the request's timeout") from None
                await asyncio.sleep(_QUEUE_FULL_WAIT_S)


async def _now(value: Line) -> Line:
    return value


async def _lines(receive: Receive, max_bytes: int, timeout_s: float) -> AsyncIterator[tuple[int, bytes | None]]:
    """(line number, its bytes) for each non-blank line of the body; None for a line over `max_bytes` (the rest of
    which is skipped unread into memory). ProtocolError 408 when a chunk is late; ClientDisconnect."""
    buffer = bytearray()
    number = 0
    skipping = False  # inside a line already found too long
    more = True
    while more:
        try:
            message = await asyncio.wait_for(receive(), timeout_s)
        except TimeoutError:
            raise ProtocolError(408, f"request body: no data for {timeout_s:g} s after line {number}") from None
        if message["type"] != "http.request":
            raise ClientDisconnect()
        more = message.get("more_body", False)
        buffer += message.get("body", b"")
        while True:
            end = buffer.find(b"\n")
            if end < 0:
                break
            raw = bytes(buffer[:end])
            del buffer[:end + 1]
            if skipping:
                skipping = False
                continue
            number += 1
            if raw.strip():
                yield number, raw if len(raw) <= max_bytes else None
        if len(buffer) > max_bytes:
            if not skipping:
                number += 1
                skipping = True
                yield number, None
            buffer.clear()
    if buffer.strip() and not skipping:
        yield number + 1, bytes(buffer)
