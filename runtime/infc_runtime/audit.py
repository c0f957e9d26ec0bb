"""The audit log: one JSON line per HTTP request (`serve --audit-log FILE`, `-` for stderr).

A line holds when (`time`, UTC, ISO 8601), who (`key_id`: the id of the API
key, `admin` for the admin key, null when none was needed or given; `client`:
the peer's address), what (`method`, `path`, `model`, `version`: of the model
URL, the version that answered when the handler says), the answer (`status`)
and `action`: `admin` for a request to an admin path (load, unload, traffic:
`auth.is_admin_path`), `denied` for a 401/403, else `request`. Never a
payload, a header or a key. Each line is written and flushed when its
response has been sent; a file is opened for appending, so rotation tools that
copy-and-truncate or rename-and-restart both work.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from ._json import orjson

__all__ = ["AuditLog", "json_line", "utc_now"]

_second = [-1, ""]  # the last whole second formatted, and its text: formatting is most of a line's time


def utc_now() -> str:
    """The time now, UTC, ISO 8601 with milliseconds (`2026-11-30T05:12:01.123Z`)."""
    now = time.time()
    second = int(now)
    if second != _second[0]:
        _second[:] = [second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))]
    return f"{_second[1]}.{int((now - second) * 1000):03d}Z"


def _std_line(doc: dict[str, Any]) -> str:
    return json.dumps(doc, separators=(",", ":"), default=str) + "\n"


def _fast_line(doc: dict[str, Any]) -> str:
    return orjson.dumps(doc, default=str, option=orjson.OPT_APPEND_NEWLINE).decode()


json_line: Callable[[dict[str, Any]], str] = _std_line if orjson is None else _fast_line
"""`doc` as one line of compact JSON, newline included (orjson when installed: a log line is on the request path;
the documents are ours, without NaN or huge integers)."""


class AuditLog:
    """Appends JSON lines to a file (or stderr for `-`)."""

    def __init__(self, target: str | Path) -> None:
        self.target = str(target)
        self._lock = threading.Lock()  # the gRPC endpoint or a worker thread may write too
        self._file: IO[str] = sys.stderr if self.target == "-" else open(  # noqa: SIM115 - held for the process
            self.target, "a", encoding="utf-8")

    def write(self, record: dict[str, Any]) -> None:
        """One line: `record` as JSON (with `time` first, when it has none)."""
        line = json_line(record if "time" in record else {"time": utc_now(), **record})
        with self._lock:
            self._file.write(line)
            self._file.flush()

    def close(self) -> None:
        if self._file is not sys.stderr:
            self._file.close()
