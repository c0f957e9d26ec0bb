"""`serve --log-format json --audit-log FILE` (with API keys) on the real server process: every log line is
JSON, one line per request with its id (echoed in X-Request-ID), the audit log's lines, no key anywhere."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import tritonclient.http as httpclient
from runtime_bundle import make_request, write_bundle
from servers import Server

from infc_runtime.protocol import to_datatype

T = TypeVar("T")
KEY = "logs-test-key-0123456789"
ADMIN = "logs-admin-key-9876543210"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Path]]:
    root = tmp_path_factory.mktemp("logs")
    bundle = write_bundle(root / "bundle", serving={"max_batch_size": 8, "max_queue_delay_ms": 20})
    audit = root / "audit.jsonl"
    env = {**os.environ, "INFC_API_KEYS": f"ops:{KEY}", "INFC_ADMIN_KEY": ADMIN}
    server = Server([sys.executable, "-m", "infc_runtime", "serve", str(bundle), "--port", "{port}",
                     "--log-format", "json", "--audit-log", str(audit)], root / "server.log", env=env)
    try:
        server.wait_ready()
        yield server, audit
    finally:
        code = server.stop()
    assert code == 0, server.log.read_text()


def lines(path: Path) -> list[dict[str, Any]]:
    """Every line of `path` as JSON (fails on a line that is not)."""
    text = path.read_text()
    assert KEY not in text and ADMIN not in text
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def requests_logged(server: Server) -> list[dict[str, Any]]:
    return [r for r in lines(server.log) if r["logger"] == "infc_runtime.requests"]


def until(read: Callable[[], T], done: Callable[[T], bool], timeout: float = 30.0) -> T:
    """`read()` once `done` holds for it (within `timeout`), else its last value: a request's log and audit lines
    are written after its response is sent, so a client can read the files before they are (a loaded machine)."""
    deadline = time.monotonic() + timeout
    value = read()
    while not done(value) and time.monotonic() < deadline:
        time.sleep(0.05)
        value = read()
    return value


def test_request_lines_carry_the_request_id(served: tuple[Server, Path]) -> None:
    server, _ = served
    auth = {"Authorization": f"Bearer {KEY}"}
    request = make_request(2, seed=3)
    inputs = [httpclient.InferInput(n, list(a.shape), to_datatype(a.dtype)).set_data_from_numpy(a, binary_data=False)
              for n, a in request.items()]
    triton = httpclient.InferenceServerClient(server.url)
    try:
        triton.infer("toy", inputs, request_id="v2-id-7", headers=auth)  # the V2 id, no header
        triton.infer("toy", inputs, request_id="v2-id-8", headers={**auth, "X-Request-ID": "hdr-8"})  # header wins
    finally:
        triton.close()
    with httpx.Client(base_url=f"http://{server.url}") as client:
        echoed = client.get("/v2/models/toy", headers={**auth, "X-Request-ID": "meta-1"})
        assert echoed.status_code == 200 and echoed.headers["x-request-id"] == "meta-1"
        made = client.get("/v2/models/toy", headers=auth).headers["x-request-id"]
        assert len(made) == 16 and int(made, 16) >= 0
        bad = client.get("/v2", headers={**auth, "X-Request-ID": "x" * 200}).headers["x-request-id"]
        assert len(bad) == 16  # too long to be an id: a new one
        denied = client.get("/v2", headers={"X-Request-ID": "no-key-1"})
        assert denied.status_code == 401 and denied.headers["x-request-id"] == "no-key-1"
        body = {"id": "json-9", "inputs": [{"name": n, "shape": list(a.shape), "datatype": to_datatype(a.dtype),
                                            "data": a.ravel().tolist()} for n, a in request.items()]}
        answered = client.post("/v2/models/toy/infer", json=body, headers=auth)
        assert answered.status_code == 200 and answered.headers["x-request-id"] == "json-9"
    expected = {"v2-id-7", "hdr-8", "json-9", "meta-1", made, "no-key-1"}
    logged = until(lambda: {r["request_id"]: r for r in requests_logged(server)}, lambda d: expected <= d.keys())
    for rid in ("v2-id-7", "hdr-8", "json-9"):
        line = logged[rid]
        assert line["level"] == "INFO" and line["status"] == 200 and line["key_id"] == "ops"
        assert (line["model"], line["version"], line["rows"]) == ("toy", "1", 2)
        assert line["batch_size"] >= 2 and line["batch_id"] >= 1
        assert set(line["stages_ms"]) == {"decode", "queue", "pre", "infer", "post", "encode"}
        assert all(v >= 0 for v in line["stages_ms"].values()) and line["duration_ms"] > 0
    assert (logged["meta-1"]["status"], logged["meta-1"]["model"], logged["meta-1"]["path"]) == (
        200, "toy", "/v2/models/toy")
    assert logged[made]["status"] == 200
    assert (logged["no-key-1"]["status"], logged["no-key-1"]["key_id"]) == (401, None)
    text = server.log.read_text()
    assert str(request["offset"][0, 0]) not in text  # never tensor contents


def test_the_whole_log_is_json(served: tuple[Server, Path]) -> None:
    records = lines(served[0].log)
    assert {"infc_runtime", "uvicorn.error"} <= {r["logger"] for r in records}
    assert all({"time", "level", "logger", "message"} <= set(r) for r in records)


def test_audit_lines(served: tuple[Server, Path]) -> None:
    server, audit = served
    with httpx.Client(base_url=f"http://{server.url}") as client:
        client.get("/v2/models/toy/ready", headers={"Authorization": f"Bearer {KEY}"})
        client.post("/v2/repository/models/toy/unload", headers={"Authorization": f"Bearer {KEY}"})  # 403
        client.post("/v2/repository/models/toy/unload", headers={"Authorization": f"Bearer {ADMIN}"})
        client.get("/metrics", headers={"Authorization": "Bearer wrong-key-for-this-server"})
    records = until(lambda: lines(audit), lambda rs: any(r["path"] == "/metrics" for r in rs))  # the last one sent
    assert all(set(r) == {"time", "action", "key_id", "client", "method", "path", "model", "version", "status"}
               for r in records)
    assert {"time": records[0]["time"]} and records[0]["time"].endswith("Z")
    ready = [r for r in records if r["path"] == "/v2/models/toy/ready"][-1]
    assert (ready["action"], ready["key_id"], ready["client"], ready["model"], ready["status"]) == (
        "request", "ops", "127.0.0.1", "toy", 200)
    unloads = [r for r in records if r["path"] == "/v2/repository/models/toy/unload"][-2:]
    assert [(r["action"], r["key_id"], r["status"]) for r in unloads][0] == ("denied", "ops", 403)
    assert unloads[1]["action"] == "admin" and unloads[1]["key_id"] == "admin"
    wrong = [r for r in records if r["path"] == "/metrics"][-1]
    assert (wrong["action"], wrong["key_id"], wrong["status"]) == ("denied", None, 403)
