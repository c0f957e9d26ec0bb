"""The human build report (`report.md`): what was done, what was measured, against which budget."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from infc_runtime.types import ServingConfig

from .bundle import Bundle, render
from .gates import AccuracyResult
from .kernels.graph import Dataflow
from .latency_gate import LatencyGate
from .lock import LockStatus
from .pins import versions
from .plan import Plan
from .serving_tune import BatchPoint
from .spec import Spec

if TYPE_CHECKING:
    from .search import Evaluation

__all__ = ["build_report", "headline", "pass_summary"]


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


def headline(accurate: bool, latency: LatencyGate, plan: Plan) -> str:
    """The report's first line: PASS only when every budget was checked, where it counts, and held."""
    if not accurate and latency.fails_build:
        return "**FAIL**: the accuracy and the latency budgets were missed."
    if not accurate:
        return "**FAIL**: an accuracy budget was missed."
    if latency.fails_build:
        how = " (inconclusive under --latency-gate=strict)" if latency.measured == "inconclusive" else ""
        return f"**FAIL**: the latency budget was missed{how}."
    if latency.measured is None or (latency.measured == "pass" and latency.on_target):
        return "**PASS**: every budget met."
    if not latency.on_target:
        return (f"**PASS (accuracy); latency not measured on the target**: the build host "
                f"({plan.host}/{plan.host_isa}) is not the target ({plan.target}/{plan.isa}), so the latency "
                "budget is unverified; measure the bundle there with `python -m infc_runtime measure`.")
    if latency.mode == "off":
        return (f"**PASS (accuracy); latency {latency.measured}, not enforced** (--latency-gate=off): "
                "the latency budget is unverified.")
    return ("**PASS (accuracy); latency inconclusive**: a percentile's interval straddles its budget "
            "(--latency-gate=lenient does not fail the build; strict does).")


def build_report(spec: Spec, plan: Plan, bundle: Bundle, chosen: Evaluation, evaluations: list[Evaluation],
                 pre_flow: Dataflow, post_flow: Dataflow, passed: bool, *, latency: LatencyGate, lock: LockStatus,
                 serving: ServingConfig, serving_why: str, batches: Sequence[BatchPoint]) -> str:
    """Render report.md for a build (pass or fail)."""
    percentiles = [{"name": p.name, "value": p.value_ms, "interval": p.interval(),
                    "budget": "-" if p.bound_ms is None else f"{p.bound_ms:g} ms",
                    "verdict": _verdict(p.verdict, latency)} for p in latency.percentiles]
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
    served = next((b for b in latency.batches if b.batch == serving.max_batch_size), None)
    return render("report.md.j2", name=spec.name, version=spec.version,
                  verdict=headline(chosen.accurate, latency, plan),
                  plan=plan, chosen=chosen.candidate.name, model_size=_size(len(bundle.files["model.onnx"])),
                  source_size=_size(spec.model.stat().st_size), bundle_size=_size(bundle.size()),
                  file_count=len(bundle.all_files()) + 1, versions=versions(), accuracy=accuracy,
                  samples=results[0].samples, metric_names=", ".join(a.name for a in results),
                  details={k: v for k, v in results[0].details.items() if k not in shown}, latency=latency,
                  percentiles=percentiles, noise=latency.noise, served=served,
                  lock=lock.describe().removeprefix("lock "), content_hash=bundle.content_hash,
                  candidates=candidates,
                  candidates_batch=next((e.latency.batch_size for e in evaluations if e.latency), "-"),
                  passes=[{**r, "summary": pass_summary(r)} for r in chosen.records], kernel_lines=kernel_lines,
                  serving=serving, serving_why=serving_why, batches=batches,
                  pinned=sorted(spec.serving_pinned))


def _verdict(verdict: str | None, latency: LatencyGate) -> str:
    if verdict is None:
        return ""
    if not latency.on_target:
        return f"{verdict} here (not the target)"
    if verdict == "fail":
        return "**MISS**" if latency.fails_build else "over (not enforced)"
    if verdict == "inconclusive":
        return "**INCONCLUSIVE** (fails under strict)" if not latency.fails_build else "**INCONCLUSIVE**"
    return verdict
