"""The cost per request of API keys and of the JSON request / audit logs, in process: microseconds each layer adds.

    python bench/security_overhead.py [--requests 20000] [--repeats 7]

A request (the headers `tritonclient.http` sends, plus `Authorization`) goes
through each stack of `serve`'s middleware around an ASGI responder that
answers at once; the best of `--repeats` runs of `--requests` requests, on one
event loop (uvloop when installed), minus the responder alone. JSON lines go
to files in a temporary folder (as a server's go to a pipe or a file). The
end-to-end share depends on the model: `bench/peers.py --serve-args ...
--header ...` measures that (noisier: the whole request is ~100x this).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from infc_runtime.audit import AuditLog
from infc_runtime.auth import Auth, Keys
from infc_runtime.logs import JsonFormatter, RequestLog

KEY = "bench-key-0123456789abcdef"


async def responder(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", b"2"), (b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": b"{}"})


def scope() -> Scope:
    return {"type": "http", "method": "POST", "path": "/v2/models/mlp/infer", "client": ("127.0.0.1", 50000),
            "headers": [(b"host", b"localhost:8000"), (b"user-agent", b"python/gevent-http-client-1.5.5"),
                        (b"accept-encoding", b"gzip"), (b"content-type", b"application/json"),
                        (b"content-length", b"1234"), (b"authorization", f"Bearer {KEY}".encode())]}


async def run(app: ASGIApp, requests: int) -> float:
    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        pass

    started = time.perf_counter()
    for _ in range(requests):
        await app(scope(), receive, send)
    return (time.perf_counter() - started) / requests


def best(app: ASGIApp, requests: int, repeats: int) -> float:
    return min(asyncio.run(run(app, requests)) for _ in range(repeats))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    keys = Keys({f"k{i}": f"key-{i:02d}-0123456789abcdef" for i in range(3)} | {"bench": KEY},
                "admin-key-0123456789abcdef")
    with tempfile.TemporaryDirectory() as tmp:
        handler = logging.FileHandler(Path(tmp) / "requests.jsonl")
        handler.setFormatter(JsonFormatter())
        logging.getLogger("infc_runtime.requests").addHandler(handler)
        logging.getLogger("infc_runtime.requests").setLevel(logging.INFO)
        audit = AuditLog(Path(tmp) / "audit.jsonl")
        stacks: dict[str, Callable[[], ASGIApp]] = {
            "API keys (4 keys + admin)": lambda: Auth(responder, keys),
            "--log-format json": lambda: RequestLog(responder),
            "--audit-log FILE": lambda: RequestLog(responder, log=False, audit=audit),
            "all three": lambda: RequestLog(Auth(responder, keys), audit=audit),
        }
        floor = best(responder, args.requests, args.repeats)
        print(f"responder alone: {floor * 1e6:.2f} us/request (best of {args.repeats} x {args.requests})\n")
        print("| middleware | us/request added |")
        print("|---|---:|")
        for name, make in stacks.items():
            print(f"| {name} | {(best(make(), args.requests, args.repeats) - floor) * 1e6:.2f} |")
        audit.close()


if __name__ == "__main__":
    main()
