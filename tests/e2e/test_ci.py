"""infc as a CI gate and a reviewer's tool: --json documents, GitHub annotations, the lock, `infc diff`."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from examples import DIGITS_SPEC, digits_copy

from infc.results import results_schema


def infc(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "infc", *args], capture_output=True, text=True, timeout=600,
                          cwd=cwd)


def _document(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """stdout is exactly one JSON document, valid against the shipped schema."""
    doc: dict[str, Any] = json.loads(done.stdout)
    jsonschema.validate(doc, results_schema())
    assert doc["exit_code"] == done.returncode and doc["ok"] is (done.returncode == 0)
    return doc


@pytest.fixture(scope="module")
def builds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The example built twice with one setting changed (fp32, then dynamic int8), each with --json.
    The accuracy budget is loose enough for any host's int8 kernels, so dynamic is chosen as it is."""
    root = tmp_path_factory.mktemp("ci")
    out: dict[str, Any] = {"root": root}
    for side, quantize in (("old", "none"), ("new", "dynamic")):
        spec = digits_copy(root / side, {"quantize: auto": f"quantize: {quantize}", "min: 0.99": "min: 0.9"})
        done = infc("build", str(spec), "-o", str(root / side / "out"), "--iterations", "50", "--latency-gate",
                    "off", "--json")
        assert done.returncode == 0, done.stdout + done.stderr
        out[side] = {"spec": spec, "doc": _document(done), "bundle": root / side / "out" / "digits-1.0.0",
                     "stderr": done.stderr}
    return out


def test_build_json_is_one_document_with_every_budget(builds: dict[str, Any]) -> None:
    doc, bundle = builds["new"]["doc"], builds["new"]["bundle"]
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert doc["bundle"]["content_hash"] == manifest["content_hash"] and doc["bundle"]["path"] == str(bundle)
    assert doc["plan"]["chosen"] == "dynamic" and doc["lock"]["state"] == "written"
    kinds = {(b["kind"], b["name"]): b for b in doc["budgets"]}
    assert set(kinds) == {("accuracy", "top1_agreement"), ("latency", "p95"), ("latency", "p99")}
    assert kinds["accuracy", "top1_agreement"]["verdict"] == "pass"
    p99 = kinds["latency", "p99"]
    assert p99["bound"] == 10 and p99["enforced"] is False and len(p99["interval"]) == 2  # --latency-gate off
    assert p99["verdict"] in ("pass", "fail", "inconclusive")
    # progress went to stderr, line by line (not a terminal), never to stdout
    assert "infc: [" in builds["new"]["stderr"] and "measuring the bundle in a fresh process" in builds["new"]["stderr"]


def test_build_json_on_spec_errors_and_on_a_missed_budget(tmp_path: Path) -> None:
    bad = digits_copy(tmp_path / "bad", {"target: {hardware: x86, isa: native}": "target: x68", "k: 3": "k: 0"})
    done = infc("build", str(bad), "-o", str(tmp_path / "out"), "--json", cwd=tmp_path / "bad")
    doc = _document(done)
    assert done.returncode == 2 and doc["bundle"] is None
    assert {(e["line"], e["path"]) for e in doc["errors"]} >= {(7, "target"), (24, "postprocess[1].topk.k")}
    miss = digits_copy(tmp_path / "miss", {"accuracy: {metric: top1_agreement, min: 0.99}":
                                     "accuracy: {metric: max_abs_error, max: 0.0000001}",
                                     "quantize: auto": "quantize: dynamic"})
    done = infc("build", str(miss), "-o", str(tmp_path / "out"), "--iterations", "20", "--latency-gate", "off",
                "--json")
    doc = _document(done)
    assert done.returncode == 4 and doc["bundle"]["path"] is None
    (acc,) = [b for b in doc["budgets"] if b["kind"] == "accuracy"]
    assert acc["verdict"] == "fail" and acc["op"] == "<=" and acc["value"] > acc["bound"]
    assert doc["headline"].startswith("**FAIL**") and "max_abs_error" in doc["errors"][0]["message"]
    assert doc["lock"]["state"] == "not written" and not (tmp_path / "miss" / "digits.lock").exists()


def test_an_unwritable_output_is_exit_2_before_any_work(tmp_path: Path) -> None:
    spec = digits_copy(tmp_path, {})
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    done = infc("build", str(spec), "-o", str(blocker / "out"))
    assert done.returncode == 2, done.stderr
    assert "-o/--outdir" in done.stderr and "cannot write there" in done.stderr
    assert "Traceback" not in done.stderr and "infc: [" not in done.stderr  # no step of the build ran
    assert not (tmp_path / "digits.lock").exists()


def test_locked_reuses_a_valid_lock_and_refuses_a_stale_one(builds: dict[str, Any], tmp_path: Path) -> None:
    spec = builds["old"]["spec"]
    done = infc("build", str(spec), "-o", str(tmp_path / "out"), "--latency-gate", "off", "--locked", "--json")
    doc = _document(done)
    assert done.returncode == 0 and doc["lock"]["state"] == "reused"
    assert doc["bundle"]["content_hash"] == builds["old"]["doc"]["bundle"]["content_hash"]
    stale = digits_copy(tmp_path / "stale", {"quantize: auto": "quantize: none", "min: 0.99": "min: 0.9",
                                             "k: 3": "k: 2"})
    shutil.copy(spec.with_suffix(".lock"), stale.with_suffix(".lock"))
    done = infc("build", str(stale), "-o", str(tmp_path / "out"), "--locked")
    assert done.returncode == 2
    assert "is out of date: spec changed (postprocess[1].topk.k)" in done.stderr
    assert "--relock" in done.stderr
    fresh = digits_copy(tmp_path / "fresh", {})
    done = infc("build", str(fresh), "-o", str(tmp_path / "out"), "--locked")
    assert done.returncode == 2 and "no lock file" in done.stderr


def test_validate_github_annotations_land_on_the_right_lines(tmp_path: Path) -> None:
    spec = digits_copy(tmp_path, {"target: {hardware: x86, isa: native}": "target: x68", "k: 3": "k: 0"})
    done = infc("validate", "digits.yaml", "--format", "github", cwd=tmp_path)
    assert done.returncode == 2
    lines = done.stdout.splitlines()
    assert len(lines) == 2 and all(ln.startswith("::error file=digits.yaml,line=") for ln in lines), lines
    text = spec.read_text().splitlines()
    for line in lines:
        number = int(line.split("line=")[1].split(",")[0])
        assert ("x68" in text[number - 1]) or ("k: 0" in text[number - 1]), (line, text[number - 1])
    doc = _document(infc("validate", "digits.yaml", str(DIGITS_SPEC), "--json", cwd=tmp_path))
    assert [s["ok"] for s in doc["specs"]] == [False, True] and len(doc["errors"]) == 2
    plan = _document(infc("plan", "digits.yaml", "--json", cwd=tmp_path))
    assert plan["exit_code"] == 2 and {e["path"] for e in plan["errors"]} == {"target", "postprocess[1].topk.k"}
    batching = _document(infc("plan", str(DIGITS_SPEC), "--json"))["batching"]
    # the committed lock was made on an AVX2 host; on another ISA `isa: native` makes it out of date
    assert batching["lock"].endswith("digits.lock") and batching["lock_state"] in ("valid", "out of date")
    assert ("candidate" in batching) == (batching["lock_state"] == "valid")


def test_diff_of_two_bundles_is_a_pull_request_table(builds: dict[str, Any]) -> None:
    done = infc("diff", str(builds["old"]["bundle"]), str(builds["new"]["bundle"]))
    assert done.returncode == 0, done.stderr
    table = done.stdout
    print(table)
    assert table.startswith("### infc diff: digits")
    assert "| spec | `optimize.quantize` | none | dynamic | changed |" in table
    assert "| model | chosen plan | fp32 | dynamic | changed |" in table
    quantized = next(ln for ln in table.splitlines() if "| quantization ops |" in ln)
    assert quantized.split("|")[3].strip() == "0" and int(quantized.split("|")[4]) > 0
    assert any(ln.startswith("| model | ops: ") for ln in table.splitlines())
    assert "| accuracy | top1_agreement (budget >= 0.9) | 1.0000 pass |" in table
    assert any(ln.startswith("| latency | p99 (budget 10 ms) |") for ln in table.splitlines())
    doc = _document(infc("diff", str(builds["old"]["bundle"]), str(builds["new"]["bundle"]), "--json"))
    rows = {(r["section"], r["item"]): r for r in doc["rows"]}
    assert rows["spec", "`optimize.quantize`"]["change"] == "neutral"
    accuracy = rows["accuracy", "top1_agreement (budget >= 0.9)"]
    assert accuracy["change"] in ("worse", "same")  # int8 never agrees with fp32 better than fp32 itself


def test_diff_of_two_locks(builds: dict[str, Any]) -> None:
    old, new = (str(builds[side]["spec"].with_suffix(".lock")) for side in ("old", "new"))
    done = infc("diff", old, new)
    assert done.returncode == 0, done.stderr
    assert "| spec | `optimize.quantize` | none | dynamic | changed |" in done.stdout
    assert "| model | chosen plan | fp32 | dynamic | changed |" in done.stdout


def test_diff_of_two_specs_builds_them_once_through_the_cache(builds: dict[str, Any], tmp_path: Path) -> None:
    old, new = str(builds["old"]["spec"]), str(builds["new"]["spec"])
    cache = tmp_path / "cache"
    first = infc("diff", old, new, "--cache-dir", str(cache), "--latency-gate", "off")
    assert first.returncode == 0, first.stderr
    assert "| model | chosen plan | fp32 | dynamic | changed |" in first.stdout
    assert first.stderr.count("measuring the bundle in a fresh process") == 2
    assert len(list((cache / "builds").iterdir())) == 2
    second = infc("diff", old, new, "--cache-dir", str(cache), "--latency-gate", "off")
    assert second.returncode == 0 and "measuring the bundle" not in second.stderr  # both from the cache
    assert second.stdout.split("| latency |")[0] == first.stdout.split("| latency |")[0]
    # a tampered cache entry is rebuilt, never trusted
    entry = next(p for p in (cache / "builds").iterdir() if (p / "outcome.json").is_file())
    model = next(entry.glob("*/model.onnx"))
    model.write_bytes(model.read_bytes() + b"\0")
    third = infc("diff", old, new, "--cache-dir", str(cache), "--latency-gate", "off")
    assert third.returncode == 0 and third.stderr.count("measuring the bundle in a fresh process") == 1
