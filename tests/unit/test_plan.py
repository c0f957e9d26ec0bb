"""The plan marks what the search relies on: the baseline candidate and the pass prefix every candidate shares."""

from __future__ import annotations

from pathlib import Path

from infc.plan import make_plan
from infc.spec import load_spec

ROOT = Path(__file__).resolve().parents[2]


def test_the_plan_marks_the_baseline_and_the_shared_prefix() -> None:
    plan = make_plan(load_spec(ROOT / "specs" / "digits" / "digits.yaml").spec)  # quantize: auto, fuse: true
    assert [(c.name, c.baseline) for c in plan.candidates] == [
        ("fp32", True), ("dynamic", False), ("dynamic_unfused", False), ("static", False)]
    assert plan.shared == 3
    fused = [c for c in plan.candidates if c.name != "dynamic_unfused"]
    fronts = [repr(c.passes[:plan.shared]) for c in fused]
    assert len(set(fronts)) == 1 and [name for name, _ in plan.passes[:plan.shared]] == [
        "normalize", "fuse_transformer", "fuse_attention"]
    assert len({repr(c.passes[:plan.shared + 1]) for c in fused}) == 3
    assert "shared" not in plan.to_dict() and "baseline" not in plan.to_dict()["candidates"][0]


def test_auto_adds_the_dynamic_int8_before_the_fusions() -> None:
    plan = make_plan(load_spec(ROOT / "specs" / "digits" / "digits.yaml").spec)
    by_name = {c.name: c for c in plan.candidates}
    unfused, fused = by_name["dynamic_unfused"], by_name["dynamic"]
    assert [n for n, _ in unfused.passes] == ["normalize", "quantize_dynamic", "fuse_graph"]
    assert unfused.passes[1:] == fused.passes[plan.shared:]  # the same int8 and the same graph optimizer
    assert unfused.unless_unchanged_by == ("fuse_transformer", "fuse_attention")
    assert not any(c.unless_unchanged_by for c in plan.candidates if c is not unfused)


def test_no_unfused_candidate_without_fusions_or_auto(tmp_path: Path) -> None:
    source = (ROOT / "specs" / "digits" / "digits.yaml").read_text()
    for name in ("digits.onnx", "calib.npz", "val.npz"):
        (tmp_path / name).symlink_to(ROOT / "specs" / "digits" / name)
    for old, new, expected in (("fuse: true", "fuse: false", ["fp32", "dynamic", "static"]),
                               ("quantize: auto", "quantize: dynamic", ["dynamic"])):
        assert old in source
        (tmp_path / "digits.yaml").write_text(source.replace(old, new))
        assert [c.name for c in make_plan(load_spec(tmp_path / "digits.yaml").spec).candidates] == expected


def test_a_cuda_plan_on_a_host_without_cuda_says_its_figures_are_cpus(tmp_path: Path) -> None:
    from infc.plan import cuda_usable

    source = (ROOT / "specs" / "digits" / "digits.yaml").read_text()
    for name in ("digits.onnx", "calib.npz", "val.npz"):
        (tmp_path / name).symlink_to(ROOT / "specs" / "digits" / name)
    (tmp_path / "digits.yaml").write_text(source.replace("target: {hardware: x86, isa: native}", "target: cuda"))
    plan = make_plan(load_spec(tmp_path / "digits.yaml").spec)
    assert plan.session["providers"] == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert plan.host_runs_target is plan.host_matches_target is cuda_usable()
    cpu_note = [n for n in plan.notes if "measured on CPU (CPUExecutionProvider), not on a GPU" in n]
    assert len(cpu_note) == (0 if cuda_usable() else 1)
