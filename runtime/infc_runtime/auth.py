"""API keys: `Authorization: Bearer KEY` on every endpoint but liveness and readiness, when keys are configured.

Keys come from the environment variable `INFC_API_KEYS` (comma-separated
`id:key` pairs) and/or `serve --api-keys-file FILE` (one `id:key` a line;
blank lines and lines starting with `#` are skipped); the admin key from
`INFC_ADMIN_KEY`. A key id names the key in the audit and request logs; the
key itself is never logged, nor put in an error message.

| request                                                  | answer |
|----------------------------------------------------------|--------|
| to an open path (`OPEN_PATHS`, unless `--no-open-health`) | served |
| no `Authorization: Bearer ...` header                     | 401    |
| a key that is neither an API key nor the admin key        | 403    |
| an admin path (`is_admin_path`) with an API key           | 403    |
| an admin path when no admin key is configured (but keys)  | 403    |

The admin key is accepted everywhere (key id `admin`). With neither API keys
nor an admin key, nothing is checked (a trusted network: the default bind is
127.0.0.1). With only the admin key, the admin paths need it and the rest is
open. Every key is compared with `hmac.compare_digest` against every
configured key, whichever matches, so the time taken does not tell which.

gRPC (`--grpc-port`) checks the same API keys in the `authorization` metadata
(`grpc_server`); it has no admin calls.
"""

from __future__ import annotations

import hmac
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from . import _json

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["ADMIN_KEY_ENV", "ADMIN_KEY_ID", "API_KEYS_ENV", "KEY_ID_SCOPE", "OPEN_PATHS", "Auth", "KeysError",
           "Keys", "is_admin_path", "load_keys"]

API_KEYS_ENV = "INFC_API_KEYS"
ADMIN_KEY_ENV = "INFC_ADMIN_KEY"
ADMIN_KEY_ID = "admin"
OPEN_PATHS = frozenset({"/v2/health/live", "/v2/health/ready"})
"""Served without a key unless `serve --no-open-health` (probes of Kubernetes and Docker carry no key)."""
ADMIN_PREFIX = "/v2/repository/"
"""Model load/unload and traffic changes live under it: they need the admin key (`is_admin_path`)."""
READ_ONLY_ADMIN = frozenset({"/v2/repository/index"})
"""Under `ADMIN_PREFIX` but only reads: any key will do."""
KEY_ID_SCOPE = "infc.key_id"
"""The ASGI scope key where `Auth` leaves the id of the key a request carried (absent: no key needed)."""
MAX_KEYS_FILE_BYTES = 1 << 20
MIN_KEY_LENGTH = 16

_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_KEY = re.compile(r"[\x21-\x7e]+")  # visible ASCII: what an HTTP header carries without quoting


class KeysError(ValueError):
    """A key configuration that cannot be used; the message names the variable or file:line, never a key."""


@dataclass(frozen=True)
class Keys:
    """The configured keys: `api` maps key id to key; `admin` is the admin key (None: not configured)."""

    api: Mapping[str, str] = field(default_factory=dict)
    admin: str | None = None

    @property
    def enabled(self) -> bool:
        """Whether any key is configured (else nothing is checked)."""
        return bool(self.api) or self.admin is not None

    def describe(self) -> str:
        """For the start log: the key ids, never the keys."""
        ids = ", ".join(sorted(self.api)) or "none"
        return f"API keys: {ids}; admin key: {'set' if self.admin is not None else 'not set'}"


def is_admin_path(path: str) -> bool:
    """Whether `path` changes what is served (load, unload, traffic): it needs the admin key."""
    return path.startswith(ADMIN_PREFIX) and path not in READ_ONLY_ADMIN


def load_keys(environ: Mapping[str, str] | None = None, keys_file: str | Path | None = None) -> Keys:
    """The keys of `$INFC_API_KEYS`, `keys_file` and `$INFC_ADMIN_KEY` (`KeysError` when unusable)."""
    env = os.environ if environ is None else environ
    api: dict[str, str] = {}
    text = env.get(API_KEYS_ENV, "")
    for i, pair in enumerate(p for p in text.split(",") if p.strip()):
        _add(api, pair.strip(), f"${API_KEYS_ENV}: pair {i + 1}")
    if keys_file is not None:
        path = Path(keys_file)
        try:
            with path.open("rb") as f:
                raw = f.read(MAX_KEYS_FILE_BYTES + 1)
        except OSError as exc:
            raise KeysError(f"{path}: cannot read the API keys file ({exc.strerror})") from None
        if len(raw) > MAX_KEYS_FILE_BYTES:
            raise KeysError(f"{path}: larger than {MAX_KEYS_FILE_BYTES} bytes: not an API keys file")
        try:
            lines = raw.decode("utf-8").splitlines()
        except UnicodeDecodeError:
            raise KeysError(f"{path}: not UTF-8 text") from None
        for number, line in enumerate(lines, 1):
            if line.strip() and not line.lstrip().startswith("#"):
                _add(api, line.strip(), f"{path}:{number}")
    admin = env.get(ADMIN_KEY_ENV) or None
    if admin is not None:
        _check_key(admin, f"${ADMIN_KEY_ENV}")
        if any(hmac.compare_digest(admin, key) for key in api.values()):
            raise KeysError(f"${ADMIN_KEY_ENV}: the admin key is also an API key; give it a key of its own")
    return Keys(api, admin)


def _add(api: dict[str, str], pair: str, where: str) -> None:
    key_id, colon, key = pair.partition(":")
    key_id = key_id.strip()
    if not colon:
        raise KeysError(f"{where}: expected id:key")
    if not _ID.fullmatch(key_id):
        raise KeysError(f"{where}: key id must be 1-64 of A-Z a-z 0-9 _ . -")
    if key_id == ADMIN_KEY_ID:
        raise KeysError(f"{where}: key id {ADMIN_KEY_ID!r} is reserved for ${ADMIN_KEY_ENV}")
    if key_id in api:
        raise KeysError(f"{where}: key id {key_id!r} is given twice")
    _check_key(key, f"{where} (key id {key_id!r})")
    if any(hmac.compare_digest(key, other) for other in api.values()):
        raise KeysError(f"{where}: key id {key_id!r} has the same key as another id")
    api[key_id] = key


def _check_key(key: str, where: str) -> None:
    if not _KEY.fullmatch(key):
        raise KeysError(f"{where}: a key must be visible ASCII characters, no spaces")
    if len(key) < MIN_KEY_LENGTH:
        raise KeysError(f"{where}: a key must have at least {MIN_KEY_LENGTH} characters")


class Auth:
    """ASGI middleware: 401 / 403 for HTTP requests without a good key (the table above); the key id of a
    request that carried one is left in `scope[KEY_ID_SCOPE]`."""

    def __init__(self, app: ASGIApp, keys: Keys, open_paths: Iterable[str] = OPEN_PATHS) -> None:
        self.app = app
        self.open_paths = frozenset(open_paths)
        # (id, key as bytes) for every key, the admin key last: compared in full, every one, every time
        self.keys = [(key_id, key.encode()) for key_id, key in keys.api.items()]
        if keys.admin is not None:
            self.keys.append((ADMIN_KEY_ID, keys.admin.encode()))
        self.has_admin = keys.admin is not None
        self.checks_all = bool(keys.api)
        """Whether every endpoint but the open paths needs a key (else only the admin paths do)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.open_paths:
            await self.app(scope, receive, send)
            return
        admin_path = is_admin_path(scope["path"])
        if not admin_path and not self.checks_all:
            await self.app(scope, receive, send)  # only an admin key: it guards the admin paths alone
            return
        token = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                scheme, _, token = value.partition(b" ")
                if scheme.lower() != b"bearer":
                    token = None
                break
        if not token:
            await _deny(scope, receive, send, 401, "Authorization header: expected 'Bearer KEY' (an API key)")
            return
        key_id = self.match(token.strip())
        if key_id is None:
            await _deny(scope, receive, send, 403, "Authorization header: the key is not valid")
            return
        scope[KEY_ID_SCOPE] = key_id
        if admin_path and key_id != ADMIN_KEY_ID:
            why = "the admin key" + ("" if self.has_admin else f" (none configured: set ${ADMIN_KEY_ENV})")
            await _deny(scope, receive, send, 403, f"{scope['path']}: changes what is served; it needs {why}")
            return
        await self.app(scope, receive, send)

    def match(self, token: bytes) -> str | None:
        """The id of the key `token` is, else None; every key is compared in full, in constant time."""
        found = None
        for key_id, key in self.keys:
            if hmac.compare_digest(token, key):
                found = key_id
        return found


async def _deny(scope: Scope, receive: Receive, send: Send, status: int, message: str) -> None:
    """A JSON error, and the connection closed (the body, if any, is not read)."""
    body = _json.dumps({"error": message})
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
               (b"connection", b"close")]
    if status == 401:
        headers.append((b"www-authenticate", b'Bearer realm="infc"'))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
