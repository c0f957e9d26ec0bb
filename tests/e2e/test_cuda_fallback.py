"""A bundle built for `target: cuda`, on this host without CUDA: it never serves silently on CPU.

Without `--allow-cpu-fallback` each way of starting it exits 3 before listening, with one line naming the
missing provider, what onnxruntime offers here and the way out; with it, it serves on CPU and says so in its
log, its model metadata and its metrics. The build of it says its latency figures are CPU's.
(`cuda_bundle`: tests/e2e/conftest.py.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
import pytest
from examples import DIGITS_DIR
from servers import Server, free_port

from infc_runtime.pipeline import Pipeline

CUDA, CPU = "CUDAExecutionProvider", "CPUExecutionProvider"

pytestmark = pytest.mark.skipif(CUDA in ort.get_available_providers(),
                                reason="this host's onnxruntime offers CUDA: the fallback cannot be shown here")


def _started(command: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)


@pytest.mark.parametrize("how", ["serve.py", "python -m infc_runtime serve", "infc serve"])
def test_without_cuda_it_exits_3_before_listening_saying_what_is_missing(cuda_bundle: Path, how: str) -> None:
    port = str(free_port())
    command = {"serve.py": [sys.executable, str(cuda_bundle / "serve.py"), "--port", port],
               "python -m infc_runtime serve": [sys.executable, "-m", "infc_runtime", "serve", str(cuda_bundle),
                                                "--port", port],
               "infc serve": [sys.executable, "-m", "infc", "serve", str(cuda_bundle), "--port", port]}[how]
    done = _started(command, env={k: v for k, v in os.environ.items() if k != "INFC_ALLOW_CPU_FALLBACK"})
    assert done.returncode == 3, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, done.stderr
    (error,) = errors
    assert str(cuda_bundle) in error and f"built for {CUDA}" in error
    assert f"offers {', '.join(ort.get_available_providers())}" in error
    assert "--allow-cpu-fallback" in error and "INFC_ALLOW_CPU_FALLBACK=1" in error
    assert "Traceback" not in done.stderr
    assert "Uvicorn running" not in done.stderr + done.stdout and "Started server" not in done.stderr


def test_an_unclear_fallback_variable_is_a_usage_error(cuda_bundle: Path) -> None:
    done = _started([sys.executable, str(cuda_bundle / "serve.py"), "--port", str(free_port())],
                    env={**os.environ, "INFC_ALLOW_CPU_FALLBACK": "perhaps"})
    assert done.returncode == 2 and "error: INFC_ALLOW_CPU_FALLBACK='perhaps': expected 1" in done.stderr


def test_with_allow_cpu_fallback_it_serves_on_cpu_and_says_so(cuda_bundle: Path, tmp_path: Path) -> None:
    server = Server([sys.executable, str(cuda_bundle / "serve.py"), "--port", "{port}", "--allow-cpu-fallback"],
                    tmp_path / "server.log")
    images = np.load(DIGITS_DIR / "val.npz")["image"][:2]
    try:
        server.wait_ready(timeout=120)
        with httpx.Client(base_url=f"http://{server.url}") as client:
            body = {"inputs": [{"name": "image", "datatype": "UINT8", "shape": [2, 8, 8],
                                "data": images.ravel().tolist()}]}
            answer = client.post("/v2/models/digits/infer", json=body)
            metadata = client.get("/v2/models/digits").json()
            metrics = client.get("/metrics").text
    finally:
        assert server.stop() == 0
    assert answer.status_code == 200, answer.text
    labels = next(o for o in answer.json()["outputs"] if o["name"] == "labels")["data"]
    expected = Pipeline.load(cuda_bundle, allow_cpu_fallback=True).run({"image": images})["labels"]
    assert labels == [x.decode() if isinstance(x, bytes) else str(x) for x in expected.ravel()]
    assert metadata["parameters"] == {"execution_providers": [CPU], "cpu_fallback": True}
    assert 'infc_cpu_fallback{model="digits",version="1.0.0"} 1.0' in metrics
    assert f'infc_execution_provider{{model="digits",provider="{CPU}",version="1.0.0"}} 1.0' in metrics
    log = server.log.read_text()
    assert f"WARNING:     infc_runtime: CPU FALLBACK: model 'digits' was built for {CUDA}" in log
    assert f"runs on execution providers {CPU} (built for {CUDA}, {CPU})" in log


def test_measure_refuses_it_and_with_the_variable_measures_it_on_cpu(cuda_bundle: Path) -> None:
    quick = ["--min-samples", "5", "--min-seconds", "0", "--max-seconds", "1"]
    base = {k: v for k, v in os.environ.items() if k != "INFC_ALLOW_CPU_FALLBACK"}
    refused = _started([sys.executable, "-m", "infc_runtime", "measure", str(cuda_bundle), *quick], env=base)
    assert (refused.returncode, refused.stdout) == (3, "") and f"built for {CUDA}" in refused.stderr
    done = _started([sys.executable, "-m", "infc_runtime", "measure", str(cuda_bundle), *quick],
                    env={**base, "INFC_ALLOW_CPU_FALLBACK": "1"})
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert (doc["providers"], doc["cpu_fallback"]) == ([CPU], [CUDA])


def test_its_build_says_the_latency_was_measured_on_cpu(cuda_bundle: Path) -> None:
    report = (cuda_bundle / "report.md").read_text()
    assert f"the build host has no {CUDA}, so the bundle was measured on CPU ({CPU})" in report
    assert f"| execution provider | {CUDA} (**not available on the build host: measured on {CPU}**) |" in report
    assert f"**Measured on CPU ({CPU}), not on {CUDA}" in report
    assert "**PASS**: every budget met." not in report
    latency = json.loads((cuda_bundle / "manifest.json").read_text())["measurements"]["results"]["latency"]
    assert (latency["providers"], latency["cpu_fallback"], latency["on_target"]) == ([CPU], [CUDA], False)
