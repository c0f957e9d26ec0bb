"""Where accuracy is measured when the host is not the target, and the speed rule that chooses then:
made-up plans, evaluations and emulator folders (the real emulated runs are behind the `qemu` marker)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from infc.choice import Evaluation
from infc.emulate import EMULATOR_DIR_ENV, EmulationError
from infc.gates import AccuracyResult
from infc.plan import Candidate, Plan
from infc.target_numerics import choose_by_rule, matmul_share, speed_rule, target_numerics


def _model(op: str) -> onnx.ModelProto:
    """A one-node model whose weights feed a MatMul or a Conv."""
    if op == "MatMul":
        w = numpy_helper.from_array(np.ones((8, 4), np.float32), "w")
        node = helper.make_node("MatMul", ["x", "w"], ["y"])
        x, y = [1, 8], [1, 4]
    else:
        w = numpy_helper.from_array(np.ones((4, 1, 3, 3), np.float32), "w")
        node = helper.make_node("Conv", ["x", "w"], ["y"])
        x, y = [1, 1, 5, 5], [1, 4, 3, 3]
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, y)], [w])
    return helper.make_model(graph)


def _plan(target: str, isa: str, host: str = "x86", host_isa: str = "avx2") -> Plan:
    names = ("fp32", "dynamic", "dynamic_unfused", "static")
    return Plan(target=target, isa=isa, host=host, host_isa=host_isa, host_matches_target=False,
                host_runs_target=host == target, provider="CPUExecutionProvider",
                candidates=tuple(Candidate(n, (), baseline=n == "fp32") for n in names))


def _ev(name: str, accurate: bool = True, exclude: tuple[str, ...] = ()) -> Evaluation:
    passes = () if name == "fp32" else (("quantize_dynamic", {"exclude": list(exclude)}),)
    acc = AccuracyResult("top1_agreement", 1.0 if accurate else 0.9, 0.99, accurate, 100, {})
    return Evaluation(Candidate(name, passes, baseline=name == "fp32"), onnx.ModelProto(), accuracy=(acc,))


def test_matmul_share_counts_the_weights_feeding_matmul() -> None:
    assert matmul_share(_model("MatMul")) == 1.0 and matmul_share(_model("Conv")) == 0.0


def test_rule_picks_dynamic_int8_only_for_matmul_heavy_models_on_int8_friendly_isas() -> None:
    family, why = speed_rule("arm64_dotprod", _model("MatMul"))
    assert family == "dynamic" and why.startswith("rule, not a measurement") and "SDOT" in why
    assert speed_rule("avx2", _model("MatMul"))[0] == "dynamic"
    family, why = speed_rule("arm64", _model("MatMul"))
    assert family == "fp32" and "no known int8 gain on arm64" in why
    family, why = speed_rule("arm64_dotprod", _model("Conv"))
    assert family == "fp32" and "not MatMul-heavy (0% of its weights" in why


def test_rule_chooses_the_accurate_dynamic_candidate_keeping_fewest_nodes_fp32() -> None:
    evs = [_ev("fp32"), _ev("dynamic", accurate=False), _ev("dynamic+fp32x1", exclude=("a",)),
           _ev("dynamic_unfused", exclude=()), _ev("static")]
    choice = choose_by_rule(evs, _plan("arm", "arm64_dotprod"), _model("MatMul"))
    assert choice.chosen.candidate.name == "dynamic_unfused"
    assert choice.verdict(choice.chosen).startswith("chosen: inside the accuracy budgets on the target's numerics")
    assert "rule, not a measurement" in choice.verdict(choice.chosen)
    assert choice.verdict(evs[1]) == "misses the accuracy budget (target numerics)"
    assert "not chosen" in choice.verdict(evs[0]) and "not chosen" in choice.verdict(evs[4])


def test_rule_keeps_fp32_when_no_dynamic_candidate_is_accurate_or_the_isa_has_no_gain() -> None:
    evs = [_ev("fp32"), _ev("dynamic", accurate=False), _ev("static")]
    choice = choose_by_rule(evs, _plan("arm", "arm64_dotprod"), _model("MatMul"))
    assert choice.chosen.candidate.name == "fp32"
    assert "no dynamic int8 candidate is inside the accuracy budgets" in choice.verdict(choice.chosen)
    choice = choose_by_rule([_ev("fp32"), _ev("dynamic")], _plan("arm", "arm64"), _model("MatMul"))
    assert choice.chosen.candidate.name == "fp32" and "no known int8 gain on arm64" in choice.verdict(choice.chosen)


def test_rule_reports_the_closest_when_nothing_is_accurate() -> None:
    evs = [_ev("fp32", accurate=False), _ev("dynamic", accurate=False)]
    choice = choose_by_rule(evs, _plan("arm", "arm64_dotprod"), _model("MatMul"))
    assert "still outside" in choice.verdict(choice.chosen)


def _fake_setup(root: Path) -> None:
    for rel in ("bin/qemu-aarch64", "bin/qemu-x86_64", "arm64-bookworm/usr/bin/python3.11"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("")


def test_arm_target_without_emulator_keeps_host_numerics_and_says_how_to_set_one_up(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(EMULATOR_DIR_ENV, str(tmp_path / "none"))

    def site() -> Path:
        raise AssertionError("no site is made without an emulator")

    numerics = target_numerics(_plan("arm", "arm64_dotprod"), site)
    assert numerics is not None and numerics.emulator is None
    assert "this host's numerics (x86/avx2), not the target's (arm/arm64_dotprod)" in numerics.note
    assert "python -m infc.emulate setup" in numerics.note and "qemu-aarch64 not found" in numerics.note


def test_arm_target_with_emulator_runs_under_the_isas_cpu_model(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(EMULATOR_DIR_ENV, str(tmp_path))
    _fake_setup(tmp_path)
    for isa, cpu in (("arm64", "cortex-a72"), ("arm64_dotprod", "neoverse-n1")):
        numerics = target_numerics(_plan("arm", isa), lambda: tmp_path / "site")
        assert numerics is not None and numerics.emulator is not None
        assert numerics.emulator.argv[1:3] == ("-cpu", cpu) and numerics.emulator.env["PYTHONPATH"].endswith("site")
        assert "speed choice is a rule, not a measurement" in numerics.note


def test_wheels_that_cannot_be_installed_keep_host_numerics(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(EMULATOR_DIR_ENV, str(tmp_path))
    _fake_setup(tmp_path)

    def site() -> Path:
        raise EmulationError("pip download failed: no network")

    numerics = target_numerics(_plan("arm", "arm64"), site)
    assert numerics is not None and numerics.emulator is None and "no network" in numerics.note


def test_x86_targets_avx2_emulated_on_a_newer_host_avx512_never(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(EMULATOR_DIR_ENV, str(tmp_path))
    _fake_setup(tmp_path)
    numerics = target_numerics(_plan("x86", "avx2", host_isa="avx512_vnni"), lambda: None)
    assert numerics is not None and numerics.emulator is not None
    assert numerics.emulator.name == "qemu-x86_64 -cpu Haswell"
    numerics = target_numerics(_plan("x86", "avx512_vnni", host_isa="avx2"), lambda: None)
    assert numerics is not None and numerics.emulator is None and "cannot emulate AVX-512, VNNI or AMX" in numerics.note
    assert "this host's numerics (x86/avx2)" in numerics.note
    assert target_numerics(_plan("cuda", "cuda"), lambda: None) is None
