"""The `infc` command as a user runs it: exit codes, stdout, stderr (never a traceback)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from examples import DIGITS_DIR, DIGITS_SPEC, digits_copy


def infc(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "infc", *args], capture_output=True, text=True, timeout=300,
                          cwd=cwd)


def test_build_succeeds_and_says_how_to_serve(tmp_path: Path) -> None:
    done = infc("build", str(DIGITS_SPEC), "-o", str(tmp_path / "out"), "--iterations", "50", "--no-latency-gate",
                "--no-lock")
    assert done.returncode == 0, done.stderr
    assert "built" in done.stdout and "serve.py --host 127.0.0.1 --port 8000" in done.stdout
    assert "top1_agreement" in done.stdout and "p99" in done.stdout
    assert (tmp_path / "out" / "digits-1.0.0" / "manifest.json").is_file()
    assert "Traceback" not in done.stderr


def test_validate_ok() -> None:
    done = infc("validate", str(DIGITS_SPEC))
    assert done.returncode == 0 and done.stdout.strip().endswith(": ok")


def test_spec_error_exit_2_located(tmp_path: Path) -> None:
    spec = digits_copy(tmp_path, {"target: {hardware: x86, isa: native}": "target: x68", "k: 3": "k: 0"})
    for command in ("validate", "build"):
        done = infc(command, str(spec), cwd=tmp_path)
        assert done.returncode == 2, done.stderr
        assert "digits.yaml:7:9 target: expected one of x86, arm, cuda, got 'x68'" in done.stderr
        assert "postprocess[1].topk.k" in done.stderr
        assert "Traceback" not in done.stderr and done.stdout == ""


def test_accuracy_budget_miss_exit_4_with_numbers(tmp_path: Path) -> None:
    spec = digits_copy(tmp_path, {"accuracy: {metric: top1_agreement, min: 0.99}":
                                    "accuracy: {metric: max_abs_error, max: 0.0001}",
                                    "quantize: auto": "quantize: static"})
    report = tmp_path / "report.md"
    done = infc("build", str(spec), "-o", str(tmp_path / "out"), "--iterations", "20", "--report", str(report),
                cwd=tmp_path)
    assert done.returncode == 4, done.stderr
    assert "accuracy: max_abs_error = " in done.stderr and "budget <= 0.0001" in done.stderr
    assert not (tmp_path / "out" / "digits-1.0.0").exists()
    assert "**FAIL**" in report.read_text() and "**MISS**" in report.read_text()
    assert "Traceback" not in done.stderr


def test_latency_budget_miss_exit_4(tmp_path: Path) -> None:
    spec = digits_copy(tmp_path, {"latency_ms: {p95: 5, p99: 10}": "latency_ms: {p99: 0.000001}"})
    done = infc("build", str(spec), "-o", str(tmp_path / "out"), "--iterations", "20", cwd=tmp_path)
    assert done.returncode == 4, done.stderr
    assert "latency: p99" in done.stderr and "> budget 1e-06 ms (fail)" in done.stderr


def test_schema_and_plan_print_json() -> None:
    schema = json.loads(infc("schema").stdout)
    assert schema["$schema"].endswith("2020-12/schema") and "budget" in schema["properties"]
    plan = json.loads(infc("plan", str(DIGITS_SPEC), "--json").stdout)
    assert [c["name"] for c in plan["candidates"]] == ["fp32", "dynamic", "dynamic_unfused", "static"]
    assert [p["name"] for p in plan["passes"]] == ["normalize", "fuse_transformer", "fuse_attention", "fuse_graph"]
    assert plan["command"] == "plan" and plan["batching"]["why"]


def test_plan_reads_as_text_by_default() -> None:
    done = infc("plan", str(DIGITS_SPEC))
    assert done.returncode == 0, done.stderr
    text = done.stdout
    for needle in ("plan for digits 1.0.0: target x86/", "candidates (quantize: auto", "  static",
                   "quantize_static(method=minmax, per_channel=True", "batching: max_batch_size ", "lock: "):
        assert needle in text, needle


@pytest.mark.parametrize("args", [["build"], ["nosuchcommand"], ["build", "missing.yaml"]])
def test_usage_errors_exit_2(args: list[str], tmp_path: Path) -> None:
    done = infc(*args, cwd=tmp_path)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr


def test_the_editor_schema_in_specs_is_current() -> None:
    shipped = json.loads((DIGITS_DIR.parent / "infc.schema.json").read_text())
    assert shipped == json.loads(infc("schema").stdout), "run: infc schema > specs/infc.schema.json"
    for spec in DIGITS_DIR.parent.glob("*/*.yaml"):
        assert spec.read_text().startswith("# yaml-language-server: $schema=../infc.schema.json\n"), spec
