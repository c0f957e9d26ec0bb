"""Bounded request bodies: Content-Length and streamed size limits, the per-chunk timeout, capped decompression."""

from __future__ import annotations

import asyncio
import gzip
import time
import zlib
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from starlette.requests import ClientDisconnect, Request

from infc_runtime._body import decompress, read_body
from infc_runtime.protocol import ProtocolError

Message = dict[str, Any]


def request(messages: list[Message], *, content_length: int | None = None, stall: bool = False) -> Request:
    """A request whose body arrives as `messages`; after them it waits forever (`stall`) or disconnects."""
    pending = list(messages)
    received: list[Message] = []

    async def receive() -> Message:
        if pending:
            received.append(pending.pop(0))
            return received[-1]
        if stall:
            await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    headers = [] if content_length is None else [(b"content-length", str(content_length).encode())]
    req = Request({"type": "http", "method": "POST", "path": "/", "headers": headers}, receive)
    req.state.received = received
    return req


def read(req: Request, *, max_bytes: int, timeout_s: float) -> Awaitable[bytearray]:
    """`read_body` over the request's receive and its Content-Length header."""
    return read_body(req.receive, req.headers.get("content-length"), max_bytes=max_bytes, timeout_s=timeout_s)


def chunks(*parts: bytes) -> list[Message]:
    return [{"type": "http.request", "body": p, "more_body": i < len(parts) - 1} for i, p in enumerate(parts)]


def run(body: Callable[[], Awaitable[Any]]) -> Any:
    return asyncio.run(asyncio.wait_for(body(), timeout=10))


def test_a_body_in_chunks_is_read_whole() -> None:
    req = request(chunks(b'{"in', b"puts", b'": []}'), content_length=14)
    assert run(lambda: read(req, max_bytes=14, timeout_s=1)) == b'{"inputs": []}'
    req = request(chunks(b"ab", b"cd", b""))  # chunked, exactly at the limit
    assert run(lambda: read(req, max_bytes=4, timeout_s=1)) == b"abcd"


def test_a_declared_length_over_the_limit_is_refused_before_reading() -> None:
    req = request(chunks(b"x" * 10), content_length=10**9)
    with pytest.raises(ProtocolError) as err:
        run(lambda: read(req, max_bytes=1000, timeout_s=1))
    assert err.value.status == 413 and err.value.close
    assert err.value.message == ("request body: Content-Length 1000000000 bytes is more than the 1000 allowed "
                                 "(serving.max_body_bytes)")
    assert req.state.received == [], "nothing of the body was read"


def test_a_streamed_body_over_the_limit_is_refused_as_it_grows() -> None:
    req = request(chunks(*[b"x" * 400] * 100))  # chunked: no Content-Length
    with pytest.raises(ProtocolError) as err:
        run(lambda: read(req, max_bytes=1000, timeout_s=1))
    assert err.value.status == 413 and err.value.close and "serving.max_body_bytes" in err.value.message
    assert len(req.state.received) == 3, "stopped at the chunk that went over"


def test_a_chunk_that_does_not_come_is_a_408() -> None:
    req = request(chunks(b"{", b"")[:1], content_length=1000, stall=True)
    started = time.monotonic()
    with pytest.raises(ProtocolError) as err:
        run(lambda: read(req, max_bytes=10_000, timeout_s=0.1))
    assert time.monotonic() - started < 5
    assert err.value.status == 408 and err.value.close
    assert err.value.message.startswith("request body: no data for 0.1 s after 1 bytes")


def test_a_client_that_leaves_mid_body_is_a_disconnect() -> None:
    req = request(chunks(b"{", b"")[:1], content_length=1000)
    with pytest.raises(ClientDisconnect):
        run(lambda: read(req, max_bytes=10_000, timeout_s=1))


RAW = bytes(range(256)) * 400


@pytest.mark.parametrize(
    ("encoding", "data"),
    [
        ("gzip", gzip.compress(RAW)),
        ("GZip ", gzip.compress(RAW)),
        ("deflate", zlib.compress(RAW)),
        ("gzip", gzip.compress(RAW[:1000]) + gzip.compress(RAW[1000:])),  # two members, as gzip.decompress reads
        ("gzip", gzip.compress(RAW) + b"\0\0\0"),  # zero padding
        (None, RAW),
        ("identity", RAW),
    ],
)
def test_decompress_reads_what_clients_send(encoding: str | None, data: bytes) -> None:
    assert decompress(bytearray(data), encoding, max_bytes=len(RAW)) == RAW


@pytest.mark.parametrize(
    ("encoding", "data", "status", "message"),
    [
        ("gzip", gzip.compress(RAW + b"!"), 413, f"request body: more than the {len(RAW)} bytes allowed once "
                                          "decompressed (serving.max_decompressed_bytes)"),
        ("gzip", gzip.compress(RAW)[:-20], 400, "Content-Encoding header: the body ends inside its gzip data"),
        ("deflate", zlib.compress(RAW) + b"!", 400, "Content-Encoding header: 1 bytes follow the end of the deflate"),
        ("gzip", b"not gzip", 400, "Content-Encoding header: body is not valid gzip data"),
        ("deflate", gzip.compress(RAW), 400, "Content-Encoding header: body is not valid deflate data"),
        ("br", b"", 415, "Content-Encoding header: 'br' is not supported (use gzip or deflate)"),
    ],
)
def test_decompress_errors(encoding: str, data: bytes, status: int, message: str) -> None:
    with pytest.raises(ProtocolError) as err:
        decompress(bytearray(data), encoding, max_bytes=len(RAW))
    assert err.value.status == status and err.value.message.startswith(message), err.value.message


def test_a_gzip_bomb_is_never_inflated() -> None:
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    bomb = b"".join([packer.compress(b" " * (1 << 20)) for _ in range(256)] + [packer.flush()])  # 256 MiB in ~250 KB
    assert len(bomb) < 300_000
    with pytest.raises(ProtocolError) as err:
        decompress(bytearray(bomb), "gzip", max_bytes=1 << 20)
    assert err.value.status == 413 and "serving.max_decompressed_bytes" in err.value.message


def test_a_trickling_body_is_a_408(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [0.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])

    async def body() -> bytearray:
        pending = chunks(*[b"x"] * 10)

        async def receive() -> Message:
            clock[0] += 0.9  # each byte in time for the 1 s per chunk; the body at ~1 byte/s
            return pending.pop(0)

        req = Request({"type": "http", "method": "POST", "path": "/", "headers": []}, receive)
        return await read(req, max_bytes=100, timeout_s=1)

    with pytest.raises(ProtocolError) as err:
        run(body)
    assert err.value.status == 408 and err.value.close
    assert err.value.message.startswith("request body: 2 bytes in 2 s, slower than 1024 bytes/s")
