"""Many models and versions in one real server process: `python -m infc_runtime serve REPO_DIR` / `BUNDLE BUNDLE`.

Two models, two versions of one, a canary split, sticky routing, rollback, a swap under load, one model's
overload beside another, a tampered bundle refused, and tritonclient's repository / config / statistics calls.
"""

from __future__ import annotations

import gzip
import json
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.http as httpclient
from runtime_bundle import make_request, seal, write_bundle
from servers import Server

from infc.drift import make_reference
from infc.spec import Monitor
from infc_runtime.abi import kernel_module
from infc_runtime.drift import REFERENCE_PATH
from infc_runtime.pipeline import load_kernel_module

SHARE = 0.3


def body(seed: int = 0, request_id: str | None = None) -> dict[str, Any]:
    request = make_request(1, seed)
    doc: dict[str, Any] = {"inputs": [
        {"name": "pixels", "datatype": "UINT8", "shape": [1, 4], "data": request["pixels"].ravel().tolist()},
        {"name": "offset", "datatype": "FP32", "shape": [1, 3], "data": request["offset"].ravel().tolist()},
    ]}
    if request_id is not None:
        doc["id"] = request_id
    return doc


def make_repository(root: Path, *, slow_other: bool = True) -> Path:
    """REPO/toy/1, REPO/toy/2 (policy: 1 current, 2 canary), REPO/other/1 (slow: its pre sleeps 0.2 s, queue of
    2), REPO/bad/1 (a file changed after the build)."""
    repo = root / "repo"
    for version in ("1", "2"):
        write_bundle(repo / "toy" / version, name="toy", version=version,
                     serving={"max_queue_delay_ms": 1, "max_body_bytes": 65536})
    other = write_bundle(repo / "other" / "1", name="other", version="1",
                         serving={"max_queue": 2, "max_batch_size": 1, "max_queue_delay_ms": 1})
    if slow_other:
        pre = other / "kernels" / "pre.py"
        pre.write_text(pre.read_text().replace("def run(tensors):", "import time\n\n\ndef run(tensors):\n"
                                                                     "    time.sleep(0.2)"))
        seal(other)
    with_drift(repo / "toy" / "2")
    bad = write_bundle(repo / "bad" / "1", name="bad", version="1")
    (bad / "kernels" / "post.py").write_text((bad / "kernels" / "post.py").read_text() + "\n# changed\n")
    (repo / "toy" / "policy.yaml").write_text(f"current: 1\ncanary: {{version: 2, share: {SHARE}}}\n")
    return repo


def with_drift(bundle: Path) -> Path:
    """`bundle` with a drift reference made of requests through its own pre kernel (as a build makes it), sealed."""
    pre = kernel_module(load_kernel_module(bundle / "kernels" / "pre.py"))
    reference = make_reference(Monitor(sample_rate=1.0), pre, make_request(500, seed=7), None, [])
    (bundle / REFERENCE_PATH).parent.mkdir()
    (bundle / REFERENCE_PATH).write_text(json.dumps(reference))
    return seal(bundle)


def serve(target: list[Path], log: Path) -> Server:
    server = Server([sys.executable, "-m", "infc_runtime", "serve", *map(str, target), "--port", "{port}"], log)
    server.wait_ready()
    return server


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("repository")
    server = serve([make_repository(root)], root / "server.log")
    try:
        yield server
    finally:
        code = server.stop()
    assert code == 0, server.log.read_text()


def versions_answering(http: httpx.Client, n: int, **headers: str) -> Counter[str]:
    seen: Counter[str] = Counter()
    for i in range(n):
        answer = http.post("/v2/models/toy/infer", json=body(i), headers=headers)
        assert answer.status_code == 200, answer.text
        seen[answer.json()["model_version"]] += 1
    return seen


def test_two_models_and_two_versions_at_once(served: Server) -> None:
    with httpx.Client(base_url=f"http://{served.url}") as http:
        for url, version in [("/v2/models/toy/versions/1/infer", "1"), ("/v2/models/toy/versions/2/infer", "2"),
                             ("/v2/models/other/infer", "1"), ("/v2/models/other/versions/1/infer", "1")]:
            answer = http.post(url, json=body(1, "r1"))
            assert answer.status_code == 200, answer.text
            doc = answer.json()
            assert (doc["model_name"], doc["model_version"], doc["id"]) == (url.split("/")[3], version, "r1")
        assert http.get("/v2/models/toy").json()["versions"] == ["1", "2"]
        assert http.post("/v2/models/toy/versions/3/infer", json=body()).status_code == 404
        assert http.post("/v2/models/nope/infer", json=body()).status_code == 404
        metrics = http.get("/metrics").text
    for model, version in [("toy", "1"), ("toy", "2"), ("other", "1")]:  # prometheus_client sorts the labels
        assert f'infc_requests_total{{model="{model}",status="200",version="{version}"}}' in metrics
    assert metrics.count("# TYPE infc_requests_total counter") == 1


def test_drift_per_version_in_the_json_endpoint_and_the_metrics(served: Server) -> None:
    with httpx.Client(base_url=f"http://{served.url}") as http:
        before = http.get("/v2/models/toy/versions/2/drift").json()["rows_sampled"]  # other tests' rows
        for i in range(20):
            assert http.post("/v2/models/toy/versions/2/infer", json=body(100 + i)).status_code == 200
        deadline = time.monotonic() + 10
        while (report := http.get("/v2/models/toy/versions/2/drift").json())["rows_sampled"] < before + 20:
            assert time.monotonic() < deadline, report
            time.sleep(0.02)
        unmonitored = http.get("/v2/models/toy/versions/1/drift")
        current = http.get("/v2/models/toy/drift")  # the current version, 1: built without a reference
        metrics = http.get("/metrics").text
    assert (report["model"], report["version"], report["window_rows"]) == ("toy", "2", before + 20)
    assert [f["name"] for f in report["features"]] != [] and report["features"][0]["psi"] is not None
    assert unmonitored.status_code == current.status_code == 404 and "no drift indicators" in current.json()["error"]
    assert f'infc_drift_window_rows{{model="toy",version="2"}} {before + 20}.0' in metrics
    assert 'infc_drift_psi{feature="x[0]",model="toy",version="2"}' in metrics


def test_a_tampered_bundle_is_never_served_and_the_index_says_why(served: Server) -> None:
    with httpx.Client(base_url=f"http://{served.url}") as http:
        assert http.post("/v2/models/bad/infer", json=body()).status_code == 503
        assert http.post("/v2/models/bad/versions/1/infer", json=body()).status_code == 404
    client = httpclient.InferenceServerClient(served.url)
    try:
        index = {(e["name"], e.get("version", "")): e for e in client.get_model_repository_index()}
    finally:
        client.close()
    assert index["bad", "1"]["state"] == "UNAVAILABLE"
    assert "kernels/post.py" in index["bad", "1"]["reason"]
    assert index["toy", "1"]["state"] == index["toy", "2"]["state"] == index["other", "1"]["state"] == "READY"
    assert "changed" in served.log.read_text() or "sha256" in served.log.read_text()


def test_canary_split_is_within_tolerance_of_its_share(served: Server) -> None:
    n = 400
    with httpx.Client(base_url=f"http://{served.url}") as http:
        seen = versions_answering(http, n)
    sd = (n * SHARE * (1 - SHARE)) ** 0.5
    assert abs(seen["2"] - n * SHARE) < 5 * sd, seen  # 5 standard deviations: fails by chance ~1 in 1.7 million
    assert seen["1"] + seen["2"] == n


def test_routing_sticks_to_the_key_header_and_the_request_id(served: Server) -> None:
    with httpx.Client(base_url=f"http://{served.url}") as http:
        chosen: dict[str, set[str]] = {}
        for user in range(40):
            for seed in range(3):
                answer = http.post("/v2/models/toy/infer", json=body(seed), headers={"X-Routing-Key": f"user-{user}"})
                chosen.setdefault(f"user-{user}", set()).add(answer.json()["model_version"])
        by_id: dict[str, set[str]] = {}
        for request in range(40):
            for seed in range(3):
                doc = http.post("/v2/models/toy/infer", json=body(seed, f"id-{request}")).json()
                by_id.setdefault(doc["id"], set()).add(doc["model_version"])
    for sticky in (chosen, by_id):
        assert all(len(versions) == 1 for versions in sticky.values()), sticky
        assert {v for versions in sticky.values() for v in versions} == {"1", "2"}  # both get some keys


def test_routing_by_the_body_keeps_the_limits_and_takes_compressed_bodies(served: Server) -> None:
    with httpx.Client(base_url=f"http://{served.url}") as http:
        too_big = http.post("/v2/models/toy/infer", content=b" " * 70000, headers={"Content-Type": "application/json"})
        assert too_big.status_code == 413 and "max_body_bytes" in too_big.json()["error"]
        packed = gzip.compress(json.dumps(body(3, "zipped")).encode())
        answer = http.post("/v2/models/toy/infer", content=packed, headers={"Content-Encoding": "gzip"})
        assert answer.status_code == 200 and answer.json()["id"] == "zipped"


def test_one_models_overload_never_blocks_another(served: Server) -> None:
    """`other` sleeps 0.2 s per request with a queue of 2: flooded, it sheds (429) while `toy` answers at once."""
    statuses: Counter[int] = Counter()

    def flood() -> None:
        with httpx.Client(base_url=f"http://{served.url}", timeout=30) as http:
            for _ in range(6):
                statuses[http.post("/v2/models/other/infer", json=body()).status_code] += 1

    threads = [threading.Thread(target=flood) for _ in range(8)]
    for thread in threads:
        thread.start()
    try:
        with httpx.Client(base_url=f"http://{served.url}") as http:
            toy = [http.post("/v2/models/toy/versions/1/infer", json=body(i)).status_code for i in range(50)]
    finally:
        for thread in threads:
            thread.join()
    assert statuses[429] > 0 and statuses[200] > 0, statuses
    assert toy == [200] * 50


def test_stats_and_config_through_tritonclient(served: Server) -> None:
    client = httpclient.InferenceServerClient(served.url)
    try:
        before = client.get_inference_statistics("toy", "2")["model_stats"][0]
        client.infer("toy", [httpclient.InferInput("pixels", [1, 4], "UINT8").set_data_from_numpy(
            np.zeros((1, 4), np.uint8)), httpclient.InferInput("offset", [1, 3], "FP32").set_data_from_numpy(
            np.zeros((1, 3), np.float32))], model_version="2")
        after = client.get_inference_statistics("toy", "2")["model_stats"][0]
        everything = client.get_inference_statistics()["model_stats"]
        config = client.get_model_config("toy")
    finally:
        client.close()
    assert (after["name"], after["version"]) == ("toy", "2")
    assert after["inference_stats"]["success"]["count"] == before["inference_stats"]["success"]["count"] + 1
    assert after["inference_count"] >= before["inference_count"] + 1
    assert after["inference_stats"]["compute_infer"]["ns"] > 0
    assert {(s["name"], s["version"]) for s in everything} == {("toy", "1"), ("toy", "2"), ("other", "1")}
    assert config["name"] == "toy" and config["max_batch_size"] == 8
    assert config["input"] == [{"name": "pixels", "data_type": "TYPE_UINT8", "dims": [4]},
                               {"name": "offset", "data_type": "TYPE_FP32", "dims": [3]}]


def test_rollback_through_the_admin_api(served: Server) -> None:
    """Last in this module: it changes the routes."""
    with httpx.Client(base_url=f"http://{served.url}") as http:
        rollback = http.post("/v2/repository/models/toy/policy", json={"current": "1",
                                                                       "canary": {"version": "2", "share": 0}})
        assert rollback.status_code == 200, rollback.text
        assert versions_answering(http, 60) == Counter({"1": 60})
        bad = http.post("/v2/repository/models/toy/policy", json={"current": "9"})
        assert bad.status_code == 400 and "no version '9'" in bad.json()["error"]
        assert versions_answering(http, 20) == Counter({"1": 20})


def test_several_bundles_in_one_server(tmp_path: Path) -> None:
    a = write_bundle(tmp_path / "a", name="alpha", version="1.0.0")
    b = write_bundle(tmp_path / "b", name="alpha", version="1.1.0")
    c = write_bundle(tmp_path / "c", name="beta", version="3")
    infc = Path(sys.executable).with_name("infc")  # the CLI: `infc serve A B C --port N`
    server = Server([str(infc), "serve", str(a), str(b), str(c), "--port", "{port}"], tmp_path / "server.log")
    server.wait_ready()
    try:
        with httpx.Client(base_url=f"http://{server.url}") as http:
            assert http.post("/v2/models/alpha/infer", json=body()).json()["model_version"] == "1.1.0"
            assert http.post("/v2/models/alpha/versions/1.0.0/infer", json=body()).json()["model_version"] == "1.0.0"
            assert http.post("/v2/models/beta/infer", json=body()).json()["model_name"] == "beta"
    finally:
        assert server.stop() == 0


def test_several_bundles_refuse_a_tampered_one(tmp_path: Path) -> None:
    a = write_bundle(tmp_path / "a", name="alpha", version="1")
    b = write_bundle(tmp_path / "b", name="beta", version="1")
    (b / "model.onnx").write_bytes((b / "model.onnx").read_bytes() + b"\0")
    server = Server([sys.executable, "-m", "infc_runtime", "serve", str(a), str(b), "--port", "{port}"],
                    tmp_path / "server.log")
    assert server.process.wait(timeout=60) == 2
    assert "model.onnx" in server.log.read_text()


@pytest.mark.parametrize("how", ["policy_file", "repository_api"])
def test_swap_under_load_loses_no_request(tmp_path: Path, how: str) -> None:
    """policy.yaml (or the repository API) switches current 1 -> 2 while 4 clients send requests back to back:
    every one is answered 200, the new version takes over, the old one is unloaded."""
    repo = tmp_path / "repo"
    write_bundle(repo / "toy" / "1", name="toy", version="1", serving={"max_queue_delay_ms": 1})
    write_bundle(repo / "toy" / "2", name="toy", version="2", serving={"max_queue_delay_ms": 1})
    policy = repo / "toy" / "policy.yaml"
    policy.write_text("current: 1\n")
    server = serve([repo], tmp_path / "server.log")
    results: list[tuple[float, int, str, float]] = []  # sent at, status, version, seconds
    stop = threading.Event()

    def client() -> None:
        with httpx.Client(base_url=f"http://{server.url}", timeout=30) as http:
            while not stop.is_set():
                started = time.perf_counter()
                try:
                    answer = http.post("/v2/models/toy/infer", json=body())
                    status, version = answer.status_code, answer.json().get("model_version", "")
                except httpx.HTTPError as exc:
                    status, version = -1, type(exc).__name__
                results.append((started, status, version, time.perf_counter() - started))

    threads = [threading.Thread(target=client) for _ in range(4)]
    try:
        for thread in threads:
            thread.start()
        time.sleep(1.0)
        swapped_at = time.perf_counter()
        if how == "policy_file":
            policy.write_text("current: 2\n")
        else:
            with httpx.Client(base_url=f"http://{server.url}", timeout=60) as admin:
                answer = admin.post("/v2/repository/models/toy/policy", json={"current": "2"})
                assert answer.status_code == 200, answer.text
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not any(r[2] == "2" and r[0] > swapped_at + 1 for r in results[-50:]):
            time.sleep(0.05)
        time.sleep(0.5)
        stop.set()
        for thread in threads:
            thread.join()
        with httpx.Client(base_url=f"http://{server.url}") as http:
            index = http.post("/v2/repository/index").json()
    finally:
        stop.set()
        code = server.stop()
    failed = [r for r in results if r[1] != 200]
    before = sorted(r[3] for r in results if r[0] < swapped_at)
    during = sorted(r[3] for r in results if r[0] >= swapped_at)
    figures = {"sent": len(results), "failed": len(failed), "before": len(before), "after_switch": len(during),
               "p99_before_ms": round(1000 * before[int(0.99 * (len(before) - 1))], 2),
               "p99_during_ms": round(1000 * during[int(0.99 * (len(during) - 1))], 2)}
    print(f"swap under load ({how}):", json.dumps(figures))
    assert failed == [], failed[:5]
    assert code == 0
    assert {r[2] for r in results if r[0] < swapped_at} == {"1"}
    assert results[-1][2] == "2"
    assert {(e["version"], e["state"]) for e in index} == {("1", "UNAVAILABLE"), ("2", "READY")}


def index_of(http: httpx.Client) -> dict[str, dict[str, str]]:
    return {e["version"]: e for e in http.post("/v2/repository/index").json()}


def test_a_tampered_new_version_is_refused_and_unload_load_work(tmp_path: Path) -> None:
    """policy.yaml names a version whose bundle was changed: the route stays, the index says why; then the
    repository API unloads the model (503) and loads it again."""
    repo = tmp_path / "repo"
    write_bundle(repo / "toy" / "1", name="toy", version="1")
    bad = write_bundle(repo / "toy" / "2", name="toy", version="2")
    (bad / "kernels" / "pre.py").write_text("raise SystemExit('a tampered kernel ran')\n")
    policy = repo / "toy" / "policy.yaml"
    policy.write_text("current: 1\n")
    server = serve([repo], tmp_path / "server.log")
    try:
        with httpx.Client(base_url=f"http://{server.url}") as http:
            policy.write_text("current: 2\n")
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and index_of(http)["2"]["reason"] == "not in the policy":
                time.sleep(0.05)
            entry = index_of(http)["2"]
            assert entry["state"] == "UNAVAILABLE" and "kernels/pre.py" in entry["reason"], entry
            assert http.post("/v2/models/toy/infer", json=body()).json()["model_version"] == "1"
            loading = http.post("/v2/repository/models/toy/load")
            assert loading.status_code == 400 and "kernels/pre.py" in loading.json()["error"]
            policy.write_text("current: 1\n")
            triton = httpclient.InferenceServerClient(server.url)
            try:
                triton.unload_model("toy")
                assert not triton.is_model_ready("toy")
                assert http.post("/v2/models/toy/infer", json=body()).status_code == 503
                assert index_of(http)["1"]["state"] == "UNAVAILABLE"
                triton.load_model("toy")
                assert triton.is_model_ready("toy")
            finally:
                triton.close()
            assert http.post("/v2/models/toy/infer", json=body()).json()["model_version"] == "1"
            assert index_of(http)["1"]["state"] == "READY"
    finally:
        code = server.stop()
    assert code == 0
    assert "a tampered kernel ran" not in server.log.read_text()
