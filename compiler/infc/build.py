"""`infc build`: the whole compiler as one straight line of named steps.

spec -> plan -> kernels -> passes + gates (per candidate) -> choice -> bundle.
Each step is a call; the data between them is plain objects (see ARCHITECTURE.md).
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import onnx

from infc_runtime.pipeline import Pipeline, load_kernel_module, make_session
from infc_runtime.types import Tensors, TensorSpec, numpy_dtype

from .bundle import Bundle, compute_bundle, render, runtime_files, write_bundle
from .errors import BudgetError, InfcError, SpecErrors
from .gates import AccuracyResult, LatencyResult, measure_accuracy, measure_latency
from .kernels.codegen import generate
from .kernels.signature import resolve_stages
from .passes import PassContext, run_passes
from .pins import pinned_requirements, versions
from .plan import Candidate, Plan, make_plan
from .report import build_report
from .spec import Spec, load_spec

__all__ = ["BuildResult", "Evaluation", "build", "load_requests"]

# an optimized candidate must beat fp32 by this much to be chosen (timing noise)
MIN_SPEEDUP = 1.05


@dataclass
class Evaluation:
    """One candidate plan, optimized and measured (or the reason it could not be)."""

    candidate: Candidate
    model: onnx.ModelProto | None = None
    records: list[dict[str, Any]] = field(default_factory=list)
    accuracy: list[AccuracyResult] = field(default_factory=list)  # one per budget; empty: not measured
    latency: LatencyResult | None = None
    error: str | None = None
    verdict: str = ""

    @property
    def accurate(self) -> bool:
        return self.error is None and all(a.passed for a in self.accuracy)

    @property
    def worst_margin(self) -> float:
        """How far inside its accuracy budgets the candidate is, at the tightest one."""
        margins = [a.margin for a in self.accuracy if a.margin is not None]
        return min((float("-inf") if math.isnan(m) else m for m in margins), default=0.0)  # NaN: the worst


@dataclass(frozen=True)
class BuildResult:
    """What a build produced and measured."""

    spec: Spec
    plan: Plan
    chosen: Evaluation
    evaluations: list[Evaluation]
    bundle: Bundle
    report: str
    path: Path | None
    passed: bool

    @property
    def accuracy(self) -> list[AccuracyResult]:
        return self.chosen.accuracy

    @property
    def latency(self) -> LatencyResult:
        assert self.chosen.latency is not None
        return self.chosen.latency


def load_requests(spec: Spec, path: Path) -> tuple[Tensors, np.ndarray | None]:
    """Request tensors (cast to the declared dtypes) and optional labels from an npz."""
    with np.load(path, allow_pickle=False) as data:
        requests = {t.name: np.ascontiguousarray(data[t.name], dtype=numpy_dtype(t.dtype)) for t in spec.inputs}
        labels = np.asarray(data["labels"]) if "labels" in data.files else None
    return requests, labels


@dataclass(frozen=True)
class _Bench:
    """What every candidate is measured with."""

    spec: Spec
    plan: Plan
    kernels: dict[str, ModuleType]
    outputs: list[TensorSpec]
    reference: Pipeline | None
    requests: Tensors
    labels: np.ndarray | None
    ctx: PassContext
    iterations: int

    def pipeline(self, model: onnx.ModelProto) -> Pipeline:
        return Pipeline(name=self.spec.name, version=self.spec.version, inputs=self.spec.inputs,
                        outputs=self.outputs, session=make_session(model.SerializeToString(), self.plan.session),
                        pre=self.kernels["pre"].run, post=self.kernels["post"].run, serving=self.spec.serving)


def _evaluate(candidate: Candidate, source: onnx.ModelProto, bench: _Bench, *, single: bool) -> Evaluation:
    """Run a candidate's passes, then its gates. With several candidates a failing one is recorded, not fatal."""
    ev = Evaluation(candidate)
    try:
        ev.model, ev.records = run_passes(source, candidate.passes, bench.ctx)
    except InfcError as exc:
        if single:
            raise
        ev.error = str(exc)
        return ev
    pipeline = bench.pipeline(ev.model)
    if bench.reference is not None:
        ev.accuracy = measure_accuracy(bench.reference, pipeline, bench.requests, bench.labels,
                                       bench.spec.budget.accuracy)
    ev.latency = measure_latency(pipeline, bench.requests, bench.spec.budget.latency_ms,
                                 enforce=bench.plan.host_matches_target, iterations=bench.iterations)
    return ev


def _choose(evaluations: Sequence[Evaluation]) -> Evaluation:
    """The fastest candidate inside the accuracy budget; never one slower than fp32."""
    if len(evaluations) == 1:
        evaluations[0].verdict = "chosen (the only candidate)"
        return evaluations[0]
    baseline = next((e for e in evaluations if e.candidate.name == "fp32" and e.accurate), None)
    best: Evaluation | None = None
    for ev in evaluations:
        if not ev.accurate:
            ev.verdict = f"failed: {ev.error}" if ev.error else "misses the accuracy budget"
            continue
        assert ev.latency is not None
        if baseline is not None and ev is not baseline:
            assert baseline.latency is not None
            speedup = baseline.latency.p95_ms / ev.latency.p95_ms
            if speedup < MIN_SPEEDUP:
                ev.verdict = f"not faster than fp32 (p95 x{speedup:.2f})"
                continue
        if best is None or ev.latency.p95_ms < (best.latency.p95_ms if best.latency else float("inf")):
            best = ev
    if best is None:  # nothing inside the budget: ship nothing, report the closest
        best = max(evaluations, key=lambda e: (e.error is None, e.worst_margin))
        best.verdict = "closest to the accuracy budget, still outside it"
        return best
    for ev in evaluations:
        if ev.accurate and ev is not best and not ev.verdict:
            ev.verdict = "slower than the chosen candidate"
    best.verdict = "chosen: fastest inside the accuracy budget"
    return best


def build(spec_path: str | Path, outdir: str | Path = "build", *, iterations: int = 300,
          report_path: str | Path | None = None, write: bool = True) -> BuildResult:
    """Build the bundle a spec describes; raises BudgetError (after writing the report) on a miss."""
    # 1. spec: parse, validate against the schema, resolve paths, check files and steps
    spec = load_spec(spec_path)
    # 2. plan: candidate pass lists and run-time settings for the target
    plan = make_plan(spec)
    # 3. kernels: resolve pre/post dataflows and generate their Numba modules
    source = onnx.load(str(spec.model))
    pre_flow, post_flow, errors = resolve_stages(spec, source)
    if errors:
        raise SpecErrors(errors)
    sources = {stage: generate(stage, flow, name=spec.name, version=spec.version)
               for stage, flow in (("pre", pre_flow), ("post", post_flow))}
    with tempfile.TemporaryDirectory(prefix="infc-build-") as tmp:
        work = Path(tmp)
        kernels = {}
        for stage, text in sources.items():
            (work / f"{stage}.py").write_text(text)
            kernels[stage] = load_kernel_module(work / f"{stage}.py")
        # 4. data: calibration feeds (after pre-processing) and validation requests
        bench = _bench(spec, plan, kernels, list(post_flow.end), source, work, iterations)
        # 5. passes and gates, for every candidate plan
        evaluations = [_evaluate(c, source, bench, single=len(plan.candidates) == 1) for c in plan.candidates]
    # 6. choice: the fastest candidate inside the accuracy budget
    chosen = _choose(evaluations)
    assert chosen.model is not None and chosen.latency is not None
    passed = chosen.accurate and chosen.latency.passed
    # 7. bundle: files, manifest, report; written only when every budget holds
    files = _files(spec, plan, chosen.model, sources)
    manifest = _manifest(spec, plan, chosen, evaluations, list(post_flow.end), passed)
    draft = compute_bundle(name=spec.name, version=spec.version, files_=files, manifest=manifest,
                           spec_data=spec.data)
    report = build_report(spec, plan, draft, chosen, evaluations, pre_flow, post_flow, passed)
    bundle = compute_bundle(name=spec.name, version=spec.version, files_={**files, "report.md": report.encode()},
                            manifest=manifest, spec_data=spec.data)
    if report_path:
        Path(report_path).write_text(report)
    path = write_bundle(bundle, Path(outdir)) if (write and passed) else None
    result = BuildResult(spec, plan, chosen, evaluations, bundle, report, path, passed)
    if not passed:
        raise BudgetError(_miss_message(result))
    return result


def _bench(spec: Spec, plan: Plan, kernels: dict[str, ModuleType], outputs: list[TensorSpec],
           source: onnx.ModelProto, work: Path, iterations: int) -> _Bench:
    calibration = load_requests(spec, spec.optimize.calibration)[0] if spec.optimize.calibration else None

    def feeds() -> Iterator[dict[str, Any]]:
        assert calibration is not None
        n = len(next(iter(calibration.values())))
        for start in range(0, n, 16):
            yield kernels["pre"].run({k: v[start:start + 16] for k, v in calibration.items()})

    ctx = PassContext(workdir=work, target=plan.target, calibration=feeds if calibration is not None else None)
    bench = _Bench(spec, plan, kernels, outputs, None, {}, None, ctx, iterations)
    if spec.optimize.validation:
        requests, labels = load_requests(spec, spec.optimize.validation)
        return _Bench(spec, plan, kernels, outputs, bench.pipeline(source), requests, labels, ctx, iterations)
    example = bench.pipeline(source).example_request(1)
    return _Bench(spec, plan, kernels, outputs, None, example, None, ctx, iterations)


def _files(spec: Spec, plan: Plan, model: onnx.ModelProto, sources: dict[str, str]) -> dict[str, bytes]:
    common = {"name": spec.name, "version": spec.version, "target": plan.target}
    return {
        "model.onnx": model.SerializeToString(),
        "kernels/pre.py": sources["pre"].encode(),
        "kernels/post.py": sources["post"].encode(),
        "serve.py": render("serve.py.j2", **common).encode(),
        "requirements.txt": pinned_requirements(plan.target).encode(),
        "Dockerfile": render("Dockerfile.j2", base_image="python:3.11-slim", **common).encode(),
        "k8s/deployment.yaml": render("k8s/deployment.yaml.j2", threads=plan.session["intra_op_num_threads"],
                                      **common).encode(),
        "k8s/inferenceservice.yaml": render("k8s/inferenceservice.yaml.j2", **common).encode(),
        **runtime_files(),
    }


def _manifest(spec: Spec, plan: Plan, chosen: Evaluation, evaluations: list[Evaluation],
              outputs: list[TensorSpec], passed: bool) -> dict[str, Any]:
    assert chosen.latency is not None
    return {
        "format": 1,
        "name": spec.name,
        "version": spec.version,
        "inputs": [t.to_dict() for t in spec.inputs],
        "outputs": [t.to_dict() for t in outputs],
        "model": {"path": "model.onnx", "source": spec.model.name},
        "kernels": {"pre": "kernels/pre.py", "post": "kernels/post.py"},
        "session": plan.session,
        "serving": spec.serving.to_dict(),
        "plan": {**plan.to_dict(), "chosen": chosen.candidate.name,
                 "passes": [{"name": n, "params": p} for n, p in chosen.candidate.passes]},
        "passes": chosen.records,
        "candidates": [{"name": e.candidate.name, "verdict": e.verdict, "error": e.error,
                        "accuracy": [asdict(a) for a in e.accuracy],
                        "latency": asdict(e.latency) if e.latency else None} for e in evaluations],
        "results": {"passed": passed, "accuracy": [asdict(a) for a in chosen.accuracy],
                    "latency": asdict(chosen.latency)},
        "versions": versions(),
    }


def _miss_message(result: BuildResult) -> str:
    lines = [f"{result.spec.name} {result.spec.version}: budget missed, no bundle written"]
    for acc in result.accuracy:
        if not acc.passed:
            lines.append(f"  accuracy: {acc.name} = {acc.value:.4f}, budget {acc.op} {acc.bound:g} "
                         f"(off by {abs(acc.margin or 0.0):.4f}; candidate {result.chosen.candidate.name})")
    for miss in result.latency.misses if result.latency.enforced else ():
        lines.append(f"  latency: {miss} (candidate {result.chosen.candidate.name})")
    if len(result.evaluations) > 1:
        lines.append("  candidates: " + "; ".join(f"{e.candidate.name}: {e.verdict}" for e in result.evaluations))
    return "\n".join(lines)
