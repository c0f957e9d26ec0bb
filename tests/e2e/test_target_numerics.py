"""A build for a target that is not this host, with a stand-in for the emulator: every candidate's model runs
through the runner (the target's numerics), and the speed choice is the rule, said so in the report. The real
emulator runs behind the `qemu` marker (test_arm_qemu.py)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from examples import digits_copy

import infc.build
from infc.build import build
from infc.emulate import Emulator
from infc.plan import Plan
from infc.target_numerics import TargetNumerics

ARM_DOTPROD = {"target: {hardware: x86, isa: native}": "target: {hardware: arm, isa: arm64_dotprod}"}


class FakeRunner:
    """Runs each model with this host's onnxruntime, and counts what it was given."""

    models: list[int] = []

    def __init__(self, emulator: Emulator) -> None:
        self.emulator = emulator

    def infer(self, model: onnx.ModelProto) -> Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]:
        FakeRunner.models.append(len(model.graph.node))
        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        names = [o.name for o in session.get_outputs()]

        def run(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            feeds = {i.name: inputs[i.name] for i in session.get_inputs()}
            return dict(zip(names, session.run(names, feeds), strict=True))

        return run

    def close(self) -> None:
        pass


def test_arm_dotprod_build_measures_accuracy_through_the_runner_and_chooses_by_rule(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = Emulator("qemu-aarch64 -cpu fake", ("false",))

    def numerics(plan: Plan, site: Callable[[], Path | None]) -> TargetNumerics:
        assert (plan.target, plan.isa) == ("arm", "arm64_dotprod")
        return TargetNumerics(fake, "accuracy measured on the target's numerics (fake runner)")

    monkeypatch.setattr(infc.build, "target_numerics", numerics)
    monkeypatch.setattr(infc.build, "EmulatedRunner", FakeRunner)
    FakeRunner.models.clear()
    spec = digits_copy(tmp_path, ARM_DOTPROD)
    outcome = build(spec, tmp_path / "out", iterations=20, latency_gate="off", lock="ignore")
    tried = [e.candidate.name for e in outcome.evaluations]
    assert len(FakeRunner.models) == len(tried) and "fp32" in tried and "dynamic" in tried
    # digits is an MLP (all its weights feed MatMul): the rule ships dynamic int8 on arm64_dotprod
    assert outcome.chosen.candidate.name == "dynamic" and outcome.chosen.accurate
    verdict = outcome.choice.verdict(outcome.chosen)
    assert "rule, not a measurement" in verdict and "MatMul-heavy" in verdict
    assert "accuracy measured on the target's numerics (fake runner)" in outcome.report
    assert "rule, not a measurement" in outcome.report


def test_arm_build_without_emulator_keeps_fp32_and_says_how_to_set_one_up(tmp_path: Path) -> None:
    spec = digits_copy(tmp_path, ARM_DOTPROD)
    outcome = build(spec, tmp_path / "out", iterations=20, latency_gate="off", lock="ignore", write=False)
    assert outcome.chosen.candidate.name == "fp32"
    note = next(n for n in outcome.plan.notes if n.startswith("accuracy measured on this host's numerics"))
    assert "not the target's (arm/arm64_dotprod)" in note and "python -m infc.emulate setup" in note
    assert note in outcome.report
