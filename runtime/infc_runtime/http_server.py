"""The HTTP server: uvicorn (HTTP/1.1) with read timeouts and a shutdown that loses no request.

The fast path: uvicorn parses HTTP with httptools and runs on uvloop when both
are importable (the bundle's requirements pin them), else with h11 and
asyncio's own loop (`FAST_HTTP`, `FAST_LOOP` say which). No access-log line is
written per request unless `access_log` is asked for (`serve --access-log`).

uvicorn alone has neither of these (with either parser):

- No deadline for a request head. `timeout_keep_alive` is armed only after a
  response and cancelled by any byte received, so a client that connects and
  sends nothing, or a header byte a second (slowloris), holds its connection
  forever. Here a request head must be complete within `HEAD_TIMEOUT_S` of
  the connection or of the previous response; any byte does not reset it.
- Shutdown drops requests. On SIGTERM uvicorn closes its listening socket,
  which resets the connections the kernel had completed (or was completing)
  but the loop had not accepted yet, and in the same step closes every
  connection without a parsed request: one accepted a moment ago whose request
  bytes are in flight or unread is closed without an answer (the client sees
  a reset or "server disconnected"). Here, instead: new connections are
  ignored first (a socket filter drops their SYN, Linux; the client retries
  after about a second and is refused), for `HANDSHAKE_WAIT_S` so that
  handshakes under way complete; the accept queue is emptied and the listener
  closed in one step; then each connection without a request in progress gets
  `DRAIN_GRACE_S` to deliver one: a request that arrives is answered (then the
  connection closes), a connection still without one is closed.

After that uvicorn waits for the requests in progress, at most
`SHUTDOWN_TIMEOUT_S` (its `timeout_graceful_shutdown`; a client stalled
mid-body cannot hold the process longer), then the app drains its batcher and
the process exits. The bound after SIGTERM is therefore about 0.25 s (uvicorn's
tick, the handshake wait) + `SHUTDOWN_TIMEOUT_S` + the batch running on the
worker at that moment (+ the warm-up, if SIGTERM lands during it).
"""

from __future__ import annotations

import asyncio
import ctypes
import functools
import logging
import os
import signal
import socket
import struct
import sys
from collections.abc import Callable
from typing import Any

import uvicorn

try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # httptools is not installed: h11
    HttpToolsProtocol = None  # type: ignore[assignment,misc]
try:
    import uvloop  # noqa: F401  # only whether it imports: uvicorn starts it by name
except ImportError:
    FAST_LOOP = False
else:
    FAST_LOOP = True
FAST_HTTP = HttpToolsProtocol is not None
"""Whether requests are parsed by httptools (else h11); `FAST_LOOP`: whether the loop is uvloop (else asyncio's)."""

__all__ = [
    "DRAIN_GRACE_S",
    "FAST_HTTP",
    "FAST_LOOP",
    "HEAD_TIMEOUT_S",
    "KEEP_ALIVE_S",
    "MAX_HEAD_BYTES",
    "SHUTDOWN_TIMEOUT_S",
    "run_server",
]

HEAD_TIMEOUT_S = 10.0
"""A request head (request line and headers) must be complete this long after the connection or the last response."""
KEEP_ALIVE_S = 5
"""An idle connection is closed this long after its last response (uvicorn's `timeout_keep_alive`)."""
MAX_HEAD_BYTES = 16 * 1024
"""A larger request head is answered 400 (h11's `max_incomplete_event_size`; counted here for httptools)."""
HANDSHAKE_WAIT_S = 0.05
"""On shutdown, how long new connections are ignored before the listener closes, so that handshakes under way
complete and are served rather than reset."""
DRAIN_GRACE_S = 1.0
"""On shutdown, how long an accepted connection without a request in progress may take to deliver one."""
SHUTDOWN_TIMEOUT_S = 8
"""On shutdown, how long requests in progress may take before they are cancelled (`timeout_graceful_shutdown`)."""

EXIT_OK, EXIT_START_FAILED = 0, 1

log = logging.getLogger("infc_runtime")


class _Guarded:
    """The request-head deadline and the draining described above, for either uvicorn protocol class.

    The protocol class calls `_head_complete()` once a whole request head has arrived.
    """

    cycle: Any
    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_deadline: asyncio.TimerHandle | None = None
        self._draining = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)  # type: ignore[misc]
        self._await_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_deadline()
        super().connection_lost(exc)  # type: ignore[misc]

    def _head_complete(self) -> None:
        if self._busy():
            self._cancel_head_deadline()
            if self._draining:
                self.cycle.keep_alive = False  # answered, then closed

    def on_response_complete(self) -> None:
        super().on_response_complete()  # type: ignore[misc]  # may start a pipelined request already received
        if not self.transport.is_closing() and not self._busy():
            self._await_head()

    def shutdown(self) -> None:
        """uvicorn's graceful shutdown: a request in progress is answered; otherwise wait for one a moment."""
        self._draining = True
        if self._busy():
            super().shutdown()  # type: ignore[misc]
        else:
            self.loop.call_later(DRAIN_GRACE_S, self._end_grace)

    def _end_grace(self) -> None:
        if not self.transport.is_closing():
            super().shutdown()  # type: ignore[misc]  # closes the connection unless a request is now in progress

    def _busy(self) -> bool:
        return self.cycle is not None and not self.cycle.response_complete

    def _await_head(self) -> None:
        self._cancel_head_deadline()
        self._head_deadline = self.loop.call_later(HEAD_TIMEOUT_S, self._head_timed_out)

    def _cancel_head_deadline(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _head_timed_out(self) -> None:
        self._head_deadline = None
        if not self._busy() and not self.transport.is_closing():
            log.debug("closing a connection whose request head did not arrive within %g s", HEAD_TIMEOUT_S)
            self.timeout_keep_alive_handler()  # type: ignore[attr-defined]  # uvicorn's way to close an idle one


@functools.cache
def _h11_connection() -> type[asyncio.Protocol]:
    """`Connection`, made when first asked for: h11 and uvicorn's protocol over it (~30 ms of imports at
    start) serve only where httptools is not installed, or with `fast=False`."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class Connection(_Guarded, H11Protocol):  # type: ignore[misc]  # uvicorn narrows connection_made
        """uvicorn's h11 connection, plus the request-head deadline and the draining described above."""

        def handle_events(self) -> None:
            super().handle_events()
            self._head_complete()

    Connection.__qualname__ = Connection.__name__
    return Connection


def __getattr__(name: str) -> Any:
    if name == "Connection":
        return _h11_connection()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if HttpToolsProtocol is not None:

    class FastConnection(_Guarded, HttpToolsProtocol):  # type: ignore[misc]  # as Connection
        """uvicorn's httptools connection, plus the deadline, the draining and h11's limit on a request head.

        httptools itself accepts a head of any size: the bytes received while a
        head is awaited are counted, and past `MAX_HEAD_BYTES` the answer is 400.
        """

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._head_bytes = 0

        def data_received(self, data: bytes) -> None:
            awaited = not self._busy()
            super().data_received(data)
            if awaited and not self._busy():  # still no whole head
                self._head_bytes += len(data)
                if self._head_bytes > MAX_HEAD_BYTES and not self.transport.is_closing():
                    self.send_400_response("Request head too large.")

        def on_headers_complete(self) -> None:
            super().on_headers_complete()
            self._head_bytes = 0
            self._head_complete()


class Server(uvicorn.Server):
    """uvicorn's server whose shutdown lets handshakes under way complete and accepts them before it closes
    the listener (then uvicorn's own shutdown asks each connection to drain)."""

    def __init__(self, config: uvicorn.Config, on_shutdown: Callable[[], None] | None = None) -> None:
        super().__init__(config)
        self.on_shutdown = on_shutdown

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self.on_shutdown is not None:  # e.g. the gRPC endpoint stops taking calls now, as HTTP does
            self.on_shutdown()
        listeners = [listener for server in self.servers for listener in server.sockets]
        if all([_refuse_new_connections(listener) for listener in listeners]):
            await asyncio.sleep(HANDSHAKE_WAIT_S)  # handshakes under way complete; the loop accepts them
        accepted = []
        for server in self.servers:  # accept, then close, in one step: nothing arrives in between
            for listener in server.sockets:
                accepted += _accept_pending(listener)
            server.close()
        loop = asyncio.get_running_loop()
        for conn in accepted:
            await loop.connect_accepted_socket(self._connection, conn)
        if accepted:
            log.info("accepted %d connection(s) waiting in the accept queue before closing it", len(accepted))
        await super().shutdown(sockets)

    def _connection(self) -> asyncio.Protocol:
        protocol: asyncio.Protocol = self.config.http_protocol_class(  # type: ignore[call-arg]
            config=self.config, server_state=self.server_state, app_state=self.lifespan.state)
        return protocol


# A classic BPF socket filter: drop TCP segments with SYN set and ACK clear (new connections), keep the rest.
_DROP_SYN = (
    (0x30, 0, 0, 13),  # ldb [13]         the TCP header's flags byte
    (0x54, 0, 0, 0x12),  # and #0x12      SYN | ACK
    (0x15, 0, 1, 0x02),  # jeq #0x02      SYN alone: a new connection
    (0x06, 0, 0, 0),  # ret #0            drop it (the client retries in ~1 s and is refused)
    (0x06, 0, 0, 0xFFFFFFFF),  # ret #-1  keep everything else (the last ACK of a handshake under way)
)
_SO_ATTACH_FILTER = 26


def _refuse_new_connections(listener: Any) -> bool:
    """Make a listening socket ignore new connections while the handshakes under way complete (Linux only).

    Closing a listener resets every connection whose handshake the kernel has
    not finished; a client may already have sent its request on it. With this
    filter no new handshake starts, so after `HANDSHAKE_WAIT_S` the accept
    queue holds every connection a client could think open, and closing loses
    none. Elsewhere (or if the kernel refuses the filter) the listener closes
    at once, and a connection in its last handshake step at that instant is
    reset.
    """
    if not sys.platform.startswith("linux") or listener.family not in (socket.AF_INET, socket.AF_INET6):
        return False
    code = b"".join(struct.pack("@HBBI", *insn) for insn in _DROP_SYN)
    buffer = ctypes.create_string_buffer(code, len(code))
    program = struct.pack("@HP", len(_DROP_SYN), ctypes.addressof(buffer))  # struct sock_fprog
    try:
        with socket.socket(fileno=os.dup(listener.fileno())) as sock:
            sock.setsockopt(socket.SOL_SOCKET, _SO_ATTACH_FILTER, program)
    except OSError as exc:
        log.debug("cannot filter new connections on shutdown (%s): closing the listener at once", exc)
        return False
    return True


def _accept_pending(listener: Any) -> list[socket.socket]:
    """The connections waiting in a listening socket's accept queue (without blocking)."""
    accepted = []
    with socket.socket(fileno=os.dup(listener.fileno())) as sock:  # the loop's socket object is not ours
        sock.setblocking(False)
        for _ in range(4096):
            try:
                conn, _ = sock.accept()
            except (BlockingIOError, InterruptedError):
                break
            except OSError:  # aborted before we got to it: next
                continue
            conn.setblocking(False)
            accepted.append(conn)
    return accepted


def config(app: Any, *, host: str, port: int, log_level: str, access_log: bool = False,
           fast: bool = True, **options: Any) -> uvicorn.Config:
    """The uvicorn settings: the connections above (httptools and uvloop if `fast` and installed, else h11 and
    asyncio), no websockets, the timeouts above, an access-log line per request only with `access_log`;
    `options`: more of `uvicorn.Config`'s (`ssl_certfile`, `ssl_keyfile`, `log_config`)."""
    http = FastConnection if fast and HttpToolsProtocol is not None else _h11_connection()
    return uvicorn.Config(app, host=host, port=port, log_level=log_level, lifespan="on", http=http,
                          loop="uvloop" if fast and FAST_LOOP else "asyncio", ws="none", access_log=access_log,
                          timeout_keep_alive=KEEP_ALIVE_S, h11_max_incomplete_event_size=MAX_HEAD_BYTES,
                          timeout_graceful_shutdown=SHUTDOWN_TIMEOUT_S, **options)


def run_server(app: Any, *, host: str, port: int, log_level: str, access_log: bool = False,
               on_shutdown: Callable[[], None] | None = None, **options: Any) -> int:
    """Serve `app` until SIGTERM or SIGINT; the exit code (0 stopped cleanly, 1 could not start).

    With `access_log`, uvicorn logs one line per request (logger `uvicorn.access`, INFO).
    `on_shutdown` is called (on the event loop) when the graceful shutdown begins; `options` go to `config`
    (TLS: `ssl_certfile`, `ssl_keyfile`).
    """
    server = Server(config(app, host=host, port=port, log_level=log_level, access_log=access_log, **options),
                    on_shutdown)
    log.info("HTTP: %s parser, %s loop, access log %s", "httptools" if FAST_HTTP else "h11",
             "uvloop" if FAST_LOOP else "asyncio", "on" if access_log else "off")

    # Until uvicorn installs its own handlers, a signal asks it to stop at once;
    # once it has shut down gracefully it re-raises the signal, which then lands
    # here harmlessly instead of killing the process: the exit code stays ours.
    def stop(signum: int, frame: object) -> None:
        server.should_exit = True

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.run()
    except SystemExit as exc:  # uvicorn exits this way when it cannot bind
        return EXIT_START_FAILED if exc.code else EXIT_OK
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return EXIT_OK if server.started else EXIT_START_FAILED
