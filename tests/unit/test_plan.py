"""The plan marks what the search relies on: the baseline candidate and the pass prefix every candidate shares."""

from __future__ import annotations

from pathlib import Path

from infc.plan import make_plan
from infc.spec import load_spec

ROOT = Path(__file__).resolve().parents[2]


def test_the_plan_marks_the_baseline_and_the_shared_prefix() -> None:
    plan = make_plan(load_spec(ROOT / "specs" / "digits" / "digits.yaml").spec)  # quantize: auto, fuse: true
    assert [(c.name, c.baseline) for c in plan.candidates] == [("fp32", True), ("dynamic", False), ("static", False)]
    assert plan.shared == 3
    fronts = [repr(c.passes[:plan.shared]) for c in plan.candidates]
    assert len(set(fronts)) == 1 and [name for name, _ in plan.passes[:plan.shared]] == [
        "normalize", "fuse_transformer", "fuse_attention"]
    assert len({repr(c.passes[:plan.shared + 1]) for c in plan.candidates}) == 3
    assert "shared" not in plan.to_dict() and "baseline" not in plan.to_dict()["candidates"][0]
