"""The image example end to end: PNG files over KServe V2 (a BYTES input), through the real server.

Build specs/digits_png (decode -> resize + to_float + normalize + layout fused in
one loop -> the digits MLP), serve the bundle on loopback, post real PNGs of
different sizes with tritonclient and compare with the in-process pipeline and
the labels; an image that does not decode fails its own request with a 400
naming the input and row while the other requests go on.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.http as httpclient
from examples import ROOT
from PIL import Image
from servers import Server, serving

from infc.build import build
from infc_runtime.abi import RequestError
from infc_runtime.pipeline import Pipeline

SPEC = ROOT / "specs" / "digits_png" / "digits_png.yaml"
NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    result = build(SPEC, tmp_path_factory.mktemp("png-build"), iterations=50, latency_gate="off", lock="ignore")
    assert result.path is not None
    return result.path


@pytest.fixture(scope="module")
def server(bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with serving(bundle, tmp_path_factory.mktemp("png-serve") / "server.log") as srv:
        yield srv


def _pngs(n: int, start: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Real PNG files (bytes elements, as the server decodes a BYTES tensor) and their digits."""
    with np.load(SPEC.parent / "val.npz") as val:
        return val["png"][start:start + n].astype(object), val["labels"][start:start + n]


def _infer(server: Server, images: np.ndarray) -> httpclient.InferResult:
    client = httpclient.InferenceServerClient(server.url)
    inp = httpclient.InferInput("png", [len(images)], "BYTES")
    inp.set_data_from_numpy(images, binary_data=True)
    outputs = [httpclient.InferRequestedOutput(n, binary_data=True) for n in ("scores", "labels")]
    return client.infer("digits-png", [inp], outputs=outputs)


def test_the_bundle_decodes_with_pinned_pillow_and_fuses_the_rest(bundle: Path) -> None:
    assert any(line.startswith("pillow==") for line in (bundle / "requirements.txt").read_text().splitlines())
    pre = (bundle / "kernels" / "pre.py").read_text()
    # decoding is the runtime's (its ops library, shipped in the bundle), the rest one generated loop
    assert "from infc_runtime.ops.decode import decode_images" in pre
    assert "PIL.Image.open" in (bundle / "infc_runtime" / "ops" / "decode.py").read_text()
    assert pre.count("_loop(x, out):") == 1, "resize .. layout: one loop"
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["inputs"] == [{"name": "png", "dtype": "bytes", "shape": []}]


def test_pngs_of_different_sizes_over_tritonclient(server: Server, bundle: Path) -> None:
    images, digits = _pngs(24, start=40)
    sizes = {Image.open(io.BytesIO(png)).size for png in images}
    assert len(sizes) > 1, "one request, images of several sizes"
    result = _infer(server, images)
    expected = Pipeline.load(bundle).run({"png": images})
    np.testing.assert_allclose(result.as_numpy("scores"), expected["scores"], rtol=1e-6)
    got = [[b.decode() for b in row] for row in result.as_numpy("labels")]
    assert got == [[b.decode() for b in row] for row in expected["labels"]]
    top1 = [row[0] for row in got]
    assert np.mean([t == NAMES[d] for t, d in zip(top1, digits, strict=True)]) >= 0.9


def test_a_jpeg_photo_of_a_digit_of_any_size(server: Server) -> None:
    with np.load(ROOT / "specs" / "digits" / "val.npz") as val:
        pixels, digit = val["image"][7], int(val["labels"][7])
    out = io.BytesIO()
    Image.fromarray(np.kron(pixels, np.ones((12, 12), np.uint8))).convert("RGB").save(out, "JPEG", quality=95)
    result = _infer(server, np.array([out.getvalue()], dtype=object))
    assert result.as_numpy("labels")[0][0].decode() == NAMES[digit]


def test_metadata_says_images_are_bytes(server: Server) -> None:
    meta = httpclient.InferenceServerClient(server.url).get_model_metadata("digits-png")
    assert meta["inputs"] == [{"name": "png", "datatype": "BYTES", "shape": [-1]}]


def _binary_body(images: list[bytes]) -> tuple[bytes, dict[str, str]]:
    """A KServe V2 request with the images as binary BYTES (4-byte length, then the bytes)."""
    data = b"".join(len(b).to_bytes(4, "little") + b for b in images)
    header = json.dumps({"inputs": [{"name": "png", "shape": [len(images)], "datatype": "BYTES",
                                     "parameters": {"binary_data_size": len(data)}}]}).encode()
    return header + data, {"Inference-Header-Content-Length": str(len(header))}


def test_an_undecodable_image_is_a_400_naming_the_row_and_the_others_succeed(server: Server) -> None:
    url = f"http://{server.url}/v2/models/digits-png/infer"
    good = [list(_pngs(2, start=i)[0]) for i in range(6)]
    bodies = [_binary_body(images) for images in good]
    bodies.insert(3, _binary_body([good[0][0], b"GIF89a not a png"]))
    with httpx.Client() as client, ThreadPoolExecutor(len(bodies)) as pool:
        responses = list(pool.map(lambda b: client.post(url, content=b[0], headers=b[1]), bodies))
    bad = responses.pop(3)
    assert bad.status_code == 400
    assert "input 'png' row 1: not a decodable PNG/JPEG image" in bad.json()["error"]
    assert [r.status_code for r in responses] == [200] * 6


def test_in_one_batch_only_the_bad_request_fails(bundle: Path) -> None:
    pipeline = Pipeline.load(bundle)
    good = {"png": _pngs(3)[0]}
    bad = {"png": np.array([b"\x89PNG\r\n\x1a\n truncated"], dtype=object)}
    results = pipeline.run_batch([good, bad, good])
    assert isinstance(results[1], RequestError) and "input 'png' row 0" in str(results[1])
    for result in (results[0], results[2]):
        assert isinstance(result, dict)
        np.testing.assert_allclose(result["scores"], pipeline.run(good)["scores"], rtol=1e-6)
