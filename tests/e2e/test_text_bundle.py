"""A text bundle end to end: raw text in, tokenized server-side by the tokenizer shipped in the bundle.

tiny BERT (vocabulary 1000) with the tiny committed WordPiece tokenizer; the
bundle is moved after the build, so the tokenizer must be found from the
bundle's own files.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.http as httpclient
from servers import Server, serving

from infc.build import build
from infc.errors import SpecErrors
from infc.spec import load_spec
from infc_runtime.batching import Batcher
from infc_runtime.metrics import Metrics
from infc_runtime.pipeline import Pipeline
from infc_runtime.types import ServingConfig

MODELS = Path(__file__).resolve().parents[1] / "models"
SENTENCES = ["Return the path of the file.", "", "A new list object is returned.", "Ünïcödé text 😀",
             "the name of the value " * 8]
SPEC = """\
name: tiny-text
version: 0.1.0
model: bert.onnx
target: {hardware: x86, isa: native}
inputs:
  - {name: text, dtype: bytes, shape: []}
budget:
  accuracy: {metric: cosine, output: embedding, min: 0.99}
optimize: {quantize: none, calibration: texts.npz, validation: texts.npz}
preprocess:
  - tokenize: {tokenizer: tokenizer/tiny.json, max_length: 24, truncation: TRUNCATION}
postprocess:
  - mean_pool: {mask: attention_mask, output: embedding}
  - l2_normalize
serving: {max_batch_size: 4, max_queue_delay_ms: 1}
"""


def _build(root: Path, truncation: str) -> Path:
    (root / "tokenizer").mkdir(parents=True)
    shutil.copy(MODELS / "tiny_bert.onnx", root / "bert.onnx")
    shutil.copy(MODELS / "tiny_tokenizer.json", root / "tokenizer" / "tiny.json")
    texts = SENTENCES[:-1] if truncation == "error" else SENTENCES
    np.savez(root / "texts.npz", text=np.array([s.encode() for s in texts]))  # fixed-width bytes: no pickle
    (root / "spec.yaml").write_text(SPEC.replace("TRUNCATION", truncation))
    result = build(root / "spec.yaml", root / "out", iterations=20, lock="ignore")
    assert result.path is not None
    moved = root / "elsewhere" / result.path.name
    shutil.move(str(result.path), moved)
    return moved


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _build(tmp_path_factory.mktemp("text"), "error")


@pytest.fixture(scope="module")
def server(bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with serving(bundle, tmp_path_factory.mktemp("serve") / "server.log") as srv:
        yield srv


def test_the_tokenizer_ships_in_the_bundle_and_is_hashed(bundle: Path) -> None:
    manifest = json.loads((bundle / "manifest.json").read_text())
    asset = "kernels/assets/pre_tokenize0.tokenizer.json"
    data = (bundle / asset).read_bytes()
    assert data == (MODELS / "tiny_tokenizer.json").read_bytes()
    assert manifest["files"][asset] == hashlib.sha256(data).hexdigest()
    assert "tiny_tokenizer" not in (bundle / "kernels" / "pre.py").read_text()
    pins = (bundle / "requirements.txt").read_text()
    assert "\ntokenizers==" in pins and "\nhuggingface-hub==" in pins
    assert json.loads((bundle / "manifest.json").read_text())["inputs"] == [
        {"name": "text", "dtype": "bytes", "shape": []}]


def test_raw_text_in_embeddings_out(server: Server, bundle: Path) -> None:
    texts = SENTENCES[:4]
    body = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [len(texts)], "data": texts}]}
    response = httpx.post(f"http://{server.url}/v2/models/tiny-text/infer", json=body, timeout=30)
    assert response.status_code == 200, response.text
    (out,) = response.json()["outputs"]
    embedding = np.array(out["data"], np.float32).reshape(out["shape"])
    assert out["name"] == "embedding" and out["shape"] == [4, 64]
    np.testing.assert_allclose(np.linalg.norm(embedding, axis=1), 1.0, rtol=1e-5)
    expected = Pipeline.load(bundle).run({"text": np.array([t.encode() for t in texts], dtype=object)})
    np.testing.assert_allclose(embedding, expected["embedding"], rtol=1e-5, atol=1e-6)
    assert not np.allclose(embedding[0], embedding[1]), "different texts, different embeddings"


def test_tritonclient_binary_bytes(server: Server, bundle: Path) -> None:
    client = httpclient.InferenceServerClient(server.url)
    text = np.array([b"A new list object is returned."], dtype=object)
    inp = httpclient.InferInput("text", [1], "BYTES")
    inp.set_data_from_numpy(text, binary_data=True)
    result = client.infer("tiny-text", [inp]).as_numpy("embedding")
    np.testing.assert_allclose(result, Pipeline.load(bundle).run({"text": text})["embedding"], rtol=1e-5, atol=1e-6)


def test_over_long_and_broken_text_fail_alone_with_400(server: Server) -> None:
    url = f"http://{server.url}/v2/models/tiny-text/infer"
    long = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [2], "data": ["fine", SENTENCES[-1]]}]}
    response = httpx.post(url, json=long, timeout=30)
    assert response.status_code == 400
    assert "input 'text' row 1" in response.json()["error"] and "more than max_length 24" in response.json()["error"]
    client = httpclient.InferenceServerClient(server.url)
    inp = httpclient.InferInput("text", [1], "BYTES")
    inp.set_data_from_numpy(np.array([b"caf\xe9"], dtype=object), binary_data=True)  # Latin-1, not UTF-8
    with pytest.raises(httpclient.InferenceServerException, match="not UTF-8"):
        client.infer("tiny-text", [inp])
    ok = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["fine"]}]}
    assert httpx.post(url, json=ok, timeout=30).status_code == 200, "the server still serves"


def test_truncated_text_embeds_like_its_first_tokens(tmp_path: Path) -> None:
    pipeline = Pipeline.load(_build(tmp_path, "right"))
    long = SENTENCES[-1]
    cut = " ".join(long.split()[:22])  # 22 one-token words + [CLS] + [SEP] = 24
    out = pipeline.run({"text": np.array([long.encode(), cut.encode()], dtype=object)})["embedding"]
    np.testing.assert_allclose(out[0], out[1], rtol=1e-5, atol=1e-6)


def test_validate_locates_a_missing_tokenizer(tmp_path: Path) -> None:
    shutil.copy(MODELS / "tiny_bert.onnx", tmp_path / "bert.onnx")
    spec = SPEC.replace("TRUNCATION", "right").replace("tokenizer/tiny.json", "nope.json")
    spec = "\n".join(line for line in spec.splitlines() if not line.startswith(("budget", "  accuracy", "optimize")))
    (tmp_path / "spec.yaml").write_text(spec + "\n")
    with pytest.raises(SpecErrors) as caught:
        load_spec(tmp_path / "spec.yaml")
    assert [str(e).split(" ", 1)[1] for e in caught.value.errors] == [
        f"preprocess[0].tokenize.tokenizer: file not found: {tmp_path / 'nope.json'}"]
    assert str(caught.value.errors[0]).startswith(f"{tmp_path / 'spec.yaml'}:8:")


def _texts(*texts: str) -> dict[str, np.ndarray]:
    return {"text": np.array([t.encode() for t in texts], dtype=object)}


def _padded_to(inputs: dict[str, np.ndarray], width: int) -> dict[str, np.ndarray]:
    """Model inputs padded on axis 1 to `width` (pad id 0, mask 0, type 0), as with `padding: max_length`."""
    return {n: np.pad(a, ((0, 0), (0, width - a.shape[1]))) for n, a in inputs.items()}


def test_a_mixed_length_batch_gives_each_request_what_it_gets_alone(bundle: Path) -> None:
    pipeline = Pipeline.load(bundle)
    widths: list[int] = []
    infer = pipeline.infer
    pipeline.infer = lambda inputs, instance=0: (  # type: ignore
        widths.append(inputs["input_ids"].shape[1]) or infer(inputs, instance))
    pipeline.warmup()  # the planned lengths run before ready: 8 (the example), 16, and max_length 24
    assert sorted(set(widths)) == [8, 16, 24]
    pipeline.infer = infer  # type: ignore[method-assign]
    requests = [_texts(SENTENCES[1]), _texts(SENTENCES[0], SENTENCES[3]), _texts("the name of the value " * 4),
                _texts(SENTENCES[2])]
    widths = [pipeline.preprocess(r)["input_ids"].shape[1] for r in requests]
    assert widths == [8, 16, 24, 16]  # each request its longest row rounded up to 8, not max_length 24
    batched = pipeline.run_batch(requests)
    for request, result in zip(requests, batched, strict=True):
        assert isinstance(result, dict)
        np.testing.assert_allclose(result["embedding"], pipeline.run(request)["embedding"], rtol=1e-5, atol=1e-6)
        inputs = _padded_to(pipeline.preprocess(request), 24)
        at_max_length = pipeline.postprocess(pipeline.infer(inputs), inputs)["embedding"]
        np.testing.assert_allclose(result["embedding"], at_max_length, rtol=1e-5, atol=1e-6)


def test_the_batcher_groups_lengths_and_starves_none(bundle: Path) -> None:
    pipeline = Pipeline.load(bundle)
    pipeline.serving = ServingConfig(max_batch_size=4, max_queue_delay_ms=200, timeout_ms=30_000)
    metrics = Metrics("tiny-text", max_batch_size=4)
    batcher = Batcher(pipeline, metrics)
    long = "the name of the value " * 3  # another length bucket than the short sentences
    texts = [SENTENCES[0], long] + [f"A new list object {i}" for i in range(8)]
    done: list[int] = []

    async def body() -> list[Any]:
        tasks = [asyncio.ensure_future(batcher.submit(_texts(t))) for t in texts]
        for i, task in enumerate(tasks):
            task.add_done_callback(lambda _, i=i: done.append(i))
        results = await asyncio.gather(*tasks)
        await batcher.drain()
        return results

    results = asyncio.run(asyncio.wait_for(body(), timeout=60))
    for text, result in zip(texts, results, strict=True):
        np.testing.assert_allclose(result["embedding"], pipeline.run(_texts(text))["embedding"], rtol=1e-5, atol=1e-6)
    get = metrics.registry.get_sample_value
    # the oldest short one and the next three shorts (not the older long one); then the long one, the oldest
    # left, filled up with shorts; then the rest
    assert get("infc_batch_size_count", {"model": "tiny-text"}) == 3
    assert done == [0, 2, 3, 4, 1, 5, 6, 7, 8, 9]
    assert max(batcher.queue_waits) < 10 * 0.2  # none waited much past the delay (a generous factor)
