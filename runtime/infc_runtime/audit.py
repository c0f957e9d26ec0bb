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

import datetime
import json
import sys
import threading
from pathlib import Path
from typing import IO, Any

__all__ = ["AuditLog", "utc_now"]


def utc_now() -> str:
    """The time now, UTC, ISO 8601 with milliseconds (`2026-11-30T05:12:01.123Z`)."""
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class AuditLog:
    """Appends JSON lines to a file (or stderr for `-`)."""

    def __init__(self, target: str | Path) -> None:
        self.target = str(target)
        self._lock = threading.Lock()  # the gRPC endpoint or a worker thread may write too
        self._file: IO[str] = sys.stderr if self.target == "-" else open(  # noqa: SIM115 - held for the process
            self.target, "a", encoding="utf-8")

    def write(self, record: dict[str, Any]) -> None:
        """One line: `record` as JSON (with `time` first, when it has none)."""
        doc = record if "time" in record else {"time": utc_now(), **record}
        line = json.dumps(doc, separators=(",", ":")) + "\n"
        with self._lock:
            self._file.write(line)
            self._file.flush()

    def close(self) -> None:
        if self._file is not sys.stderr:
            self._file.close()
