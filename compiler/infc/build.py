"""`infc build`: the whole compiler as one straight line of named steps.

spec -> plan -> kernels -> passes + gates (per candidate) -> choice -> bundle.
Each step is a call; the data between them is plain objects (see ARCHITECTURE.md).
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import onnx

from infc_runtime.pipeline import load_kernel_module
from infc_runtime.types import ServingConfig, Tensors, TensorSpec, numpy_dtype

from .bundle import Bundle, compute_bundle, render, runtime_files, write_bundle
from .coldstart import KernelCache, make_kernel_cache
from .errors import BudgetError, SpecErrors
from .gates import AccuracyResult, LatencyResult
from .kernels import registry
from .kernels.codegen import GeneratedModule, generate_module
from .kernels.prepare import prepare_spec
from .kernels.signature import resolve_stages
from .passes import PassContext
from .pins import pinned_requirements, versions
from .plan import Plan, make_plan
from .report import build_report
from .search import Bench, Evaluation, choose, confirm, evaluate_all, time_candidate
from .serving_tune import BatchPoint, choose_serving, measure_batches
from .spec import Spec, load_spec

__all__ = ["BuildResult", "Evaluation", "build", "load_requests"]


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


def build(spec_path: str | Path, outdir: str | Path = "build", *, iterations: int = 300, latency_gate: bool = True,
          report_path: str | Path | None = None, write: bool = True) -> BuildResult:
    """Build the bundle a spec describes; raises BudgetError (after writing the report) on a miss."""
    # 1. spec: parse, validate against the schema, resolve paths, check files and steps
    spec = load_spec(spec_path)
    # 2. plan: candidate pass lists and run-time settings for the target
    plan = make_plan(spec)
    # 2b. prepare: step parameters computed from the calibration data (`from: calibration`)
    spec, prepared = prepare_spec(spec, lambda path: load_requests(spec, path)[0])
    # 3. kernels: resolve pre/post dataflows and generate their Numba modules
    source = onnx.load(str(spec.model))
    pre_flow, post_flow, errors = resolve_stages(spec, source)
    if errors:
        raise SpecErrors(errors)
    modules = {stage: generate_module(stage, flow, name=spec.name, version=spec.version)
               for stage, flow in (("pre", pre_flow), ("post", post_flow))}
    with tempfile.TemporaryDirectory(prefix="infc-build-") as tmp:
        work = Path(tmp)
        # the modules run from a kernels/ folder laid out as the bundle's (their assets beside them)
        kernels = {stage: load_kernel_module(module.write(work / "kernels")) for stage, module in modules.items()}
        # 4. data: calibration feeds (after pre-processing) and validation requests
        bench = _bench(spec, plan, kernels, list(post_flow.end), source, work, iterations, latency_gate)
        # 5. passes and gates, for every candidate plan (and sensitivity variants)
        evaluations = evaluate_all(source, bench)
        # 6. choice: the fastest candidate inside every accuracy budget
        chosen = choose(evaluations, measurable=plan.host_matches_target)
        chosen = confirm(chosen, evaluations, bench)
        time_candidate(chosen, bench)
        assert chosen.model is not None and chosen.latency is not None
        passed = chosen.accurate and chosen.latency.passed
        # 7. serving: the latency budget sets the batch size and the batch window
        batches, serving, serving_why = _tune_serving(spec, plan, bench, chosen)
    # 8. bundle: files, manifest, report; written only when every budget holds
    requires = sorted({r for flow in (pre_flow, post_flow) for step in flow.steps
                       for r in registry.get(step.name).requires})  # e.g. tokenizers
    files = _files(spec, plan, chosen.model, modules, requires)
    manifest = _manifest(spec, plan, chosen, evaluations, list(post_flow.end), passed, serving)
    manifest["serving_tuning"] = {"reason": serving_why, "batches": [asdict(p) for p in batches]}
    manifest["prepared"] = prepared
    #    cold start: the server's warm-up in a fresh interpreter leaves Numba's cache, shipped for this CPU
    cache = (make_kernel_cache(files, manifest, host_is_target=plan.host_matches_target) if write and passed
             else KernelCache(False, "no bundle is written"))
    files.update(cache.files)
    manifest["kernel_cache"] = cache.to_dict()
    draft = compute_bundle(name=spec.name, version=spec.version, files_=files, manifest=manifest,
                           spec_data=spec.data)
    report = build_report(spec, plan, draft, chosen, evaluations, pre_flow, post_flow, passed,
                          serving=serving, serving_why=serving_why, batches=batches)
    bundle = draft.with_file("report.md", report.encode())
    if report_path:
        Path(report_path).write_text(report)
    path = write_bundle(bundle, Path(outdir)) if (write and passed) else None
    result = BuildResult(spec, plan, chosen, evaluations, bundle, report, path, passed)
    if not passed:
        raise BudgetError(_miss_message(result))
    return result


def _tune_serving(spec: Spec, plan: Plan, bench: Bench,
                  chosen: Evaluation) -> tuple[list[BatchPoint], ServingConfig, str]:
    if not plan.host_matches_target:
        return [], spec.serving, "the build host is not the target: serving settings from the spec"
    assert chosen.model is not None
    lb = spec.budget.latency_ms
    limit = (lb.p99 or lb.p95 or lb.p50) if lb else None
    points = measure_batches(bench.pipeline(chosen.model), bench.requests, stop_above_ms=limit)
    serving, why = choose_serving(points, spec.budget.latency_ms, spec.serving_pinned, spec.serving)
    return points, serving, why


def _bench(spec: Spec, plan: Plan, kernels: dict[str, ModuleType], outputs: list[TensorSpec],
           source: onnx.ModelProto, work: Path, iterations: int,
           latency_gate: bool = True) -> Bench:
    calibration = load_requests(spec, spec.optimize.calibration)[0] if spec.optimize.calibration else None

    def feeds() -> Iterator[dict[str, Any]]:
        assert calibration is not None
        n = len(next(iter(calibration.values())))
        for start in range(0, n, 16):
            yield kernels["pre"].run({k: v[start:start + 16] for k, v in calibration.items()})

    ctx = PassContext(workdir=work, target=plan.target, calibration=feeds if calibration is not None else None)
    bench = Bench(spec, plan, kernels, outputs, None, {}, None, ctx, iterations)
    bench.enforce_latency = plan.host_matches_target and latency_gate
    if spec.optimize.validation:
        requests, labels = load_requests(spec, spec.optimize.validation)
        bench.reference, bench.requests, bench.labels = bench.pipeline(source), requests, labels
    else:
        bench.requests = bench.pipeline(source).example_request(1)
    return bench


def _files(spec: Spec, plan: Plan, model: onnx.ModelProto, modules: dict[str, GeneratedModule],
           requires: list[str]) -> dict[str, bytes]:
    common = {"name": spec.name, "version": spec.version, "target": plan.target}
    kernels = {f"kernels/{rel}": data.encode() if isinstance(data, str) else data
               for module in modules.values() for rel, data in module.files().items()}
    return {
        "model.onnx": model.SerializeToString(),
        **kernels,  # pre.py, post.py and the assets they read (kernels/assets/)
        "serve.py": render("serve.py.j2", **common).encode(),
        "requirements.txt": pinned_requirements(plan.target, requires).encode(),
        "Dockerfile": render("Dockerfile.j2", base_image="python:3.11-slim", **common).encode(),
        "k8s/deployment.yaml": render("k8s/deployment.yaml.j2", threads=plan.session["intra_op_num_threads"] or 2,
                                      **common).encode(),
        "k8s/inferenceservice.yaml": render("k8s/inferenceservice.yaml.j2", **common).encode(),
        **runtime_files(),
    }


def _manifest(spec: Spec, plan: Plan, chosen: Evaluation, evaluations: list[Evaluation],
              outputs: list[TensorSpec], passed: bool, serving: ServingConfig) -> dict[str, Any]:
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
        "serving": serving.to_dict(),
        "plan": {**plan.to_dict(), "chosen": chosen.candidate.name,
                 "passes": [{"name": n, "params": p} for n, p in chosen.candidate.passes]},
        "passes": chosen.records,
        "candidates": [{"name": e.candidate.name, "verdict": e.verdict, "error": e.error,
                        "sensitivity": e.sensitivity,
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
