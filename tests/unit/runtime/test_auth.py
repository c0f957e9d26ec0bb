"""`infc_runtime.auth`: the key configuration (its errors name where, never the key) and the middleware's table,
in process over an ASGI responder (the real server process: tests/integration/test_auth.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from starlette.types import Receive, Scope, Send

from infc_runtime.auth import ADMIN_KEY_ID, KEY_ID_SCOPE, Auth, Keys, KeysError, is_admin_path, load_keys

A, B, ADMIN = "a" * 16, "b" * 20, "z" * 16


def test_keys_from_the_environment_and_a_file(tmp_path: Path) -> None:
    keys_file = tmp_path / "keys"
    keys_file.write_text(f"# comment\n\n  b:{B}  \n")
    keys = load_keys({"INFC_API_KEYS": f" a:{A} ,", "INFC_ADMIN_KEY": ADMIN}, keys_file)
    assert keys == Keys({"a": A, "b": B}, ADMIN) and keys.enabled
    assert keys.describe() == "API keys: a, b; admin key: set"
    assert not load_keys({}).enabled


@pytest.mark.parametrize(("environ", "message"), [
    ({"INFC_API_KEYS": f"a:{A},b:{A}"}, "pair 2: key id 'b' has the same key as another id"),
    ({"INFC_API_KEYS": f"a b:{A}"}, "pair 1: key id must be"),
    ({"INFC_API_KEYS": "a:" + "x" * 15 + " "}, "at least 16 characters"),
    ({"INFC_API_KEYS": "a:" + "é" * 16}, "visible ASCII"),
    ({"INFC_ADMIN_KEY": "short"}, "$INFC_ADMIN_KEY: a key must have at least 16"),
])
def test_unusable_keys_name_where_never_the_key(environ: dict[str, str], message: str) -> None:
    with pytest.raises(KeysError, match=message.replace("$", r"\$")) as caught:
        load_keys(environ)
    assert A not in str(caught.value) and "x" * 15 not in str(caught.value)


def test_a_keys_file_is_bounded(tmp_path: Path) -> None:
    big = tmp_path / "big"
    big.write_bytes(b"#" * (1 << 20) + b"\n")
    with pytest.raises(KeysError, match="larger than 1048576 bytes"):
        load_keys({}, big)


def test_admin_paths() -> None:
    assert is_admin_path("/v2/repository/models/m/load") and is_admin_path("/v2/repository/models/m/unload")
    assert not is_admin_path("/v2/repository/index") and not is_admin_path("/v2/models/m/infer")


async def nothing(scope: Scope, receive: Receive, send: Send) -> None:
    raise AssertionError("replaced in `status`")


def status(app: Auth, path: str, key: str | None = None, method: str = "GET") -> tuple[int, str | None]:
    """The status of one request through `app`, and the key id it reached the app with."""
    seen: dict[str, str | None] = {}

    async def inner(scope: Scope, receive: Receive, send: Send) -> None:
        seen["key_id"] = scope.get(KEY_ID_SCOPE)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    app.app = inner

    async def go() -> int:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            headers = {} if key is None else {"Authorization": f"Bearer {key}"}
            return (await client.request(method, path, headers=headers)).status_code

    return asyncio.run(go()), seen.get("key_id")


def test_the_table() -> None:
    both = Auth(nothing, Keys({"a": A}, ADMIN))
    assert status(both, "/v2/health/live") == (200, None)
    assert status(both, "/v2") == (401, None)
    assert status(both, "/v2", A) == (200, "a")
    assert status(both, "/v2", ADMIN) == (200, ADMIN_KEY_ID)
    assert status(both, "/v2", B) == (403, None)
    assert status(both, "/v2", A[:-1]) == (403, None)  # a prefix is not the key
    assert status(both, "/v2/repository/models/m/load", A, "POST")[0] == 403
    assert status(both, "/v2/repository/models/m/load", ADMIN, "POST") == (200, ADMIN_KEY_ID)
    assert status(both, "/v2/repository/index", A, "POST") == (200, "a")


def test_only_an_admin_key_guards_the_admin_paths_alone() -> None:
    admin_only = Auth(nothing, Keys({}, ADMIN))
    assert status(admin_only, "/v2/models/m/infer", method="POST") == (200, None)
    assert status(admin_only, "/v2/repository/models/m/unload", method="POST")[0] == 401
    assert status(admin_only, "/v2/repository/models/m/unload", A, "POST")[0] == 403
    assert status(admin_only, "/v2/repository/models/m/unload", ADMIN, "POST")[0] == 200


def test_keys_without_an_admin_key_refuse_the_admin_paths() -> None:
    no_admin = Auth(nothing, Keys({"a": A}))
    assert status(no_admin, "/v2/repository/models/m/load", A, "POST")[0] == 403


def test_health_behind_a_key_when_asked() -> None:
    closed = Auth(nothing, Keys({"a": A}), open_paths=())
    assert status(closed, "/v2/health/ready")[0] == 401
    assert status(closed, "/v2/health/ready", A)[0] == 200
