"""The response cache and the live cost gauges, in real server processes with real HTTP clients.

One bundle served alone (`serving.cache`, a price in its manifest): the second identical request is a hit (the
hits counter +1, no batch run, the same answer, also when asked for as binary), the live cost gauges are
positive after requests. A repository: the same input after a swap to a version with another model gives the
new version's answer, never the cached one, and an entry past its `ttl_s` is a miss.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.http as httpclient
from runtime_bundle import make_request, seal, write_bundle
from servers import Server

CACHE = {"max_entries": 16, "ttl_s": 600}


def body(seed: int) -> dict[str, Any]:
    request = make_request(1, seed)
    return {"inputs": [
        {"name": "pixels", "datatype": "UINT8", "shape": [1, 4], "data": request["pixels"].ravel().tolist()},
        {"name": "offset", "datatype": "FP32", "shape": [1, 3], "data": request["offset"].ravel().tolist()},
    ]}


def priced(root: Path, *, cache: dict[str, Any], name: str = "toy", version: str = "1", scale: int = 1) -> Path:
    """The test bundle with a response cache and a price (`deploy: {usd_per_hour: 0.085, vcpus: 2}`); `scale`
    multiplies its pixels (another model: other answers to the same request)."""
    bundle = write_bundle(root, name=name, version=version, serving={"cache": cache, "max_queue_delay_ms": 1})
    if scale != 1:
        pre = bundle / "kernels" / "pre.py"
        pre.write_text(pre.read_text().replace("np.float32(1 / 255)", f"np.float32({scale} / 255)"))
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["cost"] = {"usd_per_hour": 0.085, "vcpus": 2, "instance": None, "source": "deploy.usd_per_hour"}
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    return seal(bundle)


def serve(target: Path, log: Path) -> Server:
    server = Server([sys.executable, "-m", "infc_runtime", "serve", str(target), "--port", "{port}"], log)
    server.wait_ready()
    return server


def sample(metrics: str, name: str, **labels: str) -> float | None:
    """The value of `name{labels}` in a Prometheus text exposition (None when absent)."""
    for line in metrics.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


@pytest.fixture(scope="module")
def alone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("cached")
    server = serve(priced(root / "toy", cache=CACHE), root / "server.log")
    try:
        yield server
    finally:
        code = server.stop()
    assert code == 0, server.log.read_text()


def test_a_repeated_request_is_answered_from_the_cache_without_a_batch(alone: Server) -> None:
    with httpx.Client(base_url=f"http://{alone.url}") as http:
        first = http.post("/v2/models/toy/infer", json=body(7))
        before = http.get("/metrics").text
        second = http.post("/v2/models/toy/infer", json={**body(7), "id": "again"})
        after = http.get("/metrics").text
    assert first.status_code == second.status_code == 200, (first.text, second.text)
    assert second.json()["outputs"] == first.json()["outputs"] and second.json()["id"] == "again"
    labels = {"model": "toy", "version": "1"}
    assert sample(after, "infc_cache_hits_total", **labels) == sample(before, "infc_cache_hits_total", **labels) + 1
    assert sample(after, "infc_cache_misses_total", **labels) == sample(before, "infc_cache_misses_total", **labels)
    assert sample(after, "infc_batch_size_count", **labels) == sample(before, "infc_batch_size_count", **labels)
    assert sample(after, "infc_cache_entries", **labels) >= 1
    assert sample(after, "infc_cache_bytes", **labels) > 0


def test_a_hit_is_encoded_as_its_own_request_asks_binary_or_json(alone: Server) -> None:
    client = httpclient.InferenceServerClient(alone.url)
    labels = {"model": "toy", "version": "1"}
    try:
        request = make_request(1, 8)
        inputs = [httpclient.InferInput("pixels", [1, 4], "UINT8"), httpclient.InferInput("offset", [1, 3], "FP32")]
        inputs[0].set_data_from_numpy(request["pixels"])
        inputs[1].set_data_from_numpy(request["offset"])
        wanted = [httpclient.InferRequestedOutput("probabilities", binary_data=True)]
        miss = client.infer("toy", inputs, outputs=wanted).as_numpy("probabilities")
        before = sample(httpx.get(f"http://{alone.url}/metrics").text, "infc_cache_hits_total", **labels)
        json_hit = client.infer("toy", inputs, outputs=[httpclient.InferRequestedOutput(
            "probabilities", binary_data=False)]).as_numpy("probabilities")
        after = sample(httpx.get(f"http://{alone.url}/metrics").text, "infc_cache_hits_total", **labels)
    finally:
        client.close()
    np.testing.assert_allclose(json_hit, miss, rtol=1e-6)
    assert before is not None and after == before + 1


def test_live_cost_gauges_are_positive_after_requests(alone: Server) -> None:
    with httpx.Client(base_url=f"http://{alone.url}") as http:
        http.get("/metrics")  # starts the window
        for seed in range(100, 160):  # distinct: each one runs the model
            assert http.post("/v2/models/toy/infer", json=body(seed)).status_code == 200
        metrics = http.get("/metrics").text
    cpu = sample(metrics, "infc_cpu_seconds_per_request", model="toy", version="1")
    usd = sample(metrics, "infc_cost_usd_per_1000_requests", model="toy", version="1")
    assert cpu is not None and cpu > 0, metrics
    # the price is USD 0.085 per hour for 2 vCPUs: 1,000 requests cost their CPU seconds at that rate
    assert usd == pytest.approx(cpu * 1000 * 0.085 / 2 / 3600, rel=1e-6)


def test_a_version_swap_never_answers_from_the_old_versions_cache(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    priced(repo / "toy" / "1", cache=CACHE)
    priced(repo / "toy" / "2", cache=CACHE, version="2", scale=3)
    priced(repo / "brief" / "1", cache={"max_entries": 4, "ttl_s": 0.2}, name="brief")
    (repo / "toy" / "policy.yaml").write_text("current: 1\n")
    server = serve(repo, tmp_path / "server.log")
    try:
        with httpx.Client(base_url=f"http://{server.url}") as http:
            answers = [http.post("/v2/models/toy/infer", json=body(3)).json() for _ in range(2)]
            assert [a["model_version"] for a in answers] == ["1", "1"]
            assert sample(http.get("/metrics").text, "infc_cache_hits_total", model="toy", version="1") == 1
            stats = http.get("/v2/models/toy/versions/1/stats").json()["model_stats"][0]["inference_stats"]
            assert (stats["cache_hit"]["count"], stats["cache_miss"]["count"]) == (1, 1)  # Triton's fields
            swapped = http.post("/v2/repository/models/toy/policy", json={"current": "2"})
            assert swapped.status_code == 200, swapped.text
            after = http.post("/v2/models/toy/infer", json=body(3)).json()
            assert after["model_version"] == "2"
            assert after["outputs"] != answers[0]["outputs"]  # version 2's model, not version 1's kept answer
            metrics = http.get("/metrics").text
            assert sample(metrics, "infc_cache_misses_total", model="toy", version="2") == 1
            assert sample(metrics, "infc_cache_hits_total", model="toy", version="2") == 0
            # back to 1: loaded again, so a new cache; the answer is 1's, computed again
            assert http.post("/v2/repository/models/toy/policy", json={"current": "1"}).status_code == 200
            back = http.post("/v2/models/toy/infer", json=body(3)).json()
            assert back["model_version"] == "1" and back["outputs"] == answers[0]["outputs"]
            assert sample(http.get("/metrics").text, "infc_cache_hits_total", model="toy", version="1") == 0

            # ttl_s 0.2: an answer kept longer is a miss, computed again
            assert http.post("/v2/models/brief/infer", json=body(5)).status_code == 200
            time.sleep(0.3)
            assert http.post("/v2/models/brief/infer", json=body(5)).status_code == 200
            metrics = http.get("/metrics").text
            assert sample(metrics, "infc_cache_hits_total", model="brief", version="1") == 0
            assert sample(metrics, "infc_cache_misses_total", model="brief", version="1") == 2
    finally:
        code = server.stop()
    assert code == 0, server.log.read_text()
