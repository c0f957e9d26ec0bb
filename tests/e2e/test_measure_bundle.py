"""`python -m infc_runtime measure` on a built bundle, with the bundle's own runtime copy, in a fresh process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from examples import DIGITS_DIR


def run_measure(bundle: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # run from inside the bundle: `-m infc_runtime` imports the copy it ships, as its serve.py does
    return subprocess.run([sys.executable, "-m", "infc_runtime", "measure", str(bundle), *args], cwd=bundle,
                          capture_output=True, text=True, timeout=300)


def test_measures_a_bundle_where_it_runs(digits_bundle: Path) -> None:
    proc = run_measure(digits_bundle, "--requests", str(DIGITS_DIR / "val.npz"), "--budget", "p99=1000",
                       "--batches", "1,2,4", "--max-seconds", "3")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)  # nothing but the document on stdout
    assert doc["format"] == 1 and doc["verdict"] == "pass"
    p50, p95, p99 = doc["percentiles"]
    assert p50["value_ms"] <= p95["value_ms"] <= p99["value_ms"]
    for p in (p50, p95, p99):
        assert p["low_ms"] <= p["value_ms"] <= p["high_ms"], p
    assert (p99["bound_ms"], p99["verdict"]) == (1000, "pass") and p50["verdict"] is None
    assert [b["batch"] for b in doc["batches"]] == [1, 2, 4]
    assert doc["gc"]["settled"]["frozen"] > 0 and doc["noise"]["cpus"] >= 1


def test_a_bad_requests_file_exits_2_with_one_line(digits_bundle: Path, tmp_path: Path) -> None:
    bad = tmp_path / "requests.npz"
    bad.write_text("image\n0 0 0\n")
    proc = run_measure(digits_bundle, "--requests", str(bad))
    assert (proc.returncode, proc.stdout) == (2, "")
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1 and str(bad) in proc.stderr
