"""Structured logs: `serve --log-format json` and the per-request record shared with the audit log.

With `--log-format json` every log line is one JSON object (`time`, `level`,
`logger`, `message`, plus `exc` for a traceback), uvicorn's included, and each
HTTP request adds one line on the logger `infc_runtime.requests` (at
`--request-log-level`, INFO by default) with:

- `request_id`: the request's `X-Request-ID` header, else the V2 request's
  `id`, else a new one (16 hex digits: 8 random per process, then a count); echoed in the `X-Request-ID` response
  header. An id is used only if it is 1-128 visible ASCII characters.
- `method`, `path`, `status`, `client`, `key_id` (the API key's id, never the key),
  `duration_ms` (first byte of the head to the response's last byte being handed on);
- for an infer request: `model`, `version` (the version that answered), `rows`,
  `batch_id`, `batch_size` (rows of the batch it ran in) and `stages_ms`
  (queue, decode, pre, infer, post, encode; pre/infer/post are the batch's).

Never a tensor, a header other than the request id, or a key. The infer handler
fills `scope[LOG_SCOPE]` (a dict) only when this middleware put one there:
without it the hot path does nothing more.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import re
import sys
import time
from typing import TYPE_CHECKING, Any

from .audit import AuditLog, json_line, utc_now
from .auth import KEY_ID_SCOPE, is_admin_path

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["LOG_SCOPE", "REQUEST_ID_HEADER", "JsonFormatter", "RequestLog", "configure", "request_id"]

LOG_SCOPE = "infc.log"
REQUEST_ID_HEADER = "X-Request-ID"
_HEADER = REQUEST_ID_HEADER.lower().encode()
_ID = re.compile(r"[\x21-\x7e]{1,128}")
MAX_PATH = 1024
"""Characters of a request's path kept in its lines (the rest is cut)."""
_MODEL_PATH = re.compile(r"/v2/models/([^/]+)(?:/versions/([^/]+))?")

requests_log = logging.getLogger("infc_runtime.requests")


def request_id(given: str | bytes | None) -> str | None:
    """`given` if it may serve as a request id (1-128 visible ASCII characters), else None."""
    if isinstance(given, bytes):
        given = given.decode("latin-1")
    return given if isinstance(given, str) and _ID.fullmatch(given) else None


class JsonFormatter(logging.Formatter):
    """A log record as one JSON line; a request's record carries its fields in `record.fields`."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {"time": utc_now(), "level": record.levelname, "logger": record.name,
                               "message": record.getMessage()}
        fields = getattr(record, "fields", None)
        if fields:
            doc.update(fields)
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, separators=(",", ":"), default=str)

    @staticmethod
    def request_line(level: str, fields: dict[str, Any]) -> str:
        """What `format` makes of a request's record, newline included, without a `LogRecord` (`RequestLog`)."""
        return json_line({"time": utc_now(), "level": level, "logger": requests_log.name, "message": "request",
                          **fields})


def configure(log_level: str, log_format: str) -> None:
    """The process's logging: text as before, or JSON lines on stderr (`--log-format json`)."""
    if log_format != "json":
        logging.basicConfig(level=log_level.upper(), format="%(levelname)s:     %(name)s: %(message)s")
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    logging.basicConfig(level=log_level.upper(), handlers=[handler], force=True)


def _handlers(logger: logging.Logger) -> list[logging.Handler]:
    """The handlers a record of `logger` reaches (its own and its ancestors', as `Logger.callHandlers`)."""
    found: list[logging.Handler] = []
    current: logging.Logger | None = logger
    while current is not None:
        found += current.handlers
        current = current.parent if current.propagate else None
    return found


class RequestLog:
    """ASGI middleware: the request id (echoed in `X-Request-ID`), then one record per HTTP request to the
    request log (`level`, when `log` is set) and the audit log (when `audit` is set)."""

    def __init__(self, app: ASGIApp, *, log: bool = True, level: int = logging.INFO,
                 audit: AuditLog | None = None) -> None:
        self.app = app
        self.level = level
        self.level_name = logging.getLevelName(level)
        self.audit = audit
        self._prefix, self._made = os.urandom(4).hex(), itertools.count()
        # A request's line skips the logging module's per-record work (a LogRecord, the caller's frame: most
        # of the cost): written as JsonFormatter would, under each stream handler's lock, when the request
        # logger's level and handlers are those `configure` set up; through `Logger.log` otherwise.
        self.log = log and requests_log.isEnabledFor(level)
        handlers = _handlers(requests_log)
        self.streams = [h for h in handlers if isinstance(h, logging.StreamHandler)
                        and isinstance(h.formatter, JsonFormatter) and h.level <= level]
        self.direct = bool(self.streams) and len(self.streams) == len(handlers) and not requests_log.filters

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        given = None
        for name, value in scope["headers"]:
            if name == _HEADER:
                given = request_id(value)
                break
        info: dict[str, Any] = {}
        scope[LOG_SCOPE] = info
        answer = {"status": 0, "id": given}

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                rid = given or request_id(info.get("id")) or self._new_id()
                answer["status"], answer["id"] = message["status"], rid
                message = {**message, "headers": [*message.get("headers", ()), (_HEADER, rid.encode())]}
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            self._record(scope, info, answer, time.perf_counter() - started)

    def _new_id(self) -> str:
        """A request id: 8 hex digits random per process, then a count (no system call per request)."""
        return f"{self._prefix}{next(self._made) & 0xFFFFFFFF:08x}"

    def _record(self, scope: Scope, info: dict[str, Any], answer: dict[str, Any], seconds: float) -> None:
        path = scope["path"][:MAX_PATH]
        client = scope.get("client")
        status = answer["status"] or None  # None: no answer was sent (the client left)
        model, version = info.get("model"), info.get("version")
        if model is None:
            named = _MODEL_PATH.match(path)
            if named is not None:
                model, version = named.group(1), named.group(2)
        key_id = scope.get(KEY_ID_SCOPE)
        if self.audit is not None:
            action = ("denied" if status in (401, 403) else "admin" if is_admin_path(path) else "request")
            self.audit.write({"time": utc_now(), "action": action, "key_id": key_id,
                              "client": client[0] if client else None, "method": scope["method"], "path": path,
                              "model": model, "version": version, "status": status})
        if self.log:
            fields: dict[str, Any] = {"request_id": answer["id"], "method": scope["method"], "path": path,
                                      "status": status, "client": client[0] if client else None, "key_id": key_id,
                                      "model": model, "version": version, "duration_ms": round(seconds * 1e3, 3)}
            for key in ("rows", "batch_id", "batch_size"):
                if key in info:
                    fields[key] = info[key]
            if "stages" in info:
                fields["stages_ms"] = {k: round(v * 1e3, 3) for k, v in info["stages"].items()}
            if not self.direct:
                requests_log.log(self.level, "request", extra={"fields": fields})
                return
            line = JsonFormatter.request_line(self.level_name, fields)
            for handler in self.streams:
                with handler.lock:  # type: ignore[union-attr]  # a StreamHandler has its lock
                    handler.stream.write(line)
                    handler.flush()
