"""The human build report (`report.md`): what was done, what was measured, against which budget."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .bundle import render
from .cost import CostEstimate, PlanCost, usd
from .gates import AccuracyResult
from .latency_gate import LatencyGate
from .passes import summary
from .pins import versions
from .plan import Plan

if TYPE_CHECKING:
    from .outcome import BuildOutcome

__all__ = ["build_report", "cost_section", "headline"]


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
    if latency.cpu_fallback:
        return (f"**PASS (accuracy); latency not measured on the target**: the build host has no "
                f"{', '.join(latency.cpu_fallback)}, so the bundle was measured on CPU "
                f"({', '.join(latency.providers)}): those figures are not the {plan.target} target's and the latency "
                "budget is unverified; measure the bundle on a GPU host with `python -m infc_runtime measure`.")
    if not latency.on_target:
        return (f"**PASS (accuracy); latency not measured on the target**: the build host "
                f"({plan.host}/{plan.host_isa}) is not the target ({plan.target}/{plan.isa}), so the latency "
                "budget is unverified; measure the bundle there with `python -m infc_runtime measure`.")
    if latency.mode == "off":
        return (f"**PASS (accuracy); latency {latency.measured}, not enforced** (--latency-gate=off): "
                "the latency budget is unverified.")
    return ("**PASS (accuracy); latency inconclusive**: a percentile's interval straddles its budget "
            "(--latency-gate=lenient does not fail the build; strict does).")


def build_report(outcome: BuildOutcome) -> str:
    """Render report.md for a build (pass or fail): a view of its outcome."""
    spec, plan, latency, serving, chosen = outcome.spec, outcome.plan, outcome.latency, outcome.serving, outcome.chosen
    bundle = outcome.measured
    percentiles = [{"name": p.name, "value": p.value_ms, "interval": p.interval(),
                    "budget": "-" if p.bound_ms is None else f"{p.bound_ms:g} ms",
                    "verdict": _verdict(p.verdict, latency)} for p in latency.percentiles]
    results = chosen.accuracy or (AccuracyResult("none (no validation data)", float("nan"), None, True, 0),)
    accuracy = [{"name": a.name, "value": a.value, "budget": "-" if a.bound is None else f"{a.op} {a.bound:g}",
                 "verdict": "pass" if a.passed else "**MISS**"} for a in results]
    shown = {a.name for a in results}
    kernel_lines = [f"{stage}process[{s.index}] {s.name}: {s.input.name} -> {', '.join(o.name for o in s.outputs)}"
                    for stage, flow in (("pre", outcome.pre), ("post", outcome.post)) for s in flow.steps]
    candidates = [{"name": e.candidate.name, "verdict": outcome.choice.verdict(e),
                   "metric": ", ".join(f"{a.value:.4f}" for a in e.accuracy) or "-",
                   "p50": f"{e.latency.p50_ms:.3f}" if e.latency else "-",
                   "p95": f"{e.latency.p95_ms:.3f}" if e.latency else "-",
                   "throughput": f"{e.latency.throughput_rps:.0f}" if e.latency else "-",
                   "size": _size(e.model.ByteSize()) if e.model is not None else "-"} for e in outcome.evaluations]
    served = next((b for b in latency.batches if b.batch == serving.max_batch_size), None)
    wheels = sum(len(data) for path, data in bundle.files.items() if path.startswith("wheels/"))
    stated = bundle.manifest.platform or {}
    bundle_size = _size(bundle.size()) + (f" ({_size(wheels)} of it wheels/, for Linux {stated.get('machine')}, "
                                          f"Python {stated.get('python')})" if wheels else "")
    return render("report.md.j2", name=spec.name, version=spec.version,
                  verdict=headline(chosen.accurate, latency, plan),
                  plan=plan, chosen=chosen.candidate.name, model_size=_size(len(bundle.files["model.onnx"])),
                  source_size=_size(spec.model.stat().st_size), bundle_size=bundle_size,
                  file_count=len(bundle.all_files()) + 1, versions=versions(), accuracy=accuracy,
                  samples=results[0].samples, metric_names=", ".join(a.name for a in results),
                  details={k: v for k, v in results[0].details.items() if k not in shown}, latency=latency,
                  percentiles=percentiles, noise=latency.noise, served=served,
                  lock=outcome.lock.describe().removeprefix("lock "), content_hash=bundle.content_hash,
                  candidates=candidates,
                  candidates_batch=next((e.latency.batch_size for e in outcome.evaluations if e.latency), "-"),
                  passes=[{**r, "summary": summary(r)} for r in chosen.records], kernel_lines=kernel_lines,
                  serving=serving, serving_why=outcome.serving_why, batches=outcome.batches,
                  pinned=sorted(spec.serving_pinned), provenance=outcome.content.manifest.provenance,
                  cost=cost_section(outcome.cost))


def cost_section(cost: CostEstimate) -> dict[str, Any]:
    """What the report's `## Cost` shows: a row per measured throughput, the price, the saving against fp32."""
    def row(c: PlanCost, shipped: bool) -> dict[str, str]:
        return {"plan": c.plan + (" (shipped)" if shipped else ""), "measured": c.measured, "batch": str(c.batch),
                "rows_per_s": f"{c.rows_per_s:.0f}", "vcpu_s": f"{c.vcpu_seconds_per_1000:.4g}",
                "usd": usd(c.usd_per_1000_requests), "usd_rows": usd(c.usd_per_million_rows)}

    rows = [] if cost.shipped is None else [row(cost.shipped, True)]
    if cost.compared is not None:
        shipped, fp32 = cost.compared
        rows += [row(shipped, True)] + ([] if fp32.plan == shipped.plan else [row(fp32, False)])
    if cost.price is None:
        price_line = ("No price given: only vCPU-seconds are shown. Set one in the spec with `deploy: "
                      "{usd_per_hour: 0.085, vcpus: 2}` (the price of the host and the vCPUs it has) or `deploy: "
                      "{instance: c6i.large}` (infc's table of instance types, `infc schema` lists them).")
    else:
        per_vcpu = cost.shipped.usd_per_vcpu_second if cost.shipped else None
        price_line = f"Price: {cost.price.describe()}" + (
            f", USD {per_vcpu * 3600:.4g} per vCPU-hour; the server is charged the vCPUs it uses." if per_vcpu else ".")
    saving = cost.saving
    if saving is None or cost.compared is not None and cost.compared[0].plan == cost.compared[1].plan:
        saving_line = cost.note + "."
    else:
        how = "saves" if saving >= 0 else "adds"
        saving_line = (f"Against fp32 the optimization {how} **{abs(saving):.0%}** of the cost per request "
                       f"({cost.note}).")
    return {"rows": rows, "vcpus": cost.vcpus, "vcpus_why": cost.vcpus_why, "on_target": cost.on_target,
            "price_line": price_line, "saving_line": saving_line}


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
