"""API keys and the admin key, against the real server process (`serve` with INFC_API_KEYS / --api-keys-file /
INFC_ADMIN_KEY) with real clients (httpx, tritonclient.http). Every server is stopped in teardown."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from runtime_bundle import make_request, write_bundle
from servers import Server, free_port
from tritonclient.utils import InferenceServerException

from infc_runtime.pipeline import Pipeline
from infc_runtime.protocol import to_datatype

ALICE, BOB = "alice-key-0123456789abcdef", "bob-key-fedcba9876543210"
FILE_KEY = "carol-key-from-the-file-000"
ADMIN = "admin-key-0f1e2d3c4b5a69788796"
SECRETS = (ALICE, BOB, FILE_KEY, ADMIN)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_bundle(tmp_path_factory.mktemp("auth") / "bundle")


@pytest.fixture(scope="module")
def served(bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("keys")
    keys_file = root / "keys.txt"
    keys_file.write_text(f"# the file's keys\n\ncarol:{FILE_KEY}\n")
    env = {**os.environ, "INFC_API_KEYS": f"alice:{ALICE}, bob:{BOB}", "INFC_ADMIN_KEY": ADMIN}
    server = Server([sys.executable, "-m", "infc_runtime", "serve", str(bundle), "--port", "{port}",
                     "--api-keys-file", str(keys_file), "--log-level", "debug", "--access-log"],
                    root / "server.log", env=env)
    try:
        server.wait_ready()  # readiness is open: probes carry no key
        yield server
    finally:
        code = server.stop()
    assert code == 0, server.log.read_text()
    log = server.log.read_text()
    assert "API keys: alice, bob, carol; admin key: set" in log
    assert not any(secret in log for secret in SECRETS)  # keys are never logged, whatever was asked


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_without_a_key_401_with_a_wrong_one_403(served: Server) -> None:
    with httpx.Client(base_url=f"http://{served.url}") as client:
        assert client.get("/v2/health/live").status_code == 200
        assert client.get("/v2/health/ready").status_code == 200
        for path in ("/v2", "/v2/models/toy", "/metrics"):
            missing = client.get(path)
            assert missing.status_code == 401, path
            assert missing.headers["www-authenticate"] == 'Bearer realm="infc"'
            assert "Bearer KEY" in missing.json()["error"]
            assert client.get(path, headers={"Authorization": f"Basic {ALICE}"}).status_code == 401
            wrong = client.get(path, headers=bearer(ALICE[:-1] + "X"))
            assert wrong.status_code == 403 and wrong.json() == {"error": "Authorization header: the key is not valid"}
            for key in (ALICE, BOB, FILE_KEY, ADMIN):
                assert client.get(path, headers=bearer(key)).status_code == 200, path
        posted = client.post("/v2/models/toy/infer", content=b"{}")
        assert posted.status_code == 401  # before its body is read or parsed
        # the drift endpoint is a model endpoint like the others (this bundle has no reference: 404 past the key)
        assert client.get("/v2/models/toy/drift").status_code == 401
        assert client.get("/v2/models/toy/drift", headers=bearer(BOB)).status_code == 404


def test_tritonclient_with_the_key_in_its_headers(served: Server, bundle: Path) -> None:
    request = make_request(3, seed=4)
    inputs = [httpclient.InferInput(name, list(a.shape), to_datatype(a.dtype)).set_data_from_numpy(a)
              for name, a in request.items()]
    client = httpclient.InferenceServerClient(served.url)
    try:
        result = client.infer("toy", inputs, headers=bearer(BOB))
        np.testing.assert_array_equal(result.as_numpy("class_id"), Pipeline.load(bundle).run(request)["class_id"])
        assert client.is_server_ready()  # open
        assert client.get_model_metadata("toy", headers=bearer(FILE_KEY))["name"] == "toy"
        with pytest.raises(InferenceServerException, match="Bearer KEY"):
            client.infer("toy", inputs)
        with pytest.raises(InferenceServerException, match="the key is not valid"):
            client.infer("toy", inputs, headers=bearer("not-a-key-of-this-server"))
        with pytest.raises(InferenceServerException, match="Bearer KEY"):
            client.get_model_metadata("toy")
    finally:
        client.close()


def test_admin_paths_need_the_admin_key(served: Server) -> None:
    with httpx.Client(base_url=f"http://{served.url}") as client:
        for path in ("/v2/repository/models/toy/load", "/v2/repository/models/toy/unload"):
            assert client.post(path).status_code == 401
            refused = client.post(path, headers=bearer(ALICE))
            assert refused.status_code == 403 and "needs the admin key" in refused.json()["error"]
            assert client.post(path, headers=bearer(ADMIN)).status_code not in (401, 403)  # through to the app
        # the index only reads: any key
        assert client.post("/v2/repository/index", headers=bearer(ALICE)).status_code not in (401, 403)
        assert client.post("/v2/repository/index").status_code == 401


def serve_exit(bundle: Path, *options: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "infc_runtime", "serve", str(bundle), "--port", "1", *options],
                          env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(("keys", "expected"), [
    ("alice", "$INFC_API_KEYS: pair 1: expected id:key"),
    (f"alice:{ALICE},alice:{BOB}", "$INFC_API_KEYS: pair 2: key id 'alice' is given twice"),
    ("alice:short", "at least 16 characters"),
    (f"admin:{ALICE}", "reserved for $INFC_ADMIN_KEY"),
])
def test_unusable_keys_exit_2_naming_where_never_the_key(bundle: Path, keys: str, expected: str) -> None:
    done = serve_exit(bundle, env={"INFC_API_KEYS": keys})
    assert done.returncode == 2
    assert expected in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert ALICE not in done.stderr and BOB not in done.stderr


def test_keys_file_errors_name_the_line(bundle: Path, tmp_path: Path) -> None:
    keys_file = tmp_path / "keys.txt"
    keys_file.write_text(f"# ok\nalice:{ALICE}\nbob {BOB}\n")
    done = serve_exit(bundle, "--api-keys-file", str(keys_file))
    assert done.returncode == 2 and f"{keys_file}:3: expected id:key" in done.stderr
    assert BOB not in done.stderr
    missing = serve_exit(bundle, "--api-keys-file", str(tmp_path / "nope.txt"))
    assert missing.returncode == 2 and "nope.txt: cannot read the API keys file" in missing.stderr
    same = serve_exit(bundle, env={"INFC_API_KEYS": f"alice:{ALICE}", "INFC_ADMIN_KEY": ALICE})
    assert same.returncode == 2 and "the admin key is also an API key" in same.stderr


def test_grpc_checks_the_same_keys_and_audits_and_logs_every_call(bundle: Path, tmp_path: Path) -> None:
    grpc_port = free_port()
    audit = tmp_path / "audit.jsonl"
    server = Server([sys.executable, "-m", "infc_runtime", "serve", str(bundle), "--port", "{port}",
                     "--grpc-port", str(grpc_port), "--audit-log", str(audit), "--log-format", "json"],
                    tmp_path / "server.log",
                    env={**os.environ, "INFC_API_KEYS": f"alice:{ALICE}", "INFC_ADMIN_KEY": ADMIN})
    request = make_request(2, seed=5)
    inputs = [grpcclient.InferInput(name, list(a.shape), to_datatype(a.dtype)).set_data_from_numpy(a)
              for name, a in request.items()]
    try:
        server.wait_ready()
        client = grpcclient.InferenceServerClient(f"127.0.0.1:{grpc_port}")
        try:
            assert client.is_server_live() and client.is_server_ready()  # open, as over HTTP
            for key in (ALICE, ADMIN):
                result = client.infer("toy", inputs, headers={"authorization": f"Bearer {key}",
                                                              "x-request-id": f"grpc-call-{key == ADMIN}"})
                np.testing.assert_array_equal(result.as_numpy("class_id"),
                                              Pipeline.load(bundle).run(request)["class_id"])
            with pytest.raises(InferenceServerException, match="UNAUTHENTICATED.*Bearer KEY"):
                client.infer("toy", inputs)
            with pytest.raises(InferenceServerException, match="PERMISSION_DENIED.*not valid"):
                client.infer("toy", inputs, headers={"authorization": f"Bearer {BOB}"})
            with pytest.raises(InferenceServerException, match="UNAUTHENTICATED"):
                client.get_model_metadata("toy")
        finally:
            client.close()
    finally:
        assert server.stop() == 0, server.log.read_text()
    assert ALICE not in server.log.read_text() and BOB not in server.log.read_text()
    calls = [r for r in map(json.loads, audit.read_text().splitlines()) if r["method"] == "gRPC"]
    infers = [(r["action"], r["key_id"], r["status"], r["model"], r["version"]) for r in calls
              if r["path"].endswith("/ModelInfer")]
    assert infers == [("request", "alice", "OK", "toy", "1"), ("request", "admin", "OK", "toy", "1"),
                      ("denied", None, "UNAUTHENTICATED", None, None),  # a refused call's body is never read
                      ("denied", None, "PERMISSION_DENIED", None, None)]
    assert all(r["client"] == "127.0.0.1" for r in calls)
    assert not any(key in audit.read_text() for key in (ALICE, BOB, ADMIN))
    lines = [json.loads(line) for line in server.log.read_text().splitlines() if line.startswith("{")]
    logged = [(r["request_id"], r["key_id"], r["status"]) for r in lines
              if r.get("method") == "gRPC" and r["path"].endswith("/ModelInfer")]
    assert logged[:2] == [("grpc-call-False", "alice", "OK"), ("grpc-call-True", "admin", "OK")]
    assert [status for _, _, status in logged[2:]] == ["UNAUTHENTICATED", "PERMISSION_DENIED"]


def test_a_repository_needs_the_admin_key_to_change_traffic(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    for version in ("1", "2"):
        write_bundle(repo / "toy" / version, name="toy", version=version)
    (repo / "toy" / "policy.yaml").write_text("current: 1\n")
    audit = tmp_path / "audit.jsonl"
    server = Server([sys.executable, "-m", "infc_runtime", "serve", str(repo), "--port", "{port}",
                     "--audit-log", str(audit)], tmp_path / "server.log",
                    env={**os.environ, "INFC_API_KEYS": f"alice:{ALICE}", "INFC_ADMIN_KEY": ADMIN})
    try:
        server.wait_ready()
        with httpx.Client(base_url=f"http://{server.url}") as client:
            assert client.post("/v2/repository/index", headers=bearer(ALICE)).status_code == 200  # reading: any key
            switch = {"current": "2"}
            assert client.post("/v2/repository/models/toy/policy", json=switch).status_code == 401
            assert client.post("/v2/repository/models/toy/policy", json=switch, headers=bearer(ALICE)
                               ).status_code == 403
            assert client.post("/v2/repository/models/toy/policy", json=switch, headers=bearer(ADMIN)
                               ).status_code == 200
            answer = client.post("/v2/models/toy/infer", headers=bearer(ALICE), json={"inputs": [
                {"name": "pixels", "datatype": "UINT8", "shape": [1, 4], "data": [1, 2, 3, 4]},
                {"name": "offset", "datatype": "FP32", "shape": [1, 3], "data": [0, 0, 0]}]})
            assert answer.status_code == 200 and answer.json()["model_version"] == "2"
    finally:
        assert server.stop() == 0, server.log.read_text()
    records = [json.loads(line) for line in audit.read_text().splitlines()]
    changes = [(r["action"], r["key_id"], r["status"]) for r in records if r["path"].endswith("/policy")]
    assert changes == [("denied", None, 401), ("denied", "alice", 403), ("admin", "admin", 200)]
    infer = [r for r in records if r["path"] == "/v2/models/toy/infer"]
    assert [(r["key_id"], r["model"], r["version"], r["status"]) for r in infer] == [("alice", "toy", "2", 200)]
