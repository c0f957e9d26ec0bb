"""Request bodies, bounded: read in chunks with a timeout per chunk, decompressed in bounded steps.

Private helpers of `app`. Nothing here holds more than the limits allow:

- `read_body` refuses a body whose Content-Length exceeds `max_bytes` before
  reading any of it, and one that grows past it while streaming (chunked, or a
  Content-Length that lies); a chunk that does not arrive within `timeout_s`
  ends the request (408), and so does a body arriving slower on average than
  `MIN_RATE` bytes per second beyond its first `timeout_s` (a trickle of a
  byte every few seconds), so no handler waits forever on a slow client.
- `decompress` inflates gzip or deflate in steps of at most `_STEP` bytes and
  stops as soon as the output would exceed `max_bytes` (413): a bomb is never
  inflated. zlib releases the GIL while it works, so this belongs on a thread.

Every failure is a `ProtocolError` (a client that leaves mid-body:
`ClientDisconnect`); `close` is set when the body was not read to its end, so
the answer also closes the connection.
"""

from __future__ import annotations

import asyncio
import time
import zlib

from starlette.requests import ClientDisconnect
from starlette.types import Receive

from ._tensors import ProtocolError

__all__ = ["MIN_RATE", "decompress", "read_body"]

MIN_RATE = 1024
"""Bytes per second a body must average, beyond its first `timeout_s`, to be read on."""

_WBITS = {"gzip": 31, "x-gzip": 31, "deflate": 15}  # deflate: zlib-wrapped, as HTTP and tritonclient mean it
_STEP = 1 << 20


async def read_body(receive: Receive, content_length: str | None, *, max_bytes: int, timeout_s: float) -> bytearray:
    """The whole body (ASGI `receive`, declared `content_length`), at most `max_bytes`, each chunk within `timeout_s`.

    `ClientDisconnect` when the client leaves before the body's end.
    """
    if content_length is not None and content_length.strip().isdigit() and int(content_length) > max_bytes:
        raise ProtocolError(413, f"request body: Content-Length {int(content_length)} bytes is more than the "
                                 f"{max_bytes} allowed (serving.max_body_bytes)", close=True)
    body = bytearray()
    started = time.monotonic()
    loop = asyncio.get_running_loop()
    deadline = _ChunkDeadline()
    while True:
        timer = loop.call_later(timeout_s, deadline.expire)
        try:
            message = await receive()
        except asyncio.CancelledError:
            if not deadline.expired:
                raise
            deadline.task.uncancel()  # our own cancellation, not the server's
            raise ProtocolError(408, f"request body: no data for {timeout_s:g} s after {len(body)} bytes; "
                                     "send the body without pausing", close=True) from None
        finally:
            timer.cancel()
        if message["type"] != "http.request":  # http.disconnect
            raise ClientDisconnect()
        chunk = message.get("body", b"")
        if len(body) + len(chunk) > max_bytes:
            raise ProtocolError(413, f"request body: more than the {max_bytes} bytes allowed "
                                     "(serving.max_body_bytes)", close=True)
        body += chunk
        if not message.get("more_body", False):
            return body
        seconds = time.monotonic() - started
        if seconds > timeout_s + len(body) / MIN_RATE:  # a trickle: each chunk in time, the whole never
            raise ProtocolError(408, f"request body: {len(body)} bytes in {seconds:.0f} s, slower than "
                                     f"{MIN_RATE} bytes/s; send the body without pausing", close=True)


class _ChunkDeadline:
    """Cancels the reading task when a chunk is late (a timer per chunk, cheaper than `asyncio.timeout`)."""

    __slots__ = ("expired", "task")

    def __init__(self) -> None:
        task = asyncio.current_task()
        assert task is not None  # read_body runs in a task
        self.task = task
        self.expired = False

    def expire(self) -> None:
        self.expired = True
        self.task.cancel()


def decompress(body: bytearray, encoding: str | None, *, max_bytes: int) -> bytearray:
    """`body` without its Content-Encoding (gzip, deflate or identity), at most `max_bytes` of it."""
    coding = (encoding or "").strip().lower()
    if coding in ("", "identity"):
        return body
    if coding not in _WBITS:
        raise ProtocolError(415, f"Content-Encoding header: {encoding!r} is not supported (use gzip or deflate)")
    out = bytearray()
    view = memoryview(body)
    inflater = zlib.decompressobj(_WBITS[coding])
    data: bytes | memoryview = b""
    try:
        while True:
            if not data:  # feed the input in slices: what zlib keeps unconsumed stays small
                data, view = view[:_STEP], view[_STEP:]
            piece = inflater.decompress(data, min(_STEP, max_bytes - len(out) + 1))
            out += piece
            if len(out) > max_bytes:
                raise ProtocolError(413, f"request body: more than the {max_bytes} bytes allowed once decompressed "
                                         "(serving.max_decompressed_bytes)")
            data = inflater.unconsumed_tail
            if inflater.eof:
                rest = len(inflater.unused_data) + len(view)
                if not (inflater.unused_data + view).strip(b"\0"):  # nothing, or padding (as gzip.decompress takes)
                    return out
                if _WBITS[coding] != 31:
                    raise ProtocolError(400, f"Content-Encoding header: {rest} bytes follow the end of the "
                                             f"{coding} data")
                data = inflater.unused_data  # a further gzip member, as gzip.decompress reads them
                inflater = zlib.decompressobj(31)
            elif not piece and not data and not view:
                raise ProtocolError(400, f"Content-Encoding header: the body ends inside its {coding} data")
    except zlib.error as exc:
        raise ProtocolError(400, f"Content-Encoding header: body is not valid {coding} data ({exc})") from None
