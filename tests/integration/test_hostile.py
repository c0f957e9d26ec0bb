"""Hostile requests against the real server (issue 8, items 1, 2, 3, 6, 8, 9), plus a fuzz of random bodies.

Three bundles, each served by `python -m infc_runtime serve` on a loopback port:
`toy` (tests/runtime_bundle: numeric inputs), `rows` (JSON rows in a BYTES
tensor, read by the compiler's generated `features` kernel) and `images` (PNG
files in a BYTES tensor, the generated `decode` + `resize` kernel). Their
`serving` limits are small, so each case crosses them with little data.

For every case: the answer is the expected 4xx (never 5xx, never a hang: every
client has a timeout), `/v2/health/live` keeps answering while it runs (probed
from another thread; the bound is a generous "did not freeze", not a timing),
the server's peak RSS (VmHWM after resetting it through /proc/PID/clear_refs)
stays within the case's bound over the RSS before it, and a known-good request
is answered identically afterwards.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import select
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper
from PIL import Image
from runtime_bundle import write_bundle
from servers import Server

from infc.bundle import content_hash, is_measured
from infc.kernels.codegen import generate_module
from infc.kernels.graph import resolve
from infc_runtime.types import TensorSpec

MB = 1 << 20
LIVE_BOUND_S = 1.5
"""The slowest `/v2/health/live` answer accepted while a case runs: it must not freeze."""
STALL_TIMEOUT_S = 30
"""The app's per-chunk body read timeout (`infc_runtime.app.BODY_TIMEOUT_S`)."""

TOY_SERVING = {"max_body_bytes": 2 * MB, "max_decompressed_bytes": MB, "max_rows": 256, "max_elements": 1000}
ROWS_SERVING = {"max_body_bytes": MB, "max_decompressed_bytes": MB, "max_rows": 64, "max_elements": 64}
IMAGES_SERVING = {"max_batch_size": 4, "max_pixels": 1_000_000}
FIELDS = ["a", "b", "c"]
ROW = {"a": 1.5, "b": -2.0, "c": 0.25}

POST = '''"""Post kernel: softmax and argmax of the model's logits."""

import numpy as np


def run(tensors):
    logits = tensors["logits"]
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return {"probabilities": (e / e.sum(axis=1, keepdims=True)).astype(np.float32),
            "class_id": logits.argmax(axis=1).astype(np.int64)}
'''


# -- bundles and servers -------------------------------------------------------------------------


def linear_model(name: str, shape: tuple[int, ...]) -> bytes:
    """logits [N, 2] = flatten(input) @ W: a model that takes whatever the pre kernel makes."""
    size = int(np.prod(shape))
    weights = np.linspace(-1, 1, size * 2, dtype=np.float32).reshape(size, 2)
    graph = helper.make_graph(
        [helper.make_node("Flatten", [name], ["flat"], axis=1), helper.make_node("MatMul", ["flat", "W"], ["logits"])],
        "linear", [helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N", *shape])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 2])],
        initializer=[numpy_helper.from_array(weights, "W")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    return model.SerializeToString()


def seal(root: Path) -> Path:
    """List every file's sha256 and the content hash in the manifest, as a build does."""
    manifest = json.loads((root / "manifest.json").read_text())
    hashes = {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
              for p in sorted(root.rglob("*")) if p.is_file() and p.name != "manifest.json"}
    manifest["files"] = {rel: h for rel, h in hashes.items() if not is_measured(rel)}
    manifest["measurements"] = {"files": {rel: h for rel, h in hashes.items() if is_measured(rel)}}
    manifest["content_hash"] = content_hash(manifest)
    (root / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return root


def bytes_bundle(root: Path, name: str, steps: list[tuple[str, dict[str, Any]]], serving: dict[str, Any]) -> Path:
    """A bundle whose one input is a BYTES tensor, pre-processed by the compiler's generated kernel."""
    source = TensorSpec(name, "bytes", ())

    def fail(i: int, issue: Exception) -> None:
        raise AssertionError(f"step {i}: {issue}")

    flow = resolve(steps, [source], fail)
    (model_input,) = flow.end
    generate_module("pre", flow, name=name, version="1").write(root / "kernels")
    (root / "kernels" / "post.py").write_text(POST)
    (root / "model.onnx").write_bytes(linear_model(model_input.name, model_input.shape))
    manifest = {
        "name": name, "version": "1", "inputs": [source.to_dict()],
        "outputs": [{"name": "probabilities", "dtype": "float32", "shape": [2]},
                    {"name": "class_id", "dtype": "int64", "shape": []}],
        "model": {"path": "model.onnx"}, "kernels": {"pre": "kernels/pre.py", "post": "kernels/post.py"},
        "session": {"intra_op_num_threads": 1},
        "serving": {"max_batch_size": 8, "max_queue_delay_ms": 1, "timeout_ms": 5000, **serving},
    }
    (root / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return seal(root)


@dataclass
class Served:
    """A real server process, its model, and what a known-good request gets from it."""

    server: Server
    model: str
    good: Callable[[], httpx.Response]
    expected: bytes = b""

    @property
    def base(self) -> str:
        return f"http://{self.server.url}"

    @property
    def pid(self) -> int:
        return self.server.process.pid

    def url(self, path: str = "infer") -> str:
        return f"{self.base}/v2/models/{self.model}/{path}"


def png(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("L", (width, height), 7).save(out, format="PNG", optimize=True)
    return out.getvalue()


def binary_body(inputs: list[dict[str, Any]], payload: bytes) -> tuple[bytes, dict[str, str]]:
    header = json.dumps({"inputs": inputs}).encode()
    return header + payload, {"Inference-Header-Content-Length": str(len(header))}


def bytes_payload(*items: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(i)) + i for i in items)


def rows_body(*rows: str) -> bytes:
    return json.dumps({"inputs": [{"name": "rows", "shape": [len(rows)], "datatype": "BYTES",
                                   "data": list(rows)}]}).encode()


def toy_doc(rows: int = 1, **change: Any) -> dict[str, Any]:
    pixels = {"name": "pixels", "shape": [rows, 4], "datatype": "UINT8", "data": [7] * (4 * rows)}
    offset = {"name": "offset", "shape": [rows, 3], "datatype": "FP32", "data": [0.5] * (3 * rows)}
    return {"inputs": [{**pixels, **change}, offset]}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Served]]:
    root = tmp_path_factory.mktemp("hostile")
    bundles = {
        "toy": write_bundle(root / "toy", serving=TOY_SERVING),
        "rows": bytes_bundle(root / "rows", "rows", [("features", {"fields": FIELDS})], ROWS_SERVING),
        "images": bytes_bundle(root / "images", "png", [("decode", {"mode": "L"}), ("resize", {"size": [8, 8]}),
                                                         ("to_float", {"scale": 1 / 255})], IMAGES_SERVING),
    }
    names = {"toy": "toy", "rows": "rows", "images": "png"}
    servers = {key: Server([sys.executable, "-m", "infc_runtime", "serve", str(bundle), "--port", "{port}"],
                           root / f"{key}.log") for key, bundle in bundles.items()}
    toy_good = json.dumps(toy_doc(2)).encode()
    image_good, image_headers = binary_body(
        [{"name": "png", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": len(png(9, 5)) + 4}}],
        bytes_payload(png(9, 5)))
    try:
        for server in servers.values():
            server.wait_ready()
        out = {key: Served(server, names[key], lambda: httpx.Response(0)) for key, server in servers.items()}
        out["toy"].good = lambda: httpx.post(out["toy"].url(), content=toy_good, timeout=10)
        out["rows"].good = lambda: httpx.post(out["rows"].url(), content=rows_body(json.dumps(ROW)), timeout=10)
        out["images"].good = lambda: httpx.post(out["images"].url(), content=image_good, headers=image_headers,
                                                timeout=10)
        for s in out.values():
            first = s.good()
            assert first.status_code == 200, first.text
            s.expected = first.content
        yield out
    finally:
        codes = {key: server.stop() for key, server in servers.items()}
    assert codes == {"toy": 0, "rows": 0, "images": 0}, {k: s.log.read_text()[-2000:] for k, s in servers.items()}
    for key, server in servers.items():
        assert "Traceback" not in server.log.read_text(), (key, server.log.read_text()[-3000:])


# -- what every case checks -----------------------------------------------------------------------


def kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


class Watch:
    """While a case runs: `/v2/health/live` probed every 50 ms (slowest answer kept), peak RSS from a reset."""

    def __init__(self, s: Served) -> None:
        self.s = s
        self.slowest = 0.0
        self.failures: list[str] = []
        self._stop = threading.Event()

    def __enter__(self) -> Watch:
        Path(f"/proc/{self.s.pid}/clear_refs").write_text("5")  # VmHWM := VmRSS
        self.rss_before = kb(self.s.pid, "VmRSS")
        self._thread = threading.Thread(target=self._probe, daemon=True)
        self._thread.start()
        return self

    def _probe(self) -> None:
        with httpx.Client(timeout=10) as client:
            while not self._stop.is_set():
                started = time.perf_counter()
                try:
                    if client.get(f"{self.s.base}/v2/health/live").status_code != 200:
                        self.failures.append("not 200")
                except httpx.HTTPError as exc:
                    self.failures.append(repr(exc))
                self.slowest = max(self.slowest, time.perf_counter() - started)
                self._stop.wait(0.05)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=15)
        self.peak_mb = (kb(self.s.pid, "VmHWM") - self.rss_before) / 1024

    def check(self, bound_mb: float) -> None:
        assert not self.failures and self.slowest < LIVE_BOUND_S, (self.failures, self.slowest)
        assert self.peak_mb < bound_mb, f"peak RSS +{self.peak_mb:.0f} MB over the {bound_mb} MB bound"
        again = self.s.good()
        assert again.status_code == 200 and again.content == self.s.expected, "the known-good request changed"


def answered(response: httpx.Response, status: int, *needles: str) -> str:
    """The error message of a JSON error response with `status`, checked to hold every needle."""
    assert response.status_code == status, response.text[:500]
    message = json.loads(response.content, parse_constant=_no_constants)["error"]
    assert isinstance(message, str) and "0x" not in message and all(n in message for n in needles), message
    return message


def _no_constants(token: str) -> None:
    raise AssertionError(f"a response held the non-JSON token {token}")


def raw_exchange(s: Served, head: bytes, chunks: Iterator[bytes] | None = None, timeout: float = 20) -> bytes:
    """Send `head` then `chunks` on a raw connection until the server answers; the answer, read to EOF."""
    with socket.create_connection(("127.0.0.1", s.server.port), timeout=timeout) as sock:
        sock.sendall(head)
        for chunk in chunks or ():
            if select.select([sock], [], [], 0)[0]:
                break  # answered before the body was all sent
            try:
                sock.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                break
            time.sleep(0.001)
        answer = b""
        while True:
            try:
                data = sock.recv(65536)
            except ConnectionResetError:  # closed with part of our body unread: what came before it stands
                return answer
            if not data:
                return answer  # the server closed the connection
            answer += data


def http_status(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def http_error(answer: bytes) -> str:
    return str(json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"])


@pytest.fixture(autouse=True)
def _stalled_client_from_the_start(stalled: Callable[[], tuple[bytes, float]]) -> None:
    """Start the stalled client (see `stalled`) before the first case, whichever runs first."""


# -- 1: sizes declared by the request, checked before allocating ---------------------------------


@pytest.mark.parametrize("count", [300_000_000, 10**12])
def test_a_bytes_shape_the_body_cannot_hold(served: dict[str, Served], count: int) -> None:
    s = served["rows"]
    body, headers = binary_body([{"name": "rows", "shape": [count], "datatype": "BYTES",
                                  "parameters": {"binary_data_size": 5}}], struct.pack("<I", 1) + b"x")
    assert len(body) < 150
    with Watch(s) as watch:
        response = httpx.post(s.url(), content=body, headers=headers, timeout=20)
    answered(response, 400, f"{count} BYTES elements declared, but the 5 bytes given hold at most 1")
    watch.check(bound_mb=50)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"shape": [2**62, 4], "data": []}, "inputs[0].data: 0 values do not fill shape [4611686018427387904, 4]"),
        ({"shape": [2**62, 4], "parameters": {"binary_data_size": 0}},
         "0 bytes do not hold shape [4611686018427387904, 4] of UINT8 (18446744073709551616 bytes)"),
        ({"shape": [1, 4], "data": [[7] * 8]}, "inputs[0].data[0]: a list of 8 where shape [1, 4] has a list of 4"),
        ({"shape": [1, 4], "data": [[[7]] * 4]}, "inputs[0].data: mixes lists and values"),
    ],
    ids=["wrapping-shape", "wrapping-binary", "wrong-nesting", "too-deep"],
)
def test_shapes_that_wrap_or_do_not_match_the_nesting(
        served: dict[str, Served], change: dict[str, Any], message: str) -> None:
    s = served["toy"]
    doc = toy_doc(**change)
    headers = {}
    if "parameters" in change:
        del doc["inputs"][0]["data"]
        headers = {"Inference-Header-Content-Length": str(len(json.dumps(doc)))}
    with Watch(s) as watch:
        response = httpx.post(s.url(), content=json.dumps(doc).encode(), headers=headers, timeout=20)
    answered(response, 400, message)
    watch.check(bound_mb=20)


# -- 2: decompression bounded ---------------------------------------------------------------------


def test_a_gzip_bomb_is_refused_without_inflating_it(served: dict[str, Served]) -> None:
    s = served["toy"]
    start = json.dumps(toy_doc()).encode()[:-1]  # the object left open: spaces are valid JSON padding
    spaces = gzip.compress(b" " * MB, 9)  # ~1 KB: a gzip member of 1 MiB of spaces
    bomb = gzip.compress(start) + spaces * 1000 + gzip.compress(b"}")  # 1000 MiB of spaces in ~1 MB
    assert len(bomb) < 1.1 * MB
    with Watch(s) as watch:
        response = httpx.post(s.url(), content=bomb, headers={"Content-Encoding": "gzip"}, timeout=20)
    answered(response, 413, "serving.max_decompressed_bytes")
    watch.check(bound_mb=200)


# -- 3: bodies, rows, elements and pixels bounded -----------------------------------------------


def test_a_body_over_the_limit_by_content_length_is_refused_before_it_is_sent(served: dict[str, Served]) -> None:
    s = served["toy"]
    head = (f"POST /v2/models/toy/infer HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
            f"Content-Length: {100 * MB}\r\n\r\n").encode()
    with Watch(s) as watch:
        answer = raw_exchange(s, head)
    assert http_status(answer) == 413 and b"connection: close" in answer.lower()
    assert "Content-Length 104857600 bytes is more than the 2097152 allowed (serving.max_body_bytes)" in \
        http_error(answer)
    watch.check(bound_mb=20)


def test_a_streamed_body_over_the_limit_is_refused_while_it_streams(served: dict[str, Served]) -> None:
    s = served["toy"]
    head = b"POST /v2/models/toy/infer HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n"
    piece = b" " * (64 << 10)
    chunked = (b"%x\r\n%s\r\n" % (len(piece), piece) for _ in range(128))  # 8 MiB, no Content-Length
    with Watch(s) as watch:
        answer = raw_exchange(s, head, chunked)
    assert http_status(answer) == 413 and "more than the 2097152 bytes allowed (serving.max_body_bytes)" in \
        http_error(answer)
    watch.check(bound_mb=30)


def test_a_million_rows(served: dict[str, Served]) -> None:
    s = served["toy"]
    rows = 1_000_000
    inputs = [{"name": "pixels", "shape": [rows, 4], "datatype": "UINT8", "parameters": {"binary_data_size": 4 * rows}},
              {"name": "offset", "shape": [rows, 3], "datatype": "FP32", "parameters": {"binary_data_size": 12 * rows}}]
    body, headers = binary_body(inputs, bytes(16 * rows))
    with Watch(s) as watch:
        response = httpx.post(s.url(), content=body, headers=headers, timeout=30)
    answered(response, 413, "serving.max_body_bytes")
    packed = gzip.compress(body, 1)  # the same rows in a body under the limit: refused once decompressed
    assert len(packed) < MB
    response = httpx.post(s.url(), content=packed, headers={**headers, "Content-Encoding": "gzip"}, timeout=30)
    answered(response, 413, "serving.max_decompressed_bytes")
    watch.check(bound_mb=120)


def test_rows_and_elements_over_the_limits(served: dict[str, Served]) -> None:
    s = served["toy"]
    with Watch(s) as watch:
        answered(httpx.post(s.url(), content=json.dumps(toy_doc(300)), timeout=20), 413,
                 "inputs[0].shape[0]: 300 rows, more than the 256 one request may carry (serving.max_rows)")
        answered(httpx.post(s.url(), content=json.dumps(toy_doc(150)), timeout=20), 413,
                 "inputs[1].shape: the request's inputs hold 1050 elements so far, more than the 1000",
                 "(serving.max_elements)")
        answered(httpx.post(served["rows"].url(), content=rows_body(*[json.dumps(ROW)] * 65), timeout=20), 413,
                 "(serving.max_rows)")
    watch.check(bound_mb=30)


def test_images_over_the_pixel_budget_are_refused_from_their_headers(served: dict[str, Served]) -> None:
    s = served["images"]
    big = png(6300, 6300)  # 39.7 MP, under the decode step's 40 MP: the request's budget stops it
    assert len(big) < 100_000
    for images, row in (([big] * 16, 0), ([png(600, 600)] * 4, 2)):
        payload = bytes_payload(*images)
        body, headers = binary_body([{"name": "png", "shape": [len(images)], "datatype": "BYTES",
                                      "parameters": {"binary_data_size": len(payload)}}], payload)
        with Watch(s) as watch:
            response = httpx.post(s.url(), content=body, headers=headers, timeout=30)
        answered(response, 413, f"input 'png' row {row}: the images up to this one hold",
                 "more than the 1000000 one request may decode (serving.max_pixels)")
        watch.check(bound_mb=60)


# -- 6: non-finite values -------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", "1e39", "-1e400"])
def test_non_finite_row_values_fail_their_request(served: dict[str, Served], value: str) -> None:
    s = served["rows"]
    row = json.dumps(ROW).replace("-2.0", value)
    with Watch(s) as watch:
        response = httpx.post(s.url(), content=rows_body(json.dumps(ROW), row), timeout=20)
    answered(response, 400, "row 1: model input 'features' holds", "at column 1 (field 'b') after pre-processing",
             "serving.allow_non_finite is false")
    watch.check(bound_mb=20)


# -- 8: errors, not tracebacks --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"inputs": ' + b"[" * 10_000 + b"]" * 10_000 + b"}", "request body: JSON nested too deeply"),
        (b'{"parameters": {"timeout": 1' + b"0" * 400 + b"}, " + json.dumps(toy_doc()).encode()[1:],
         "parameters.timeout: expected microseconds, an integer from 0 to 2**64-1"),
    ],
    ids=["deep-json", "timeout-10**400"],
)
def test_what_used_to_be_500s(served: dict[str, Served], body: bytes, message: str) -> None:
    s = served["toy"]
    with Watch(s) as watch:
        response = httpx.post(s.url(), content=body, timeout=20)
    answered(response, 400, message)
    watch.check(bound_mb=20)


def test_an_image_that_does_not_decode_is_400_without_reprs(served: dict[str, Served]) -> None:
    s = served["images"]
    payload = bytes_payload(b"not a png at all")
    body, headers = binary_body([{"name": "png", "shape": [1], "datatype": "BYTES",
                                  "parameters": {"binary_data_size": len(payload)}}], payload)
    with Watch(s) as watch:
        response = httpx.post(s.url(), content=body, headers=headers, timeout=20)
    message = answered(response, 400, "input 'png' row 0: not a decodable PNG/JPEG image")
    assert "BytesIO" not in message
    watch.check(bound_mb=20)


def metric(s: Served, sample: str) -> float:
    for line in httpx.get(f"{s.base}/metrics", timeout=10).text.splitlines():
        if line.startswith(sample + " "):
            return float(line.split()[-1])
    return 0.0


def test_clients_that_disconnect_mid_body_are_counted_apart(served: dict[str, Served]) -> None:
    s = served["toy"]
    before = metric(s, 'infc_client_disconnects_total{model="toy",version="1"}')
    errors = metric(s, 'infc_requests_total{model="toy",status="500",version="1"}')
    with Watch(s) as watch:
        for _ in range(100):
            with socket.create_connection(("127.0.0.1", s.server.port), timeout=5) as sock:
                sock.sendall(b"POST /v2/models/toy/infer HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1000\r\n\r\n"
                             b'{"inputs')
        deadline = time.monotonic() + 10
        while metric(s, 'infc_client_disconnects_total{model="toy",version="1"}') < before + 100:
            assert time.monotonic() < deadline, "disconnects not counted"
            time.sleep(0.05)
    assert metric(s, 'infc_requests_total{model="toy",status="500",version="1"}') == errors
    watch.check(bound_mb=30)


# -- 9: browser safety ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "status", "message"),
    [
        ({"Host": "evil.example"}, 421, "Host header: 'evil.example' is not a name this server answers to"),
        ({"Host": "localhost.evil.example:8000"}, 421, "Host header"),
        ({"Content-Type": "text/plain"}, 415, "Content-Type header: text/plain is not accepted for inference"),
        ({"Content-Type": "application/x-www-form-urlencoded"}, 415, "Content-Type header"),
        ({"Content-Type": "multipart/form-data; boundary=b"}, 415, "Content-Type header"),
    ],
    ids=["host", "host-suffix", "text-plain", "form", "multipart"],
)
def test_what_a_web_page_could_send_is_refused(
        served: dict[str, Served], headers: dict[str, str], status: int, message: str) -> None:
    s = served["toy"]
    with Watch(s) as watch:
        response = httpx.post(s.url(), content=json.dumps(toy_doc()), headers=headers, timeout=10)
    answered(response, status, message)
    watch.check(bound_mb=20)
    for host in ("localhost", "127.0.0.1", f"localhost:{s.server.port}"):
        assert httpx.post(s.url(), content=json.dumps(toy_doc()), headers={"Host": host}).status_code == 200


# -- fuzz: random bodies and headers never get a 5xx ----------------------------------------------

json_scalars = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(-1e6, 1e6) | st.text(max_size=8)
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=6) |
                           st.dictionaries(st.text(max_size=6), inner, max_size=4), max_leaves=24)
names = st.sampled_from(["pixels", "offset", "other", ""])
datatypes = st.sampled_from(["UINT8", "FP32", "BYTES", "INT64", "FP16", "nope"])
shapes = st.lists(st.integers(-2, 2**63), max_size=4) | st.lists(st.integers(0, 5), min_size=1, max_size=3)
tensor = st.fixed_dictionaries(
    {"name": names, "datatype": datatypes, "shape": shapes},
    optional={"data": json_values | st.lists(st.integers(0, 255) | st.floats(-1e6, 1e6), max_size=40),
              "parameters": st.fixed_dictionaries({}, optional={"binary_data_size": st.integers(-5, 10**12)})})
documents = st.fixed_dictionaries(
    {}, optional={"inputs": st.lists(tensor, max_size=3) | json_values, "outputs": json_values,
                  "id": json_values, "parameters": st.dictionaries(st.sampled_from(["timeout", "binary_data_output"]),
                                                                    json_values | st.integers(-1, 2**70))})


@st.composite
def bodies(draw: st.DrawFn) -> tuple[bytes, dict[str, str | bytes]]:
    kind = draw(st.sampled_from(["json", "json+binary", "bytes"]))
    body = json.dumps(draw(documents)).encode() if kind != "bytes" else draw(st.binary(max_size=200))
    headers: dict[str, str | bytes] = {}
    if kind == "json+binary":
        headers["Inference-Header-Content-Length"] = str(len(body) + draw(st.integers(-3, 3)))
        body += draw(st.binary(max_size=64))
    if draw(st.booleans()):
        lengths: list[str | bytes] = ["x", "-1", "99999999999", "", "1_0", "\u0661".encode()]
        headers["Inference-Header-Content-Length"] = draw(st.sampled_from(lengths))
    encoding = draw(st.sampled_from([None, "gzip", "deflate", "identity", "br", "gzip, gzip"]))
    if encoding is not None:
        headers["Content-Encoding"] = encoding
        if encoding == "gzip" and draw(st.booleans()):
            body = gzip.compress(body)
    content_type = draw(st.sampled_from([None, "application/json", "application/octet-stream", "text/plain", "x/y"]))
    if content_type is not None:
        headers["Content-Type"] = content_type
    return body, headers


@pytest.fixture(scope="module")
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10) as http:
        yield http


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=bodies())
def test_fuzz_random_bodies_and_headers_get_no_5xx(
        served: dict[str, Served], client: httpx.Client, case: tuple[bytes, dict[str, str | bytes]]) -> None:
    body, headers = case
    response = client.post(served["toy"].url(), content=body, headers=headers)
    message = json.loads(response.content, parse_constant=_no_constants)
    # a valid request with `parameters.timeout` 0 expires before it runs: the one 5xx a client may ask for
    expired = response.status_code == 504 and "not started within its timeout" in message.get("error", "")
    assert response.status_code < 500 or expired, (response.status_code, response.text[:300])


def test_the_server_is_unharmed_after_the_fuzz(served: dict[str, Served]) -> None:
    for s in served.values():
        assert httpx.get(f"{s.base}/v2/health/live").status_code == 200
        assert s.good().content == s.expected


# -- 5 (the body part): a stalled client is answered 408 and closed --------------------------------


@pytest.fixture(scope="module")
def stalled(served: dict[str, Served]) -> Iterator[Callable[[], tuple[bytes, float]]]:
    """A client that sends 1 of a declared 1000 bytes and waits, from early on: its answer comes after the
    body timeout, while the other cases run; the test that reads it is last in the file."""
    s = served["toy"]
    head = b"POST /v2/models/toy/infer HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1000\r\n\r\n{"
    outcome: list[tuple[bytes, float]] = []

    def wait() -> None:
        started = time.monotonic()
        answer = raw_exchange(s, head, timeout=STALL_TIMEOUT_S + 15)
        outcome.append((answer, time.monotonic() - started))

    thread = threading.Thread(target=wait, daemon=True)
    thread.start()

    def result() -> tuple[bytes, float]:
        thread.join(timeout=STALL_TIMEOUT_S + 20)
        return outcome[0]

    yield result
    thread.join(timeout=STALL_TIMEOUT_S + 20)


def test_a_client_that_stalls_mid_body_gets_408_and_a_closed_connection(
        stalled: Callable[[], tuple[bytes, float]]) -> None:
    answer, seconds = stalled()
    assert STALL_TIMEOUT_S - 1 < seconds < STALL_TIMEOUT_S + 10
    assert http_status(answer) == 408 and b"connection: close" in answer.lower()
    assert http_error(answer).startswith(f"request body: no data for {STALL_TIMEOUT_S} s after 1 bytes")
