"""`infc build`: the whole compiler as one straight line of named steps.

spec -> plan -> kernels -> passes -> gates -> bundle. Each step is a call; the
data between them is plain objects (see ARCHITECTURE.md).
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from infc_runtime.pipeline import Pipeline, load_kernel_module, make_session
from infc_runtime.types import Tensors, numpy_dtype

from .bundle import Bundle, compute_bundle, render, runtime_files, write_bundle
from .errors import BudgetError, SpecErrors
from .gates import AccuracyResult, LatencyResult, measure_accuracy, measure_latency
from .kernels.codegen import generate
from .kernels.signature import resolve_stages
from .passes import PassContext, run_passes
from .pins import pinned_requirements, versions
from .plan import Plan, make_plan
from .spec import Spec, load_spec

__all__ = ["BuildResult", "build", "load_requests"]


@dataclass(frozen=True)
class BuildResult:
    """What a build produced and measured."""

    spec: Spec
    plan: Plan
    bundle: Bundle
    accuracy: AccuracyResult | None
    latency: LatencyResult
    report: str
    path: Path | None
    passed: bool


def load_requests(spec: Spec, path: Path) -> tuple[Tensors, np.ndarray | None]:
    """Request tensors (cast to the declared dtypes) and optional labels from an npz."""
    with np.load(path, allow_pickle=False) as data:
        requests = {t.name: np.ascontiguousarray(data[t.name], dtype=numpy_dtype(t.dtype)) for t in spec.inputs}
        labels = np.asarray(data["labels"]) if "labels" in data.files else None
    return requests, labels


def _pipeline(spec: Spec, plan: Plan, model: onnx.ModelProto, kernels: dict[str, Any],
              outputs: list[Any]) -> Pipeline:
    return Pipeline(name=spec.name, version=spec.version, inputs=spec.inputs, outputs=outputs,
                    session=make_session(model.SerializeToString(), plan.session),
                    pre=kernels["pre"].run, post=kernels["post"].run, serving=spec.serving)


def _summary(record: dict[str, Any]) -> str:
    if "quantized_ops" in record:
        return "quantized: " + (", ".join(f"{k} x{v}" for k, v in record["quantized_ops"].items()) or "nothing")
    if "ops_after" in record:
        gone = {k: v for k, v in record["ops_before"].items() if record["ops_after"].get(k, 0) < v}
        new = {k: v for k, v in record["ops_after"].items() if record["ops_before"].get(k, 0) < v}
        if not gone and not new:
            return f"level {record.get('level')}: no change"
        return (f"level {record.get('level')}: removed " + (", ".join(gone) or "-") +
                "; added " + (", ".join(new) or "-"))
    return f"opset {record['opset']}" if "opset" in record else ""


def _fmt_size(n: int) -> str:
    return f"{n / 1e6:.2f} MB" if n >= 1e6 else f"{n / 1e3:.1f} kB"


def build(spec_path: str | Path, outdir: str | Path = "build", *, iterations: int = 300,
          report_path: str | Path | None = None, write: bool = True) -> BuildResult:
    """Build the bundle a spec describes; raises BudgetError (after writing the report) on a miss."""
    # 1. spec: parse, validate against the schema, resolve paths, check files and steps
    spec = load_spec(spec_path)
    # 2. plan: passes and run-time settings for the target
    plan = make_plan(spec)
    # 3. kernels: resolve pre/post dataflows and generate their Numba modules
    source = onnx.load(str(spec.model))
    pre_flow, post_flow, errors = resolve_stages(spec, source)
    if errors:
        raise SpecErrors(errors)
    sources = {stage: generate(stage, flow, name=spec.name, version=spec.version)
               for stage, flow in (("pre", pre_flow), ("post", post_flow))}
    outputs = list(post_flow.end)
    with tempfile.TemporaryDirectory(prefix="infc-build-") as tmp:
        work = Path(tmp)
        kernels = {}
        for stage, text in sources.items():
            (work / f"{stage}.py").write_text(text)
            kernels[stage] = load_kernel_module(work / f"{stage}.py")
        # 4. data: calibration feeds (after pre-processing) and validation requests
        calibration = load_requests(spec, spec.optimize.calibration)[0] if spec.optimize.calibration else None

        def feeds() -> Iterator[dict[str, Any]]:
            assert calibration is not None
            n = len(next(iter(calibration.values())))
            for start in range(0, n, 16):
                yield kernels["pre"].run({k: v[start:start + 16] for k, v in calibration.items()})

        ctx = PassContext(workdir=work, target=plan.target, calibration=feeds if calibration is not None else None)
        # 5. passes: optimize the graph as planned
        optimized, records = run_passes(source, plan.passes, ctx)
        # 6. gates: accuracy against the fp32 reference, latency of what ships
        candidate = _pipeline(spec, plan, optimized, kernels, outputs)
        accuracy = None
        if spec.optimize.validation:
            requests, labels = load_requests(spec, spec.optimize.validation)
            reference = _pipeline(spec, plan, source, kernels, outputs)
            accuracy = measure_accuracy(reference, candidate, requests, labels, spec.budget.accuracy)
        else:
            requests = candidate.example_request(1)
        latency = measure_latency(candidate, requests, spec.budget.latency_ms, enforce=plan.host_matches_target,
                                  iterations=iterations)
    # 7. bundle: files, manifest, report
    model_bytes = optimized.SerializeToString()
    passed = latency.passed and (accuracy is None or accuracy.passed)
    files: dict[str, bytes] = {
        "model.onnx": model_bytes,
        "kernels/pre.py": sources["pre"].encode(),
        "kernels/post.py": sources["post"].encode(),
        "serve.py": render("serve.py.j2", name=spec.name, version=spec.version).encode(),
        "requirements.txt": pinned_requirements(plan.target).encode(),
        "Dockerfile": render("Dockerfile.j2", name=spec.name, version=spec.version, target=plan.target,
                             base_image="python:3.11-slim").encode(),
        "k8s/deployment.yaml": render("k8s/deployment.yaml.j2", name=spec.name, version=spec.version,
                                      target=plan.target, threads=plan.session["intra_op_num_threads"]).encode(),
        "k8s/inferenceservice.yaml": render("k8s/inferenceservice.yaml.j2", name=spec.name,
                                            version=spec.version).encode(),
        **runtime_files(),
    }
    manifest: dict[str, Any] = {
        "format": 1,
        "name": spec.name,
        "version": spec.version,
        "inputs": [t.to_dict() for t in spec.inputs],
        "outputs": [t.to_dict() for t in outputs],
        "model": {"path": "model.onnx", "source": spec.model.name},
        "kernels": {"pre": "kernels/pre.py", "post": "kernels/post.py"},
        "session": plan.session,
        "serving": spec.serving.to_dict(),
        "plan": plan.to_dict(),
        "passes": records,
        "results": {"passed": passed, "accuracy": asdict(accuracy) if accuracy else None,
                    "latency": asdict(latency)},
        "versions": versions(),
    }
    draft = compute_bundle(name=spec.name, version=spec.version, files_=files, manifest=manifest,
                           spec_data=spec.data)
    report = _report(spec, plan, draft, accuracy, latency, records, pre_flow, post_flow, source, passed)
    bundle = compute_bundle(name=spec.name, version=spec.version, files_={**files, "report.md": report.encode()},
                            manifest=manifest, spec_data=spec.data)
    if report_path:
        Path(report_path).write_text(report)
    path = write_bundle(bundle, Path(outdir)) if (write and passed) else None
    result = BuildResult(spec, plan, bundle, accuracy, latency, report, path, passed)
    if not passed:
        raise BudgetError(_miss_message(result))
    return result


def _miss_message(result: BuildResult) -> str:
    lines = [f"{result.spec.name} {result.spec.version}: budget missed, no bundle written"]
    acc = result.accuracy
    if acc is not None and not acc.passed:
        op = "<=" if acc.metric == "max_abs_error" else ">="
        lines.append(f"  accuracy: {acc.metric} = {acc.value:.4f}, budget {op} {acc.bound:g} "
                     f"(short by {abs(acc.value - (acc.bound or 0)):.4f})")
    for miss in result.latency.misses if result.latency.enforced else ():
        lines.append(f"  latency: {miss}")
    return "\n".join(lines)


def _report(spec: Spec, plan: Plan, bundle: Bundle, accuracy: AccuracyResult | None, latency: LatencyResult,
            records: list[dict[str, Any]], pre_flow: Any, post_flow: Any, source: onnx.ModelProto,
            passed: bool) -> str:
    lb = spec.budget.latency_ms
    budget_q = {q: (getattr(lb, q) if lb else None) for q in ("p50", "p95", "p99")}
    latency_budget = {q: (f"{v:g} ms" if v is not None else "-") for q, v in budget_q.items()}
    verdict_q = {}
    for q, limit in budget_q.items():
        value = getattr(latency, f"{q}_ms")
        verdict_q[q] = "" if limit is None else ("pass" if value <= limit else
                                                 ("**MISS**" if latency.enforced else "over (not enforced)"))
    ab = spec.budget.accuracy
    acc_budget = "-" if ab is None else (f"<= {ab.max:g}" if ab.metric == "max_abs_error" else f">= {ab.min:g}")
    kernel_lines = [f"{stage}process[{s.index}] {s.name}: {s.input.name} -> {', '.join(o.name for o in s.outputs)}"
                    for stage, flow in (("pre", pre_flow), ("post", post_flow)) for s in flow.steps]
    text = render("report.md.j2", name=spec.name, version=spec.version,
                  verdict="**PASS**: every budget met." if passed else "**FAIL**: a budget was missed.",
                  plan=plan, model_size=_fmt_size(len(bundle.files["model.onnx"])),
                  source_size=_fmt_size(spec.model.stat().st_size), bundle_size=_fmt_size(bundle.size()),
                  file_count=len(bundle.all_files()), versions=versions(),
                  accuracy=accuracy or AccuracyResult("none (no validation data)", float("nan"), None, True, 0),
                  accuracy_budget=acc_budget, latency=latency, latency_budget=latency_budget,
                  latency_verdict=verdict_q, passes=[{**r, "summary": _summary(r)} for r in records],
                  kernel_lines=kernel_lines)
    return text
