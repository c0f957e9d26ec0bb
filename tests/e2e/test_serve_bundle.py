"""Build -> serve.py as a process on loopback -> tritonclient; the server tells the truth and survives bad input."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.http as httpclient
from examples import DIGITS_DIR
from prometheus_client.parser import text_string_to_metric_families
from servers import Server, serving

from infc_runtime.pipeline import Pipeline


@pytest.fixture(scope="module")
def server(digits_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with serving(digits_bundle, tmp_path_factory.mktemp("serve") / "server.log") as srv:
        yield srv


def _images(n: int, start: int = 0) -> np.ndarray:
    return np.load(DIGITS_DIR / "val.npz")["image"][start:start + n]


def _samples(server: Server, name: str, labels: dict[str, str]) -> float:
    text = httpx.get(f"http://{server.url}/metrics").text
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


@pytest.mark.parametrize("binary", [True, False])
def test_tritonclient_matches_the_in_process_pipeline(server: Server, digits_bundle: Path, binary: bool) -> None:
    images = _images(16, start=100)
    client = httpclient.InferenceServerClient(server.url)
    inp = httpclient.InferInput("image", list(images.shape), "UINT8")
    inp.set_data_from_numpy(images, binary_data=binary)
    outputs = [httpclient.InferRequestedOutput(n, binary_data=binary) for n in ("scores", "labels")]
    result = client.infer("digits", [inp], outputs=outputs)
    expected = Pipeline.load(digits_bundle).run({"image": images})
    # tritonclient returns BYTES as bytes from binary outputs and as str from JSON ones
    got = [[b.decode() if isinstance(b, bytes) else b for b in row] for row in result.as_numpy("labels")]
    assert got == [[b.decode() for b in row] for row in expected["labels"]]
    np.testing.assert_allclose(result.as_numpy("scores"), expected["scores"], rtol=1e-6)


def test_metadata_describes_the_pipeline(server: Server) -> None:
    meta = httpclient.InferenceServerClient(server.url).get_model_metadata("digits")
    assert meta["inputs"] == [{"name": "image", "datatype": "UINT8", "shape": [-1, 8, 8]}]
    assert {o["name"]: o["datatype"] for o in meta["outputs"]} == {"scores": "FP32", "labels": "BYTES"}


def test_metrics_count_requests(server: Server) -> None:
    before = _samples(server, "infc_requests_total", {"model": "digits", "version": "1.0.0", "status": "200"})
    batches = _samples(server, "infc_batch_size_count", {"model": "digits", "version": "1.0.0"})
    client = httpclient.InferenceServerClient(server.url)
    for i in range(3):
        inp = httpclient.InferInput("image", [1, 8, 8], "UINT8")
        inp.set_data_from_numpy(_images(1, start=i))
        client.infer("digits", [inp])
    assert _samples(server, "infc_requests_total",
                    {"model": "digits", "version": "1.0.0", "status": "200"}) == before + 3
    assert _samples(server, "infc_batch_size_count", {"model": "digits", "version": "1.0.0"}) >= batches + 1
    assert _samples(server, "infc_request_duration_seconds_count", {"model": "digits", "version": "1.0.0"}) >= 3


BAD = [
    ("/v2/models/nope/infer", {"inputs": []}, 404, "nope"),
    ("/v2/models/digits/infer", {"inputs": [{"name": "img", "shape": [1, 8, 8], "datatype": "UINT8",
                                              "data": [0] * 64}]}, 400, "img"),
    ("/v2/models/digits/infer", {"inputs": [{"name": "image", "shape": [1, 8, 7], "datatype": "UINT8",
                                              "data": [0] * 56}]}, 400, "shape"),
    ("/v2/models/digits/infer", {"inputs": [{"name": "image", "shape": [1, 8, 8], "datatype": "FP32",
                                              "data": [0.0] * 64}]}, 400, "datatype"),
    ("/v2/models/digits/infer", {"inputs": [{"name": "image", "shape": [1, 8, 8], "datatype": "UINT8",
                                              "data": [0] * 10}]}, 400, "inputs[0].data"),
    ("/v2/models/digits/infer", b"{not json", 400, "JSON"),
]


@pytest.mark.parametrize(("path", "body", "status", "mentions"), BAD)
def test_bad_requests_get_4xx_and_the_server_goes_on(server: Server, path: str, body: object, status: int,
                                                     mentions: str) -> None:
    url = f"http://{server.url}{path}"
    response = httpx.post(url, content=body) if isinstance(body, bytes) else httpx.post(url, json=body)
    assert response.status_code == status
    assert mentions in response.json()["error"]
    ok = httpx.post(f"http://{server.url}/v2/models/digits/infer",
                    json={"inputs": [{"name": "image", "shape": [1, 8, 8], "datatype": "UINT8", "data": [0] * 64}]})
    assert ok.status_code == 200
    assert {o["name"] for o in ok.json()["outputs"]} == {"scores", "labels"}
