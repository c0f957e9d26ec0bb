"""The human build report (`report.md`): what was done, what was measured, against which budget."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from infc_runtime.types import ServingConfig

from .bundle import Bundle, render
from .gates import AccuracyResult
from .kernels.graph import Dataflow
from .pins import versions
from .plan import Plan
from .serving_tune import BatchPoint
from .spec import Spec

if TYPE_CHECKING:
    from .search import Evaluation

__all__ = ["build_report", "pass_summary"]


def pass_summary(record: dict[str, Any]) -> str:
    """One line saying what a pass did, from its record."""
    if record.get("skipped"):
        return f"skipped: {record['skipped']}"
    if record.get("reason") and not record.get("modified"):
        return f"no change: {record['reason']}"
    if record.get("fused"):
        return "fused: " + ", ".join(f"{k} x{v}" for k, v in record["fused"].items())
    if "quantized_ops" in record:
        done = "quantized: " + (", ".join(f"{k} x{v}" for k, v in record["quantized_ops"].items()) or "nothing")
        return done + (f"; kept in fp32: {', '.join(record['excluded'])}" if record.get("excluded") else "")
    if "fp16_initializers" in record:
        return f"{record['fp16_initializers']} fp16 initializers, I/O kept fp32"
    if "ops_after" in record:
        gone = [k for k, v in record["ops_before"].items() if record["ops_after"].get(k, 0) < v]
        new = [k for k, v in record["ops_after"].items() if record["ops_before"].get(k, 0) < v]
        if not gone and not new:
            return f"level {record.get('level')}: no change"
        return f"level {record.get('level')}: removed {', '.join(gone) or '-'}; added {', '.join(new) or '-'}"
    return f"opset {record['opset']}" if "opset" in record else ""


def _size(n: int) -> str:
    return f"{n / 1e6:.2f} MB" if n >= 1e6 else f"{n / 1e3:.1f} kB"


def build_report(spec: Spec, plan: Plan, bundle: Bundle, chosen: Evaluation, evaluations: list[Evaluation],
                 pre_flow: Dataflow, post_flow: Dataflow, passed: bool, *, serving: ServingConfig,
                 serving_why: str, batches: Sequence[BatchPoint]) -> str:
    """Render report.md for a build (pass or fail)."""
    latency = chosen.latency
    assert latency is not None
    lb = spec.budget.latency_ms
    budget_q = {q: (getattr(lb, q) if lb else None) for q in ("p50", "p95", "p99")}
    verdict_q = {}
    for q, limit in budget_q.items():
        value = getattr(latency, f"{q}_ms")
        verdict_q[q] = "" if limit is None else ("pass" if value <= limit else
                                                 ("**MISS**" if latency.enforced else "over (not enforced)"))
    results = chosen.accuracy or [AccuracyResult("none (no validation data)", float("nan"), None, True, 0)]
    accuracy = [{"name": a.name, "value": a.value, "budget": "-" if a.bound is None else f"{a.op} {a.bound:g}",
                 "verdict": "pass" if a.passed else "**MISS**"} for a in results]
    shown = {a.name for a in results}
    kernel_lines = [f"{stage}process[{s.index}] {s.name}: {s.input.name} -> {', '.join(o.name for o in s.outputs)}"
                    for stage, flow in (("pre", pre_flow), ("post", post_flow)) for s in flow.steps]
    candidates = [{"name": e.candidate.name, "verdict": e.verdict,
                   "metric": ", ".join(f"{a.value:.4f}" for a in e.accuracy) or "-",
                   "p50": f"{e.latency.p50_ms:.3f}" if e.latency else "-",
                   "p95": f"{e.latency.p95_ms:.3f}" if e.latency else "-",
                   "throughput": f"{e.latency.throughput_rps:.0f}" if e.latency else "-",
                   "size": _size(e.model.ByteSize()) if e.model is not None else "-"} for e in evaluations]
    return render("report.md.j2", name=spec.name, version=spec.version,
                  verdict="**PASS**: every budget met." if passed else "**FAIL**: a budget was missed.",
                  plan=plan, chosen=chosen.candidate.name, model_size=_size(len(bundle.files["model.onnx"])),
                  source_size=_size(spec.model.stat().st_size), bundle_size=_size(bundle.size()),
                  file_count=len(bundle.all_files()), versions=versions(), accuracy=accuracy,
                  samples=results[0].samples, metric_names=", ".join(a.name for a in results),
                  details={k: v for k, v in results[0].details.items() if k not in shown}, latency=latency,
                  latency_budget={q: (f"{v:g} ms" if v is not None else "-") for q, v in budget_q.items()},
                  latency_verdict=verdict_q, candidates=candidates,
                  passes=[{**r, "summary": pass_summary(r)} for r in chosen.records], kernel_lines=kernel_lines,
                  serving=serving, serving_why=serving_why, batches=batches,
                  pinned=sorted(spec.serving_pinned))
