"""`infc run` (a bundle over a file, no server) and the streaming endpoint, with real bundles and a real server.

The tabular example (JSON rows) over JSON lines and CSV, each with bad lines:
the outputs equal the in-process pipeline's, each bad line is an error line
naming its line number, the exit code says some failed; a run killed partway
(SIGKILL, a cut last line) and run again holds every input line exactly once,
in order. The image example over a folder of PNG files. The streaming endpoint
(`/infer_stream`) on the real server with real HTTP clients: results name
their lines, a bad line is an error line, and results arrive before the
request's body has ended; the model repository server streams too, behind the
same API keys. A changed bundle is refused before any of it is imported.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from examples import ROOT
from servers import Server, serving

from infc.build import build
from infc_runtime.pipeline import Pipeline

TABULAR = ROOT / "specs" / "tabular"
PNG = ROOT / "specs" / "digits_png"
EXIT_LINES_FAILED = 4


def _copy_spec(source: Path, folder: Path, name: str, edits: dict[str, str], files: dict[str, Path]) -> Path:
    folder.mkdir(parents=True)
    for target, path in files.items():
        shutil.copy(path, folder / target)
    text = (source / name).read_text()
    for old, new in edits.items():
        assert old in text, old
        text = text.replace(old, new)
    (folder / name).write_text(text)
    return folder / name


@pytest.fixture(scope="module")
def tabular(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tabular example, fp32 with its batching pinned (nothing to search: a quick build)."""
    tmp = tmp_path_factory.mktemp("run-tabular")
    spec = _copy_spec(TABULAR, tmp / "spec", "tabular.yaml", {"quantize: auto": "quantize: none"},
                      {f: TABULAR / f for f in ("tabular.onnx", "calib.npz", "val.npz")})
    spec.write_text(spec.read_text() + "serving: {max_batch_size: 32, max_queue_delay_ms: 1}\n")
    result = build(spec, tmp / "out", iterations=20, latency_gate="off", lock="ignore")
    assert result.path is not None
    return result.path


@pytest.fixture(scope="module")
def rows() -> list[dict[str, Any]]:
    with np.load(TABULAR / "val.npz") as val:
        return [json.loads(r) for r in val["rows"]]


@pytest.fixture(scope="module")
def expected(tabular: Path, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The in-process pipeline's outputs for every validation row."""
    batch = np.array([json.dumps(r).encode() for r in rows], dtype=object)
    out = Pipeline.load(tabular).run({"rows": batch})
    return {"probabilities": out["probabilities"], "labels": [b.decode() for b in out["labels"]]}


def _run(bundle: Path, source: Path, output: Path, *more: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "infc", "run", str(bundle), str(source), "-o", str(output), *more],
                          capture_output=True, text=True, timeout=120)


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _check_row(record: dict[str, Any], expected: dict[str, Any], row: int) -> None:
    assert set(record) == {"line", "outputs"}, record
    np.testing.assert_allclose(record["outputs"]["probabilities"], expected["probabilities"][row], rtol=1e-6)
    assert record["outputs"]["labels"] == expected["labels"][row]


def test_json_lines_with_bad_lines(tabular: Path, rows: list[dict[str, Any]], expected: dict[str, Any],
                                   tmp_path: Path) -> None:
    lines = [json.dumps(r) for r in rows[:40]]
    lines[4] = json.dumps({**rows[4], "mean area": "large"})          # line 5: a field of the wrong type
    lines[8] = '{"mean radius": 17.99,'                                 # line 9: not JSON
    lines[11] = ""                                                      # line 12: blank, skipped
    v2 = {"id": "two-rows", "inputs": [{"name": "rows", "shape": [2], "datatype": "BYTES",
                                        "data": [json.dumps(rows[0]), json.dumps(rows[1])]}]}
    lines.append(json.dumps(v2))                                        # line 41: a V2 request of two rows
    source = tmp_path / "rows.jsonl"
    source.write_text("\n".join(lines) + "\n")
    done = _run(tabular, source, tmp_path / "out.jsonl")
    assert done.returncode == EXIT_LINES_FAILED, done.stderr
    assert "2 line(s) failed" in done.stderr
    out = _lines(tmp_path / "out.jsonl")
    assert [r["line"] for r in out] == [n for n in range(1, 42) if n != 12]
    by_line = {r["line"]: r for r in out}
    assert by_line[5] == {"line": 5, "error": "rows[0]: field 'mean area' must be a number, got the string \"large\""}
    assert set(by_line[9]) == {"line", "error"} and "not a JSON object" in by_line[9]["error"]
    for n in set(range(1, 41)) - {5, 9, 12}:
        _check_row(by_line[n], expected, n - 1)
    # an OUTPUT that is not a run's output is refused, never overwritten; so is INPUT itself
    other = tmp_path / "notes.jsonl"
    other.write_text('{"mine": 1}\n')
    for output, why in ((other, "is not the output of a run to resume"), (source, "is INPUT itself")):
        before = output.read_bytes()
        refused = _run(tabular, source, output)
        assert refused.returncode == 2 and why in refused.stderr and output.read_bytes() == before, refused.stderr
    last = by_line[41]
    assert last["id"] == "two-rows" and last["outputs"]["labels"] == expected["labels"][:2]
    np.testing.assert_allclose(last["outputs"]["probabilities"], expected["probabilities"][:2], rtol=1e-6)


def test_csv_with_a_bad_record(tabular: Path, rows: list[dict[str, Any]], expected: dict[str, Any],
                               tmp_path: Path) -> None:
    fields = list(rows[0])
    source = tmp_path / "rows.csv"
    with source.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(fields)
        for i, row in enumerate(rows[:30]):
            values = [row[k] for k in fields]
            if i == 6:
                values[3] = ""  # required field missing: record 7 is line 8 (the header is line 1)
            writer.writerow(values)
    done = _run(tabular, source, tmp_path / "out.jsonl")
    assert done.returncode == EXIT_LINES_FAILED, done.stderr
    out = _lines(tmp_path / "out.jsonl")
    assert [r["line"] for r in out] == list(range(2, 32))
    assert out[6] == {"line": 8, "error": f"rows[0]: field {fields[3]!r} is required but missing"}
    for i, record in enumerate(out):
        if i != 6:
            _check_row(record, expected, i)
    # Parquet: written when pyarrow is installed, else refused before any work
    parquet = tmp_path / "out.parquet"
    done = _run(tabular, source, parquet)
    try:
        import pyarrow.parquet as pq
    except ImportError:
        assert done.returncode == 2 and "needs the pyarrow package" in done.stderr and not parquet.exists()
        return
    assert done.returncode == EXIT_LINES_FAILED, done.stderr
    table = pq.read_table(parquet).to_pylist()
    assert [r["line"] for r in table] == list(range(2, 32)) and table[6]["error"] == out[6]["error"]
    assert table[0]["outputs"]["labels"] == expected["labels"][0] and table[0]["error"] is None
    assert not (tmp_path / "out.parquet.partial.jsonl").exists()


def test_a_killed_run_resumes_without_losing_or_repeating_a_line(
        tabular: Path, rows: list[dict[str, Any]], expected: dict[str, Any], tmp_path: Path) -> None:
    total = 25_000
    texts = [json.dumps(r) for r in rows]
    lines = [texts[i % len(texts)] for i in range(total)]
    lines[6] = "[1, 2]"  # line 7: not a row
    source, output = tmp_path / "rows.jsonl", tmp_path / "out.jsonl"
    source.write_text("\n".join(lines) + "\n")
    command = [sys.executable, "-m", "infc", "run", str(tabular), str(source), "-o", str(output), "-q"]
    run = subprocess.Popen(command, start_new_session=True, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and run.poll() is None:
        if output.exists() and output.stat().st_size > 0:  # the first batch is written
            break
        time.sleep(0.005)
    os.killpg(run.pid, signal.SIGKILL)  # the front and the bundle's process it started
    run.wait()
    written = output.read_bytes()
    assert 0 < written.count(b"\n") < total, "the run was not interrupted partway"
    with output.open("ab") as f:  # as if killed in the middle of a write
        f.write(b'{"line": 123456, "outp')
    done = subprocess.run(command[:-1], capture_output=True, text=True, timeout=120)
    assert done.returncode == EXIT_LINES_FAILED, done.stderr
    assert "resumed after line" in done.stderr
    out = _lines(output)
    assert [r["line"] for r in out] == list(range(1, total + 1))
    assert "error" in out[6] and all("error" not in r for i, r in enumerate(out) if i != 6)
    for i in (0, 1, 2, 500, total // 2, total - 1):
        _check_row(out[i], expected, i % len(rows))
    assert _run(tabular, source, output, "-q").returncode == EXIT_LINES_FAILED  # done: nothing more, still failed
    assert len(_lines(output)) == total


def test_a_folder_of_images(tmp_path_factory: pytest.TempPathFactory) -> None:
    tmp = tmp_path_factory.mktemp("run-png")
    spec = _copy_spec(PNG, tmp / "spec", "digits_png.yaml",
                      {"model: ../digits/digits.onnx": "model: digits.onnx", "quantize: static": "quantize: none",
                       "  max_queue: 512": "  max_queue: 512\n  max_batch_size: 16\n  max_queue_delay_ms: 1"},
                      {"digits.onnx": ROOT / "specs" / "digits" / "digits.onnx", "calib.npz": PNG / "calib.npz",
                       "val.npz": PNG / "val.npz"})
    result = build(spec, tmp / "out", iterations=20, latency_gate="off", lock="ignore")
    assert result.path is not None
    folder = tmp / "images"
    folder.mkdir()
    with np.load(PNG / "val.npz") as val:
        images, labels = val["png"][:20], val["labels"][:20]
    for i, image in enumerate(images):
        (folder / f"{i:03d}.png").write_bytes(image)
    (folder / "007b.png").write_bytes(b"not an image")  # sorted after 007.png: line 9
    done = _run(result.path, folder, tmp / "out.jsonl")
    assert done.returncode == EXIT_LINES_FAILED, done.stderr
    out = _lines(tmp / "out.jsonl")
    assert [r["line"] for r in out] == list(range(1, 22))
    assert out[8]["file"] == "007b.png" and "not a decodable PNG/JPEG image" in out[8]["error"]
    good = out[:8] + out[9:]
    assert [r["file"] for r in good] == [f"{i:03d}.png" for i in range(20)]
    reference = Pipeline.load(result.path).run({"png": images.astype(object)})
    names = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    for i, record in enumerate(good):
        assert record["outputs"]["labels"] == [b.decode() for b in reference["labels"][i]]
        np.testing.assert_allclose(record["outputs"]["scores"], reference["scores"][i], rtol=1e-6)
    agree = np.mean([r["outputs"]["labels"][0] == names[label] for r, label in zip(good, labels, strict=True)])
    assert agree >= 0.9


# -- the streaming endpoint -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tabular: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with serving(tabular, tmp_path_factory.mktemp("run-serve") / "server.log") as srv:
        yield srv


def test_the_stream_answers_every_line(server: Server, rows: list[dict[str, Any]], expected: dict[str, Any]) -> None:
    lines = [json.dumps(r) for r in rows[:100]]
    lines[9] = json.dumps({"id": "bad", "inputs": [{"name": "rows", "shape": [1], "datatype": "BYTES",
                                                    "data": [json.dumps({"mean radius": 1})]}]})
    lines[20] = "not json"
    lines[30] = json.dumps({"id": "ok", "inputs": [{"name": "rows", "shape": [1], "datatype": "BYTES",
                                                   "data": [json.dumps(rows[30])]}]})
    url = f"http://{server.url}/v2/models/tabular-risk/infer_stream"
    with httpx.stream("POST", url, content="\n".join(lines).encode(), timeout=60,
                      headers={"Content-Type": "application/x-ndjson"}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/x-ndjson"
        assert response.headers.get("transfer-encoding") == "chunked"
        results = [json.loads(line) for line in response.iter_lines() if line]
    assert sorted(r["line"] for r in results) == list(range(1, 101))
    by_line = {r["line"]: r for r in results}
    assert by_line[10] == {"line": 10, "id": "bad", "status": 400,
                           "error": "inputs: rows[0]: field 'mean texture' is required but missing"}
    assert by_line[21]["status"] == 400 and "not a JSON object" in by_line[21]["error"]
    assert by_line[31]["id"] == "ok"
    for n, result in by_line.items():
        if n in (10, 21):
            continue
        outputs = {o["name"]: o["data"] for o in result["outputs"]}
        np.testing.assert_allclose(outputs["probabilities"], expected["probabilities"][n - 1], rtol=1e-6)
        assert outputs["labels"] == [expected["labels"][n - 1]]
    # an unknown model is a plain 404 before any stream
    assert httpx.post(url.replace("tabular-risk", "nope"), content=b"{}\n").status_code == 404


def test_results_stream_back_before_the_body_ends(server: Server, rows: list[dict[str, Any]]) -> None:
    """A chunked request: the first lines' results arrive while the client has not finished sending."""
    host, port = server.url.split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(b"POST /v2/models/tabular-risk/infer_stream HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     b"Content-Type: application/x-ndjson\r\nTransfer-Encoding: chunked\r\n\r\n")

        def chunk(data: bytes) -> bytes:
            return b"%x\r\n%s\r\n" % (len(data), data)

        first = ("\n".join(json.dumps(r) for r in rows[:3]) + "\n").encode()
        sock.sendall(chunk(first))
        received = b""
        while received.count(b'"line":') < 3:
            data = sock.recv(65536)
            assert data, "the server closed the connection"
            received += data
        assert received.startswith(b"HTTP/1.1 200 ")
        sock.sendall(chunk(b"bad line\n") + b"0\r\n\r\n")
        while not received.endswith(b"0\r\n\r\n"):
            data = sock.recv(65536)
            assert data, "the server closed the connection"
            received += data
    assert b'"line":4,"status":400' in received


def test_the_model_repository_server_streams_too(tabular: Path, rows: list[dict[str, Any]],
                                                 expected: dict[str, Any], tmp_path: Path) -> None:
    repo = tmp_path / "models"
    shutil.copytree(tabular, repo / "tabular-risk" / "1.0.0")
    key = "stream-test-key-0123456789"
    server = Server([sys.executable, "-m", "infc_runtime", "serve", str(repo), "--port", "{port}"],
                    tmp_path / "server.log", env={**os.environ, "INFC_API_KEYS": f"ci:{key}"})
    try:
        server.wait_ready()
        body = ("\n".join([json.dumps(rows[0]), "{", json.dumps(rows[1])]) + "\n").encode()
        url = f"http://{server.url}/v2/models/tabular-risk/infer_stream"
        assert httpx.post(url, content=body).status_code == 401  # the same keys as /infer
        auth = {"Authorization": f"Bearer {key}"}
        for path in ("tabular-risk", "tabular-risk/versions/1.0.0"):
            response = httpx.post(f"http://{server.url}/v2/models/{path}/infer_stream", content=body, timeout=30,
                                  headers=auth)
            assert response.status_code == 200, response.text
            by_line = {r["line"]: r for r in map(json.loads, response.text.splitlines())}
            assert sorted(by_line) == [1, 2, 3] and by_line[2]["status"] == 400
            for n in (1, 3):
                assert by_line[n]["model_version"] == "1.0.0"
                outputs = {o["name"]: o["data"] for o in by_line[n]["outputs"]}
                assert outputs["labels"] == [expected["labels"][(n - 1) // 2]]
        missing = httpx.post(f"http://{server.url}/v2/models/tabular-risk/versions/9.9.9/infer_stream",
                             content=body, headers=auth)
        assert missing.status_code == 404 and "is not loaded" in missing.json()["error"]
    finally:
        server.stop()


def test_a_changed_bundle_is_refused_before_any_of_it_runs(tabular: Path, rows: list[dict[str, Any]],
                                                          tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    shutil.copytree(tabular, bundle)
    marker = tmp_path / "imported"
    with (bundle / "kernels" / "pre.py").open("a") as f:
        f.write(f"\nopen({str(marker)!r}, 'w').close()\n")
    source = tmp_path / "rows.jsonl"
    source.write_text(json.dumps(rows[0]) + "\n")
    done = _run(bundle, source, tmp_path / "out.jsonl")
    assert done.returncode == 2 and "kernels/pre.py" in done.stderr and "changed" in done.stderr, done.stderr
    assert not marker.exists() and not (tmp_path / "out.jsonl").exists()


def test_a_bundle_without_the_batch_runner_is_a_usage_error(tmp_path: Path) -> None:
    from infc.cli import main

    source = tmp_path / "rows.jsonl"
    source.write_text("{}\n")
    assert main(["run", str(tmp_path), str(source), "-o", str(tmp_path / "out.jsonl")]) == 2
