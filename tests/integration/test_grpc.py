"""KServe V2 over gRPC: the real server (`serve --grpc-port`) on loopback ports, `tritonclient.grpc` unmodified.

The toy bundle here takes a BYTES input besides its UINT8 and FP32 ones (`note`:
its length is added to the first offset), so every kind of input travels. Each
answer is compared with the HTTP endpoint's for the same request.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from prometheus_client.parser import text_string_to_metric_families
from runtime_bundle import make_request, seal, write_bundle
from servers import Server, free_port
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from infc_runtime.http_server import SHUTDOWN_TIMEOUT_S
from infc_runtime.protocol import to_datatype
from infc_runtime.types import Tensors

MODEL = "toy"
OUTPUT_NAMES = ("probabilities", "class_id", "label")
NOTE_PRE = '''    offset = offset + np.array([[len(n), 0, 0] for n in tensors["note"]], dtype=np.float32)
    return {"x": tensors["pixels"]'''


def noted_bundle(root: Path, **serving: Any) -> Path:
    """The toy bundle with a third input, `note` (BYTES), whose length shifts the first logit."""
    bundle = write_bundle(root, serving=serving or None)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["inputs"].append({"name": "note", "dtype": "bytes", "shape": []})
    (bundle / "manifest.json").write_text(json.dumps(manifest, indent=2))
    pre = bundle / "kernels" / "pre.py"
    pre.write_text(pre.read_text().replace('    return {"x": tensors["pixels"]', NOTE_PRE))
    return seal(bundle)


def start(bundle: Path, log: Path) -> tuple[Server, str]:
    grpc_port = free_port()
    command = [sys.executable, "-m", "infc_runtime", "serve", str(bundle), "--port", "{port}",
               "--grpc-port", str(grpc_port)]
    server = Server(command, log)
    server.wait_ready()
    return server, f"127.0.0.1:{grpc_port}"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, str]]:
    root = tmp_path_factory.mktemp("grpc")
    server, address = start(noted_bundle(root / "bundle", max_batch_size=16, max_elements=4000), root / "server.log")
    try:
        yield server, address
    finally:
        code = server.stop()
    assert code == 0, server.log.read_text()


@pytest.fixture
def client(served: tuple[Server, str]) -> Iterator[grpcclient.InferenceServerClient]:
    triton = grpcclient.InferenceServerClient(served[1])
    try:
        yield triton
    finally:
        triton.close()


def noted_request(rows: int, seed: int) -> Tensors:
    request = make_request(rows, seed)
    note = np.empty(rows, dtype=object)
    note[:] = [("żółw" * i).encode() for i in range(rows)]  # non-ASCII, and one empty
    return {**request, "note": note}


def grpc_inputs(request: Tensors) -> list[grpcclient.InferInput]:
    return [grpcclient.InferInput(name, list(array.shape), to_datatype(array.dtype)).set_data_from_numpy(array)
            for name, array in request.items()]


def http_result(server: Server, request: Tensors) -> dict[str, np.ndarray]:
    inputs = [httpclient.InferInput(name, list(array.shape), to_datatype(array.dtype)).set_data_from_numpy(array)
              for name, array in request.items()]
    http = httpclient.InferenceServerClient(server.url)
    try:
        result = http.infer(MODEL, inputs)
    finally:
        http.close()
    return {name: result.as_numpy(name) for name in OUTPUT_NAMES}


def assert_same(got: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> None:
    for name in OUTPUT_NAMES:
        assert got[name].dtype == expected[name].dtype, name
        np.testing.assert_array_equal(got[name], expected[name], err_msg=name)


def failure(call: Any) -> InferenceServerException:
    with pytest.raises(InferenceServerException) as caught:
        call()
    return caught.value


def test_health_and_metadata(client: grpcclient.InferenceServerClient) -> None:
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready(MODEL) and client.is_model_ready(MODEL, "1")
    assert "binary_tensor_data" in client.get_server_metadata(as_json=True)["extensions"]
    meta = client.get_model_metadata(MODEL, as_json=True)
    assert meta["name"] == MODEL and meta["versions"] == ["1"] and meta["platform"] == "infc"
    assert [(t["name"], t["datatype"], t["shape"]) for t in meta["inputs"]] == [
        ("pixels", "UINT8", ["-1", "4"]), ("offset", "FP32", ["-1", "3"]), ("note", "BYTES", ["-1"])]
    assert [(t["name"], t["datatype"]) for t in meta["outputs"]] == [
        ("probabilities", "FP32"), ("class_id", "INT64"), ("label", "BYTES")]
    error = failure(lambda: client.get_model_metadata("nope"))
    assert error.status() == "StatusCode.NOT_FOUND" and "name: unknown model 'nope'" in error.message()
    error = failure(lambda: client.is_model_ready(MODEL, "2"))
    assert error.status() == "StatusCode.NOT_FOUND" and "version: model 'toy' has no version '2'" in error.message()


def test_infer_fp32_uint8_bytes_equals_http(served: tuple[Server, str],
                                            client: grpcclient.InferenceServerClient) -> None:
    request = noted_request(5, seed=1)
    result = client.infer(MODEL, grpc_inputs(request), request_id="g-1")
    assert result.get_response().id == "g-1"
    got = {name: result.as_numpy(name) for name in OUTPUT_NAMES}
    assert_same(got, http_result(served[0], request))
    shifted = noted_request(5, seed=1)
    shifted["note"][:] = [b""] * 5  # the note reaches the model: without it the first class loses weight
    other = client.infer(MODEL, grpc_inputs(shifted)).as_numpy("probabilities")
    assert (other[1:, 0] < got["probabilities"][1:, 0]).all()
    only = client.infer(MODEL, grpc_inputs(request), outputs=[grpcclient.InferRequestedOutput("label")])
    assert [o.name for o in only.get_response().outputs] == ["label"]
    assert only.as_numpy("label").tolist() == got["label"].tolist()


def test_concurrent_calls_share_the_batcher(served: tuple[Server, str],
                                            client: grpcclient.InferenceServerClient) -> None:
    requests = [noted_request(1, seed=100 + i) for i in range(16)]
    done: list[Any] = [None] * len(requests)
    finished = threading.Semaphore(0)

    def callback(i: int) -> Any:
        def record(result: Any, error: Any) -> None:
            done[i] = error or result
            finished.release()
        return record

    for i, request in enumerate(requests):
        client.async_infer(MODEL, grpc_inputs(request), callback(i))
    for _ in requests:
        assert finished.acquire(timeout=30)
    for request, result in zip(requests, done, strict=True):
        assert_same({name: result.as_numpy(name) for name in OUTPUT_NAMES}, http_result(served[0], request))
    text = httpx.get(f"http://{served[0].url}/metrics").text
    family = next(f for f in text_string_to_metric_families(text) if f.name == "infc_requests")
    assert sum(s.value for s in family.samples if s.labels.get("status") == "200") >= len(requests)


def test_typed_contents_equal_raw(client: grpcclient.InferenceServerClient, served: tuple[Server, str]) -> None:
    request = noted_request(3, seed=7)
    typed = service_pb2.ModelInferRequest(model_name=MODEL)
    pixels = typed.inputs.add(name="pixels", datatype="UINT8", shape=[3, 4])
    pixels.contents.uint_contents.extend(request["pixels"].ravel().tolist())
    offset = typed.inputs.add(name="offset", datatype="FP32", shape=[3, 3])
    offset.contents.fp32_contents.extend(request["offset"].ravel().tolist())
    note = typed.inputs.add(name="note", datatype="BYTES", shape=[3])
    note.contents.bytes_contents.extend(request["note"].tolist())
    with grpc.insecure_channel(served[1]) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        response = stub.ModelInfer(typed, timeout=30)
        expected = http_result(served[0], request)
        assert [o.name for o in response.outputs] == list(OUTPUT_NAMES)
        probabilities = np.frombuffer(response.raw_output_contents[0], dtype="<f4").reshape(3, 3)
        np.testing.assert_array_equal(probabilities, expected["probabilities"])
        np.testing.assert_array_equal(np.frombuffer(response.raw_output_contents[1], dtype="<i8"),
                                      expected["class_id"])

        pixels.contents.uint_contents[0] = 256  # does not fit UINT8
        with pytest.raises(grpc.RpcError) as caught:
            stub.ModelInfer(typed, timeout=30)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "inputs[0].contents.uint_contents: a value is out of range for UINT8" in caught.value.details()
        pixels.contents.uint_contents.pop()
        with pytest.raises(grpc.RpcError) as caught:
            stub.ModelInfer(typed, timeout=30)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "inputs[0].contents.uint_contents: 11 values do not fill shape [3, 4]" in caught.value.details()


@pytest.mark.parametrize(
    ("change", "code", "message"),
    [
        ({"pixels": np.zeros((5, 5), np.uint8)}, "INVALID_ARGUMENT",
         "inputs[0].shape: input 'pixels' takes [-1, 4], got [5, 5]"),
        ({"pixels": np.zeros((4, 4), np.uint8)}, "INVALID_ARGUMENT",
         "inputs[1].shape[0]: batch size 5 differs from 4 of input 'pixels'"),
        ({"extra": np.zeros((5, 1), np.float32)}, "INVALID_ARGUMENT", "inputs[3].name: unknown input 'extra'"),
        ({"offset": np.full((5, 3), np.nan, np.float32)}, "INVALID_ARGUMENT", "inputs: offset must be finite"),
        ({"pixels": np.zeros((2000, 4), np.uint8), "offset": np.zeros((2000, 3), np.float32),
          "note": np.array([b""] * 2000, dtype=object)}, "RESOURCE_EXHAUSTED", "(serving.max_elements)"),
    ],
    ids=["wrong-shape", "batch-mismatch", "unknown-input", "non-finite", "max-elements"],
)
def test_bad_requests(client: grpcclient.InferenceServerClient, change: Tensors, code: str, message: str) -> None:
    request = {**noted_request(5, seed=3), **change}
    error = failure(lambda: client.infer(MODEL, grpc_inputs(request)))
    assert error.status() == f"StatusCode.{code}", error.message()
    assert message in error.message()


def test_declared_size_larger_than_the_raw_content(client: grpcclient.InferenceServerClient) -> None:
    inputs = grpc_inputs(noted_request(1, seed=4))
    inputs[1].set_shape([1000, 3])  # 12 bytes sent for a declared 12,000
    inputs[0].set_shape([1000, 4])
    inputs[2].set_shape([1000])
    error = failure(lambda: client.infer(MODEL, inputs))
    assert error.status() == "StatusCode.INVALID_ARGUMENT"
    assert "raw_input_contents[0]: 4 bytes do not hold shape [1000, 4] of UINT8 (4000 bytes)" in error.message()
    request = noted_request(1, seed=4)  # its note is empty: 4 bytes (the length)
    note, pixels, offset = grpc_inputs({"note": request.pop("note"), **request})
    note.set_shape([100000])  # BYTES: 100,000 elements declared in 4 bytes, each needs at least 4
    error = failure(lambda: client.infer(MODEL, [note, pixels, offset]))
    assert error.status() == "StatusCode.INVALID_ARGUMENT"
    assert "raw_input_contents[0]: 100000 BYTES elements declared, but the 4 bytes given hold at most 1" \
        in error.message()


def test_unknown_model_and_version(client: grpcclient.InferenceServerClient) -> None:
    inputs = grpc_inputs(noted_request(1, seed=5))
    error = failure(lambda: client.infer("nope", inputs))
    assert error.status() == "StatusCode.NOT_FOUND" and "model_name: unknown model 'nope'" in error.message()
    error = failure(lambda: client.infer(MODEL, inputs, model_version="9"))
    assert error.status() == "StatusCode.NOT_FOUND" and "model_version:" in error.message()



def test_the_timeout_parameter(client: grpcclient.InferenceServerClient) -> None:
    inputs = grpc_inputs(noted_request(1, seed=5))
    assert client.infer(MODEL, inputs, timeout=5_000_000).as_numpy("class_id").shape == (1,)  # microseconds
    error = failure(lambda: client.infer(MODEL, inputs, timeout=-1))
    assert error.status() == "StatusCode.INVALID_ARGUMENT" and "parameters.timeout:" in error.message()

def test_a_message_over_max_body_bytes_is_refused(tmp_path: Path) -> None:
    server, address = start(noted_bundle(tmp_path / "bundle", max_body_bytes=2000), tmp_path / "server.log")
    try:
        with grpcclient.InferenceServerClient(address) as small:
            assert small.infer(MODEL, grpc_inputs(noted_request(2, seed=6))).as_numpy("label").shape == (2,)
            error = failure(lambda: small.infer(MODEL, grpc_inputs(noted_request(200, seed=6))))
            assert error.status() == "StatusCode.RESOURCE_EXHAUSTED"
    finally:
        assert server.stop() == 0, server.log.read_text()


def test_without_grpc_port_grpc_is_never_imported(tmp_path: Path) -> None:
    bundle = noted_bundle(tmp_path / "bundle")
    code = ("import sys; from infc_runtime import serve, app, http_server; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('grpc', 'google')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=bundle)
    assert out.stdout.strip() == "[]", out.stdout


def slowed(bundle: Path, seconds: float) -> Path:
    pre = bundle / "kernels" / "pre.py"
    pre.write_text(pre.read_text().replace("def run(tensors):", "import time\n\n\ndef run(tensors):\n"
                                                                 f"    time.sleep({seconds})"))
    return seal(bundle)


def inflight_and_answered(server: Server) -> tuple[float, float]:
    text = httpx.get(f"http://{server.url}/metrics").text
    values = {(s.name, s.labels.get("status")): s.value
              for f in text_string_to_metric_families(text) for s in f.samples}
    return values[("infc_inflight_requests", None)], values.get(("infc_requests_total", "200"), 0.0)


def test_sigterm_while_calls_are_in_flight_loses_none(tmp_path: Path) -> None:
    bundle = noted_bundle(tmp_path / "bundle", max_batch_size=4, timeout_ms=30000)
    server, address = start(slowed(bundle, 0.05), tmp_path / "server.log")  # 24 requests take over a second
    count = 24
    outcomes: list[str] = []
    finished = threading.Semaphore(0)

    def record(result: Any, error: Any) -> None:
        outcomes.append("OK" if error is None else str(error.status()))
        finished.release()

    triton = grpcclient.InferenceServerClient(address)
    try:
        for i in range(count):
            triton.async_infer(MODEL, grpc_inputs(noted_request(1, seed=i)), record)
        while sum(inflight_and_answered(server)) < count:  # until every call has reached the server
            assert server.process.poll() is None, server.log.read_text()
            time.sleep(0.01)
        in_flight, _ = inflight_and_answered(server)
        server.process.send_signal(signal.SIGTERM)
        for _ in range(count):
            assert finished.acquire(timeout=30)
        assert server.process.wait(timeout=SHUTDOWN_TIMEOUT_S + 2.5) == 0, server.log.read_text()
    finally:
        triton.close()
        server.stop()
    assert outcomes == ["OK"] * count, (in_flight, outcomes)
    assert in_flight > 0, "every call was answered before SIGTERM: nothing was tested"


def test_sigterm_stops_grpc_taking_calls_while_http_drains(tmp_path: Path) -> None:
    bundle = noted_bundle(tmp_path / "bundle", max_batch_size=1, timeout_ms=30000)
    server, address = start(slowed(bundle, 0.25), tmp_path / "server.log")  # 6 HTTP requests: 1.5 s of work
    answered: list[int] = []

    def post() -> None:
        answered.append(len(http_result(server, noted_request(1, seed=1))["label"]))

    posts = [threading.Thread(target=post) for _ in range(6)]
    try:
        for thread in posts:
            thread.start()
        while inflight_and_answered(server)[0] < 6:  # all six have reached the server
            time.sleep(0.01)
        server.process.send_signal(signal.SIGTERM)
        while "gRPC: stopping" not in server.log.read_text():
            assert server.process.poll() is None, server.log.read_text()
            time.sleep(0.01)
        with grpcclient.InferenceServerClient(address) as late:
            error = failure(lambda: late.infer(MODEL, grpc_inputs(noted_request(1, seed=2)), client_timeout=10))
        draining = any(t.is_alive() for t in posts)
        for thread in posts:
            thread.join(timeout=30)
        assert server.process.wait(timeout=SHUTDOWN_TIMEOUT_S + 2.5) == 0, server.log.read_text()
    finally:
        server.stop()
    assert draining, "HTTP had drained before the gRPC call: nothing was tested"
    assert error.status() == "StatusCode.UNAVAILABLE", error
    assert answered == [1] * 6  # HTTP requests in flight are answered


def test_a_full_queue_is_resource_exhausted(tmp_path: Path) -> None:
    bundle = noted_bundle(tmp_path / "bundle", max_batch_size=1, max_queue=1, timeout_ms=30000)
    server, address = start(slowed(bundle, 0.5), tmp_path / "server.log")  # warm-up: 2 batches, 1 s
    outcomes: list[str] = []
    finished = threading.Semaphore(0)

    def record(result: Any, error: Any) -> None:
        outcomes.append("OK" if error is None else f"{error.status()}: {error.message()}")
        finished.release()

    try:
        with grpcclient.InferenceServerClient(address) as triton:
            for i in range(6):  # one runs (0.5 s), one waits, the others find the queue full
                triton.async_infer(MODEL, grpc_inputs(noted_request(1, seed=i)), record)
            for _ in range(6):
                assert finished.acquire(timeout=30)
    finally:
        assert server.stop() == 0, server.log.read_text()
    full = [o for o in outcomes if o != "OK"]
    assert full and all(o.startswith("StatusCode.RESOURCE_EXHAUSTED: the queue is full") for o in full), outcomes


def test_a_failed_warm_up_is_unavailable(tmp_path: Path) -> None:
    bundle = noted_bundle(tmp_path / "bundle")
    pre = bundle / "kernels" / "pre.py"
    pre.write_text(pre.read_text().replace("def run(tensors):", "def run(tensors):\n"
                                                                 "    raise ValueError('kernel is broken')"))
    address = f"127.0.0.1:{free_port()}"
    command = [sys.executable, "-m", "infc_runtime", "serve", str(seal(bundle)), "--port", "{port}",
               "--grpc-port", address.rsplit(":", 1)[1]]
    server = Server(command, tmp_path / "server.log")
    try:
        with grpcclient.InferenceServerClient(address) as triton:
            deadline = time.monotonic() + 60
            while True:  # until warm-up has failed (a call during it waits for it, then fails in the kernel)
                assert time.monotonic() < deadline and server.process.poll() is None, server.log.read_text()
                try:
                    triton.infer(MODEL, grpc_inputs(noted_request(1, seed=0)))
                except InferenceServerException as error:
                    if error.status() == "StatusCode.UNAVAILABLE" and "not ready: warm-up failed" in error.message():
                        break
                time.sleep(0.05)
            assert triton.is_server_live() and not triton.is_server_ready() and not triton.is_model_ready(MODEL)
    finally:
        assert server.stop() == 0, server.log.read_text()
