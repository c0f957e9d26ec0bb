"""Drift indicators through the real server: a bundle's reference, rows over HTTP, `/drift` and `/metrics`.

The tabular example (every row sampled, a window of 1,000 rows) served on loopback: rows drawn from its own
data leave every feature's PSI under 0.1 and the gauges stable between two scrapes; the same rows with one
feature shifted by two standard deviations raise that feature's PSI above 0.25 while the others stay under
0.1. The digits example (the session's bundle, default sample rate) with inverted images moves its
confidence and class-distribution indicators.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from examples import DIGITS_DIR, ROOT
from prometheus_client.parser import text_string_to_metric_families
from servers import Server, serving

from infc.build import build
from infc_runtime.drift import REFERENCE_PATH

TABULAR = ROOT / "specs" / "tabular"
WINDOW = 1000
SHIFTED = "mean radius"


@pytest.fixture(scope="module")
def tabular_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("drift-tabular")
    for name in ("tabular.onnx", "calib.npz", "val.npz"):
        shutil.copy(TABULAR / name, folder / name)
    text = (TABULAR / "tabular.yaml").read_text().replace("quantize: auto", "quantize: none")
    (folder / "tabular.yaml").write_text(text + f"monitor: {{sample_rate: 1, window: {WINDOW}}}\n")
    result = build(folder / "tabular.yaml", folder / "out", iterations=20, latency_gate="off", lock="ignore")
    assert result.path is not None
    return result.path


@pytest.fixture(scope="module")
def tabular_server(tabular_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with serving(tabular_bundle, tmp_path_factory.mktemp("drift-serve") / "server.log") as server:
        yield server


def _records(n: int, seed: int) -> list[dict[str, float]]:
    """`n` rows drawn (with replacement) from the example's calibration rows: its own distribution."""
    rows = np.load(TABULAR / "calib.npz")["rows"]
    picked = np.random.default_rng(seed).integers(0, len(rows), n)
    return [json.loads(rows[i]) for i in picked]


def _post_rows(client: httpx.Client, records: list[dict[str, float]], per_request: int = 100) -> None:
    for start in range(0, len(records), per_request):
        chunk = records[start:start + per_request]
        body = {"inputs": [{"name": "rows", "shape": [len(chunk)], "datatype": "BYTES",
                            "data": [json.dumps(r) for r in chunk]}]}
        response = client.post("/v2/models/tabular-risk/infer", json=body)
        assert response.status_code == 200, response.text


def _drift(client: httpx.Client, path: str, sampled: int) -> dict[str, Any]:
    """The drift report once `sampled` rows were folded (the worker folds a batch after answering it)."""
    deadline = time.monotonic() + 10
    while True:
        report: dict[str, Any] = client.get(path).json()
        if report["rows_sampled"] >= sampled or time.monotonic() > deadline:
            return report
        time.sleep(0.02)


def _gauges(client: httpx.Client) -> dict[tuple[str, str], float]:
    text = client.get("/metrics").text
    return {(s.name, s.labels.get("feature", "")): s.value for family in text_string_to_metric_families(text)
            for s in family.samples if s.name.startswith("infc_drift_")}


def test_the_reference_is_in_the_bundle_listed_and_small(tabular_bundle: Path) -> None:
    manifest = json.loads((tabular_bundle / "manifest.json").read_text())
    assert REFERENCE_PATH in manifest["files"]
    reference = json.loads((tabular_bundle / REFERENCE_PATH).read_text())
    assert (tabular_bundle / REFERENCE_PATH).stat().st_size < 16_000
    assert len(reference["features"]) == 30 and reference["features"][0]["name"] == "mean radius"
    assert reference["prediction"]["kind"] == "classifier" and reference["prediction"]["output"] == "probabilities"


def test_unshifted_rows_stay_stable_and_one_shifted_feature_alerts(tabular_server: Server) -> None:
    path = "/v2/models/tabular-risk/drift"
    with httpx.Client(base_url=f"http://{tabular_server.url}", timeout=30) as client:
        # rows from the data's own distribution: every feature under 0.1, the gauges present and stable
        calm = _records(WINDOW, seed=1)
        _post_rows(client, calm)
        report = _drift(client, path, WINDOW)
        assert report["window_rows"] == WINDOW and len(report["features"]) == 30
        worst = report["features"][0]
        assert worst["psi"] < 0.1 and report["status"] == "ok", worst
        first, second = _gauges(client), _gauges(client)
        assert first == second
        psis = {feature: v for (name, feature), v in first.items() if name == "infc_drift_psi"}
        assert len(psis) == 30 and max(psis.values()) < 0.1
        assert first[("infc_drift_window_rows", "")] == WINDOW
        assert ("infc_drift_prediction_psi", "") in first and ("infc_drift_confidence_mean", "") in first
        # the same rows with one feature two standard deviations up: it alone alerts
        std = float(np.std([r[SHIFTED] for r in _records(398, seed=2)]))
        shifted = [{**r, SHIFTED: r[SHIFTED] + 2 * std} for r in _records(WINDOW, seed=3)]
        _post_rows(client, shifted)
        report = _drift(client, "/v2/models/tabular-risk/versions/1.0.0/drift", 2 * WINDOW)
        assert report["window_rows"] == WINDOW  # the window slid: it holds the shifted rows only
        first, *others = report["features"]
        assert first["name"] == SHIFTED and first["psi"] > 0.25 and first["status"] == "alert", first
        assert max(f["psi"] for f in others) < 0.1, others[0]
        assert report["status"] == "alert"
        gauges = _gauges(client)
        assert gauges[("infc_drift_psi", SHIFTED)] > 0.25
        print("\ntabular drift, unshifted: worst", worst["name"], worst["psi"], "| shifted:", first["name"],
              first["psi"], "next", others[0]["name"], others[0]["psi"], "| prediction psi",
              report["prediction"]["psi"], "confidence", report["prediction"]["confidence_mean"])


def test_inverted_digits_move_confidence_and_class_distribution(digits_bundle: Path, tmp_path: Path) -> None:
    images = np.load(DIGITS_DIR / "val.npz")["image"]
    every = round(1 / 0.1)  # the example's default sample rate
    rows = len(images) // every * every
    with serving(digits_bundle, tmp_path / "server.log") as server, \
            httpx.Client(base_url=f"http://{server.url}", timeout=30) as client:
        def send(batch: np.ndarray) -> None:
            for start in range(0, rows, 50):
                chunk = batch[start:start + 50]
                body = {"inputs": [{"name": "image", "shape": list(chunk.shape), "datatype": "UINT8",
                                    "data": chunk.ravel().tolist()}]}
                assert client.post("/v2/models/digits/infer", json=body).status_code == 200

        warmed = _drift(client, "/v2/models/digits/drift", 0)["rows_seen"]  # warm-up rows are not counted
        send(images[:rows])
        before = _drift(client, "/v2/models/digits/drift", rows // every)
        send(255 - images[:rows])
        after = _drift(client, "/v2/models/digits/drift", 2 * rows // every)
    assert warmed == 0 and before["rows_seen"] == rows and after["window_rows"] == 2 * rows // every
    p0, p1 = before["prediction"], after["prediction"]
    assert p0["kind"] == "classifier" and p0["psi"] < 0.25 and before["status"] in ("ok", "warn")
    # inverted images: half the window is unlike anything the model saw; its answers shift and lose confidence
    assert p1["psi"] > p0["psi"] + 0.1
    assert p1["confidence_mean"] < p0["confidence_mean"] - 0.05
    (pixels,) = after["features"]
    assert pixels["name"] == "image.channel0" and pixels["psi"] > 0.25 and after["status"] == "alert"
    print("\ndigits drift: before", p0["psi"], p0["confidence_mean"], before["features"][0]["psi"],
          "| inverted half", p1["psi"], p1["confidence_mean"], pixels["psi"])
