"""The measure command on a small real bundle: one JSON document on stdout, errors as one line and an exit code."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from runtime_bundle import write_bundle

from infc_runtime.serve import main

QUICK = ["--no-gc-freeze", "--min-samples", "20", "--min-seconds", "0", "--max-seconds", "0.3"]


def measure(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["measure", *args])
    out, err = capsys.readouterr()
    return code, out, err


def requests_file(path: Path, **arrays: Any) -> str:
    np.savez(path, **arrays)
    return str(path)


def test_prints_one_json_document(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bundle = write_bundle(tmp_path / "toy")
    rng = np.random.default_rng(0)
    # int64 pixels and float64 offsets are cast to the bundle's dtypes; `labels` is ignored
    npz = requests_file(tmp_path / "r.npz", pixels=rng.integers(0, 256, (5, 4)), offset=rng.random((5, 3)),
                        labels=np.arange(5))
    # a p99 needs ~300 samples for an upper bound: no time limit that a loaded machine could hit first
    code, out, err = measure(capsys, str(bundle), "--requests", npz, "--budget", "p99=1000", "--batches", "1,3",
                             *QUICK, "--min-samples", "300", "--max-seconds", "60")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["format"] == 1 and doc["verdict"] == "pass" and doc["stopped"] == "decided"
    assert [b["batch"] for b in doc["batches"]] == [1, 3]
    assert doc["gc"]["settled"] is None
    assert [p["name"] for p in doc["percentiles"]] == ["p50", "p95", "p99"]


def test_without_requests_it_measures_the_example_request(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = measure(capsys, str(write_bundle(tmp_path / "toy")), *QUICK)
    assert code == 0
    doc = json.loads(out)
    assert doc["verdict"] is None and doc["stopped"] == "min reached (no budget)" and doc["batches"] == []


def test_unusable_requests_exit_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bundle = str(write_bundle(tmp_path / "toy"))
    (tmp_path / "text.npz").write_text("pixels,offset\n")
    cases = {
        str(tmp_path / "text.npz"): "not an .npz",
        str(tmp_path / "missing.npz"): "not an .npz",
        requests_file(tmp_path / "a.npz", pixels=np.zeros((2, 4))): "no array 'offset'",
        requests_file(tmp_path / "b.npz", pixels=np.zeros((2, 5)), offset=np.zeros((2, 3))): "expected [rows >= 1, 4]",
        requests_file(tmp_path / "c.npz", pixels=np.zeros((2, 4)), offset=np.zeros((3, 3))): "numbers of rows",
    }
    for npz, message in cases.items():
        code, out, err = measure(capsys, bundle, "--requests", npz, *QUICK)
        assert (code, out) == (2, ""), npz
        assert err.startswith("error: ") and message in err and err.count("\n") == 1, err


def test_a_failing_request_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    npz = requests_file(tmp_path / "r.npz", pixels=np.zeros((2, 4)), offset=np.array([[0, 0, 0], [0, np.inf, 0]]))
    code, out, err = measure(capsys, str(write_bundle(tmp_path / "toy")), "--requests", npz, *QUICK)
    assert (code, out) == (1, "")
    assert "request 1 (row 1) failed" in err and "offset must be finite" in err and err.count("\n") == 1


def test_usage_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bundle = str(write_bundle(tmp_path / "toy"))
    assert measure(capsys, bundle, "--budget", "p98=1")[0] == 2
    assert measure(capsys, bundle, "--batches", "1,zero")[0] == 2
    assert measure(capsys, bundle, "--min-samples", "10", "--max-samples", "5")[0] == 2
    code, out, err = measure(capsys, str(tmp_path / "nowhere"))
    assert (code, out) == (2, "") and "not a directory" in err
