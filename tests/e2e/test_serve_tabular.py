"""The tabular example end to end: JSON rows over KServe V2 (a BYTES input), through the real server.

Build specs/tabular (features -> standardize from the calibration rows -> MLP),
serve the bundle on loopback, post rows with tritonclient and compare with the
in-process pipeline; a bad row fails its own request with a 400 naming the
field while the other requests go on.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.http as httpclient
import yaml
from examples import ROOT
from servers import Server, serving

from infc.build import build
from infc_runtime.abi import RequestError
from infc_runtime.pipeline import Pipeline

SPEC = ROOT / "specs" / "tabular" / "tabular.yaml"


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    result = build(SPEC, tmp_path_factory.mktemp("tabular-build"), iterations=50, latency_gate="off", lock="ignore")
    assert result.path is not None
    return result.path


@pytest.fixture(scope="module")
def server(bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with serving(bundle, tmp_path_factory.mktemp("tabular-serve") / "server.log") as srv:
        yield srv


def _rows(n: int, start: int = 0) -> np.ndarray:
    raw = np.load(SPEC.parent / "val.npz")["rows"][start:start + n]
    return raw.astype(object)  # bytes elements, as the server decodes a BYTES tensor


def _body(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {"inputs": [{"name": "rows", "shape": [len(rows)], "datatype": "BYTES",
                        "data": [json.dumps(r) for r in rows]}]}


def test_the_bundle_says_what_standardize_uses(bundle: Path) -> None:
    manifest = json.loads((bundle / "manifest.json").read_text())
    (record,) = manifest["prepared"]
    assert record["step"] == "preprocess[1]" and record["from"] == "calibration" and record["rows"] == 398
    resolved = yaml.safe_load((bundle / "spec.yaml").read_text())["preprocess"][1]["standardize"]
    assert resolved == record["params"] and len(resolved["mean"]) == len(resolved["std"]) == 30
    assert "from" not in resolved
    pre = (bundle / "kernels" / "pre.py").read_text()
    assert "decode_rows" in pre and pre.count("@numba.njit") == 1


@pytest.mark.parametrize("binary", [True, False])
def test_json_rows_over_tritonclient_match_the_in_process_pipeline(server: Server, bundle: Path,
                                                                   binary: bool) -> None:
    rows = _rows(16, start=5)
    client = httpclient.InferenceServerClient(server.url)
    inp = httpclient.InferInput("rows", [len(rows)], "BYTES")
    inp.set_data_from_numpy(rows, binary_data=binary)
    outputs = [httpclient.InferRequestedOutput(n, binary_data=binary) for n in ("probabilities", "labels")]
    result = client.infer("tabular-risk", [inp], outputs=outputs)
    expected = Pipeline.load(bundle).run({"rows": rows})
    np.testing.assert_allclose(result.as_numpy("probabilities"), expected["probabilities"], rtol=1e-6)
    got = [b.decode() if isinstance(b, bytes) else b for b in result.as_numpy("labels")]
    assert got == [b.decode() for b in expected["labels"]]
    assert set(got) <= {"malignant", "benign"}


def test_metadata_says_rows_are_bytes(server: Server) -> None:
    meta = httpclient.InferenceServerClient(server.url).get_model_metadata("tabular-risk")
    assert meta["inputs"] == [{"name": "rows", "datatype": "BYTES", "shape": [-1]}]


def _good(i: int) -> dict[str, Any]:
    return dict(json.loads(_rows(1, start=i)[0]))


BAD = [
    ({k: v for k, v in _good(0).items() if k != "worst area"}, "rows[0]: field 'worst area' is required but missing"),
    ({**_good(1), "mean texture": "high"}, "rows[0]: field 'mean texture' must be a number, got the string \"high\""),
    ({**_good(2), "mean radius": None}, "rows[0]: field 'mean radius' is required but missing"),
]


@pytest.mark.parametrize(("row", "message"), BAD)
def test_a_bad_row_is_a_400_naming_the_field_and_the_others_succeed(server: Server, row: dict[str, Any],
                                                                    message: str) -> None:
    url = f"http://{server.url}/v2/models/tabular-risk/infer"
    bodies = [_body([_good(i), _good(i + 1)]) for i in range(6)]
    bodies.insert(3, _body([row]))
    with httpx.Client() as client, ThreadPoolExecutor(len(bodies)) as pool:
        responses = list(pool.map(lambda b: client.post(url, json=b), bodies))
    bad = responses.pop(3)
    assert bad.status_code == 400
    assert message in bad.json()["error"]
    assert [r.status_code for r in responses] == [200] * 6
    assert all(r.json()["outputs"][0]["shape"] == [2, 2] for r in responses)


def test_in_one_batch_only_the_bad_request_fails(bundle: Path) -> None:
    pipeline = Pipeline.load(bundle)
    good = {"rows": _rows(3)}
    bad = {"rows": np.array([json.dumps({**_good(0), "mean area": [1]}).encode()], dtype=object)}
    results = pipeline.run_batch([good, bad, good])
    assert isinstance(results[1], RequestError) and "field 'mean area' must be a number" in str(results[1])
    for result in (results[0], results[2]):
        assert isinstance(result, dict)
        np.testing.assert_allclose(result["probabilities"], pipeline.run(good)["probabilities"], rtol=1e-6)
