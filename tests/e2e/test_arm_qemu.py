"""Targets proven, not assumed (opt-in: `pytest -m qemu`, after `python -m infc.emulate setup`; minutes).

An arm bundle, built here with its candidates' accuracy measured under qemu-aarch64, serves from its own
serve.py under qemu-aarch64 with the CPU model of its ISA (cortex-a72: no dot-product; neoverse-n1: with it),
and answers like the x86 fp32 reference (the spec built with `quantize: none`, served here), within the spec's
top1_agreement budget, on the 450 validation images. And an older
x86-64 (qemu-x86_64 -cpu Haswell) runs the build's own interpreter for an avx2 target's numerics.
"""

from __future__ import annotations

import os
import tarfile
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from examples import DIGITS_DIR, digits_copy
from servers import Server, serving

from infc.build import build
from infc.emulate import CPU_MODELS, EMULATOR_DIR_ENV, EmulatorNotSetUp, arm64, target_site, x86_64
from infc.target_numerics import EmulatedRunner

pytestmark = pytest.mark.qemu


@pytest.fixture(autouse=True)
def emulators(monkeypatch: pytest.MonkeyPatch) -> Path:
    """The set-up emulator folder (the default run hides it); skips when nothing is set up there."""
    root = Path(os.environ["INFC_TESTS_EMULATOR_DIR"])
    monkeypatch.setenv(EMULATOR_DIR_ENV, str(root))
    try:
        arm64(CPU_MODELS["arm64"], None, root)
        x86_64(root=root)
    except EmulatorNotSetUp as e:
        pytest.skip(f"no emulator set up ({e})")
    return root


def _infer(url: str, images: np.ndarray) -> dict[str, Any]:
    body = {"inputs": [{"name": "image", "shape": list(images.shape), "datatype": "UINT8",
                        "data": images.ravel().tolist()}]}
    response = httpx.post(f"http://{url}/v2/models/digits/infer", json=body, timeout=300)
    assert response.status_code == 200, response.text
    return {o["name"]: o["data"] for o in response.json()["outputs"]}


@pytest.fixture(scope="module")
def x86_fp32(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The reference's answer to every validation image: digits in fp32 for this host, served here."""
    tmp = tmp_path_factory.mktemp("reference")
    spec = digits_copy(tmp / "spec", {"quantize: auto": "quantize: none"})
    outcome = build(spec, tmp / "out", iterations=20, latency_gate="off", lock="ignore")
    assert outcome.path is not None
    with serving(outcome.path, tmp / "host.log") as server:
        return _infer(server.url, np.load(DIGITS_DIR / "val.npz")["image"])


@pytest.mark.parametrize(("isa", "rule_choice"), [("arm64", "fp32"), ("arm64_dotprod", "dynamic")])
def test_arm_bundle_serves_under_qemu_like_on_x86(tmp_path: Path, isa: str, rule_choice: str,
                                                  x86_fp32: dict[str, Any]) -> None:
    spec = digits_copy(tmp_path / "spec", {"target: {hardware: x86, isa: native}":
                                           f"target: {{hardware: arm, isa: {isa}}}"})
    outcome = build(spec, tmp_path / "out", iterations=20, latency_gate="off", lock="ignore", wheelhouse=True,
                    archive=True)
    assert outcome.path is not None and outcome.archive is not None
    cpu = CPU_MODELS[isa]
    assert any(f"under `qemu-aarch64 -cpu {cpu}`" in note for note in outcome.plan.notes)
    # digits is an MLP: the rule ships dynamic int8 on arm64_dotprod (accurate on its numerics), fp32 on arm64
    assert outcome.chosen.candidate.name == rule_choice and outcome.chosen.accurate
    assert "rule, not a measurement" in outcome.choice.verdict(outcome.chosen)

    # what ships: the archive, unpacked on the "device", its aarch64 wheelhouse installed with no index
    with tarfile.open(outcome.archive) as archive:
        archive.extractall(tmp_path / "device", filter="data")
    bundle = tmp_path / "device" / outcome.path.name
    emulator = arm64(cpu, target_site((bundle / "requirements.txt").read_text(), wheels=bundle / "wheels"))
    images = np.load(DIGITS_DIR / "val.npz")["image"]
    server = Server(emulator.command(bundle / "serve.py", ["--port", "{port}"]), tmp_path / "qemu.log",
                    env=emulator.environ())
    try:
        server.wait_ready(timeout=900)  # Numba compiles the kernels under emulation: tens of seconds
        on_arm = _infer(server.url, images)
    finally:
        assert server.stop() == 0
    top1 = [np.asarray(out["labels"], dtype=object).reshape(len(images), -1)[:, 0] for out in (on_arm, x86_fp32)]
    assert float(np.mean(top1[0] == top1[1])) >= 0.99  # the spec's budget: top1_agreement min 0.99


def test_avx2_numerics_from_the_builds_own_interpreter_under_qemu_x86_64() -> None:
    model = onnx.load(DIGITS_DIR / "digits.onnx")
    x = np.random.default_rng(0).standard_normal((16, 1, 8, 8)).astype(np.float32)
    runner = EmulatedRunner(x86_64())
    try:
        assert runner.info["machine"] == "x86_64"
        emulated = runner.infer(model)({"image": x})["logits"]
    finally:
        runner.close()
    host = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"image": x})
    np.testing.assert_allclose(emulated, host[0], rtol=1e-4, atol=1e-5)
