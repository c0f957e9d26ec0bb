"""The uvicorn settings: the fast path where installed, the fallback without it, the access log only when asked."""

from __future__ import annotations

import logging

import pytest

from infc_runtime import http_server


async def app(scope: object, receive: object, send: object) -> None:  # never called
    raise AssertionError


def test_the_fast_path_is_used_where_installed() -> None:
    assert http_server.FAST_HTTP and http_server.FAST_LOOP  # the test environment installs both
    config = http_server.config(app, host="127.0.0.1", port=0, log_level="info")
    assert config.http is http_server.FastConnection
    assert config.loop == "uvloop"


def test_without_the_fast_path_h11_and_asyncio(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http_server, "HttpToolsProtocol", None)
    monkeypatch.setattr(http_server, "FAST_LOOP", False)
    config = http_server.config(app, host="127.0.0.1", port=0, log_level="info")
    assert config.http is http_server.Connection
    assert config.loop == "asyncio"
    slow = http_server.config(app, host="127.0.0.1", port=0, log_level="info", fast=False)
    assert slow.http is http_server.Connection


def test_no_access_log_unless_asked() -> None:
    quiet = http_server.config(app, host="127.0.0.1", port=0, log_level="info")
    assert quiet.access_log is False
    assert not logging.getLogger("uvicorn.access").handlers  # uvicorn removed them: no line per request
    loud = http_server.config(app, host="127.0.0.1", port=0, log_level="info", access_log=True)
    assert loud.access_log is True
    assert logging.getLogger("uvicorn.access").handlers
