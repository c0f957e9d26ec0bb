"""The real server: `python -m infc_runtime serve BUNDLE` on a loopback port, real clients.

Every server process is stopped (and if need be killed) in teardown.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.http as httpclient
from prometheus_client.parser import text_string_to_metric_families
from runtime_bundle import OUTPUTS, make_request, seal, write_bundle
from servers import Server
from tritonclient.utils import InferenceServerException

from infc_runtime.pipeline import Pipeline
from infc_runtime.protocol import to_datatype
from infc_runtime.types import Tensors

MODEL = "toy"


def start(tmp_path_factory: pytest.TempPathFactory, name: str, pre_seconds: float = 0.0,
          **serving: Any) -> tuple[Server, Path]:
    """A server of the toy bundle; with `pre_seconds`, its pre-processing sleeps that long per request."""
    root = tmp_path_factory.mktemp(name)
    bundle = write_bundle(root / "bundle", serving=serving, numba=True)
    if pre_seconds:
        pre = bundle / "kernels" / "pre.py"
        pre.write_text(pre.read_text().replace("def run(tensors):", "import time\n\n\ndef run(tensors):\n"
                                                                     f"    time.sleep({pre_seconds})"))
        seal(bundle)
    command = [sys.executable, "-m", "infc_runtime", "serve", str(bundle), "--port", "{port}"]
    return Server(command, root / "server.log"), bundle


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Pipeline]]:
    server, bundle = start(tmp_path_factory, "served", max_batch_size=16, max_queue_delay_ms=20)
    try:
        server.wait_ready()
        yield server, Pipeline.load(bundle)
    finally:
        code = server.stop()
    assert code == 0, server.log.read_text()


@pytest.fixture
def client(served: tuple[Server, Pipeline]) -> Iterator[httpclient.InferenceServerClient]:
    triton = httpclient.InferenceServerClient(served[0].url, concurrency=16)
    try:
        yield triton
    finally:
        triton.close()


def labelled_request(rows: int, seed: int) -> Tensors:
    """A request whose last row picks the class with the non-ASCII label."""
    request = make_request(rows, seed)
    request["offset"][-1] = [0, 0, 20]
    return request


def triton_inputs(request: Tensors, *, binary: bool = True) -> list[httpclient.InferInput]:
    return [
        httpclient.InferInput(name, list(array.shape), to_datatype(array.dtype)).set_data_from_numpy(
            array, binary_data=binary
        )
        for name, array in request.items()
    ]


def assert_same(result: httpclient.InferResult, expected: Tensors, *, text: bool = False) -> None:
    np.testing.assert_array_equal(result.as_numpy("probabilities"), expected["probabilities"])
    np.testing.assert_array_equal(result.as_numpy("class_id"), expected["class_id"])
    labels = expected["label"].tolist()
    assert result.as_numpy("label").tolist() == ([b.decode() for b in labels] if text else labels)


def test_tritonclient_defaults_binary_in_and_out(served: tuple[Server, Pipeline], client: Any) -> None:
    request = labelled_request(5, seed=1)
    result = client.infer(MODEL, triton_inputs(request), request_id="bin-1")
    assert result.get_response()["id"] == "bin-1"
    assert all("binary_data_size" in o["parameters"] for o in result.get_response()["outputs"])
    assert_same(result, served[1].run(request))


def test_tritonclient_json(served: tuple[Server, Pipeline], client: Any) -> None:
    request = labelled_request(3, seed=2)
    outputs = [httpclient.InferRequestedOutput(s.name, binary_data=False) for s in OUTPUTS]
    result = client.infer(MODEL, triton_inputs(request, binary=False), outputs=outputs, model_version="1")
    assert all("data" in o for o in result.get_response()["outputs"])
    assert_same(result, served[1].run(request), text=True)
    only = client.infer(MODEL, triton_inputs(request), outputs=[httpclient.InferRequestedOutput("class_id")])
    assert [o["name"] for o in only.get_response()["outputs"]] == ["class_id"]


def test_metadata_via_tritonclient(client: Any) -> None:
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready(MODEL)
    assert "binary_tensor_data" in client.get_server_metadata()["extensions"]
    meta = client.get_model_metadata(MODEL)
    assert meta["name"] == MODEL and meta["versions"] == ["1"]
    assert meta["inputs"] == [
        {"name": "pixels", "datatype": "UINT8", "shape": [-1, 4]},
        {"name": "offset", "datatype": "FP32", "shape": [-1, 3]},
    ]
    assert [(o["name"], o["datatype"], o["shape"]) for o in meta["outputs"]] == [
        ("probabilities", "FP32", [-1, 3]),
        ("class_id", "INT64", [-1]),
        ("label", "BYTES", [-1]),
    ]
    with pytest.raises(InferenceServerException, match="unknown model 'nope'"):
        client.get_model_metadata("nope")


def batch_histogram(server: Server) -> tuple[float, float]:
    """(batches run, of which single-row) from the server's /metrics."""
    text = httpx.get(f"http://{server.url}/metrics").text
    family = next(f for f in text_string_to_metric_families(text) if f.name == "infc_batch_size")
    samples = {(s.name, s.labels.get("le")): s.value for s in family.samples}
    return samples[("infc_batch_size_count", None)], samples[("infc_batch_size_bucket", "1.0")]


def test_concurrent_requests_are_batched(served: tuple[Server, Pipeline]) -> None:
    server, pipeline = served
    before_count, before_single = batch_histogram(server)
    requests = [make_request(1, seed=100 + i) for i in range(16)]
    # every request is on the wire before the server answers any: they are in the server together
    # (a client that sends one at a time is served one at a time, without the queue delay)
    sockets = [socket.create_connection(("127.0.0.1", server.port), timeout=20) for _ in requests]
    for sock, request in zip(sockets, requests, strict=True):
        body = json.dumps({"inputs": [{"name": n, "shape": list(a.shape), "datatype": to_datatype(a.dtype),
                                       "data": a.ravel().tolist()} for n, a in request.items()]}).encode()
        sock.sendall(f"POST /v2/models/{MODEL}/infer HTTP/1.1\r\nHost: {server.url}\r\n"
                     f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
                     "Connection: close\r\n\r\n".encode() + body)
    for sock, request in zip(sockets, requests, strict=True):
        with sock, sock.makefile("rb") as answer:
            reply = answer.read()
        assert reply.startswith(b"HTTP/1.1 200"), reply[:200]
        outputs = {o["name"]: o["data"] for o in json.loads(reply.split(b"\r\n\r\n", 1)[1])["outputs"]}
        np.testing.assert_allclose(outputs["probabilities"], pipeline.run(request)["probabilities"].ravel(), rtol=1e-6)
    count, single = batch_histogram(server)
    batches, batched = count - before_count, (count - before_count) - (single - before_single)
    assert batches < len(requests) and batched >= 1, f"{batches} batches for {len(requests)} requests"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "request body: malformed JSON"),
        ({"inputs": [{"name": "pixels", "shape": [1, 4], "datatype": "UINT8", "data": [1, 2, 3, 4]}]}, "inputs:"),
        ({"inputs": [{"name": "pixel", "shape": [1, 4], "datatype": "UINT8", "data": [0] * 4}]}, "inputs[0].name"),
        ({"inputs": [{"name": "pixels", "shape": [1, 4], "datatype": "FP32", "data": [0] * 4}]}, "inputs[0].datatype"),
        ({"inputs": [{"name": "pixels", "shape": [1, 5], "datatype": "UINT8", "data": [0] * 5}]}, "inputs[0].shape"),
        ({"inputs": [{"name": "pixels", "shape": [1, 4], "datatype": "UINT8", "data": [0] * 3}]}, "inputs[0].data"),
    ],
    ids=["json", "missing", "name", "datatype", "shape", "data"],
)
def test_bad_requests_are_4xx_naming_the_field(served: tuple[Server, Pipeline], body: Any, message: str) -> None:
    server = served[0]
    with httpx.Client(base_url=f"http://{server.url}") as http:
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        response = http.post(f"/v2/models/{MODEL}/infer", content=content)
        assert response.status_code == 400
        assert response.json()["error"].startswith(message), response.json()
        assert http.get("/v2/health/ready").status_code == 200


def test_tritonclient_sees_the_errors_and_the_server_goes_on(served: tuple[Server, Pipeline], client: Any) -> None:
    request = make_request(2)
    bad_shape = httpclient.InferInput("pixels", [2, 2, 2], "UINT8").set_data_from_numpy(
        request["pixels"].reshape(2, 2, 2)
    )
    with pytest.raises(InferenceServerException, match=r"inputs\[0\].shape: input 'pixels' takes \[-1, 4\]") as err:
        client.infer(MODEL, [bad_shape, *triton_inputs({"offset": request["offset"]})])
    assert err.value.status() == "400"
    request["offset"][0, 0] = np.nan
    with pytest.raises(InferenceServerException, match="offset must be finite"):
        client.infer(MODEL, triton_inputs(request))
    with pytest.raises(InferenceServerException, match="unknown model 'other'"):
        client.infer("other", triton_inputs(make_request(1)))
    assert_same(client.infer(MODEL, triton_inputs(make_request(2))), served[1].run(make_request(2)))


def _arrived(server: Server) -> tuple[float, float]:
    """(infer requests in flight, infer requests answered) from the server's /metrics."""
    families = {f.name: f for f in text_string_to_metric_families(httpx.get(f"http://{server.url}/metrics").text)}
    answered = sum(s.value for s in families["infc_requests"].samples if s.name == "infc_requests_total")
    return families["infc_inflight_requests"].samples[0].value, answered


def test_sigterm_finishes_in_flight_requests(tmp_path_factory: pytest.TempPathFactory) -> None:
    # requests sit in the batcher for up to a second: they are in flight when SIGTERM lands. A lone request runs
    # at once; its slow pre-processing (0.3 s) keeps the others queued behind it even when they trickle in
    server, bundle = start(tmp_path_factory, "sigterm", pre_seconds=0.3, max_batch_size=64,
                           max_queue_delay_ms=1000)
    try:
        server.wait_ready()
        requests = [make_request(2, seed=i) for i in range(6)]

        def infer(request: Tensors) -> httpx.Response:
            doc = {
                "inputs": [
                    {"name": k, "shape": list(v.shape), "datatype": to_datatype(v.dtype), "data": v.ravel().tolist()}
                    for k, v in request.items()
                ]
            }
            return httpx.post(f"http://{server.url}/v2/models/{MODEL}/infer", json=doc, timeout=20)

        with ThreadPoolExecutor(len(requests)) as pool:
            futures = [pool.submit(infer, r) for r in requests]
            deadline = time.monotonic() + 10
            # every request reached the server; those that arrived together wait in the batcher (a lone first
            # one may have run at once, without the delay)
            while (counts := _arrived(server))[0] + counts[1] < len(requests) or counts[0] < 1:
                assert time.monotonic() < deadline, f"requests never reached the server: {counts}"
                time.sleep(0.01)
            server.process.send_signal(signal.SIGTERM)
            responses = [f.result() for f in futures]
        assert [r.status_code for r in responses] == [200] * len(requests)
        expected = Pipeline.load(bundle)
        for response, request in zip(responses, requests, strict=True):
            out = {o["name"]: o["data"] for o in response.json()["outputs"]}
            assert out["class_id"] == expected.run(request)["class_id"].tolist()
        assert server.process.wait(timeout=15) == 0
    finally:
        server.stop()


def test_bundle_that_does_not_load_exits_2_with_one_line(tmp_path: Path) -> None:
    broken = write_bundle(tmp_path / "bundle")
    (broken / "model.onnx").write_bytes(b"not a model")
    for target in (tmp_path / "missing", broken):
        done = subprocess.run(
            [sys.executable, "-m", "infc_runtime", "serve", str(target)], capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 2
        assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1, done.stderr
        assert "Traceback" not in done.stderr
