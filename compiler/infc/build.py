"""`infc build`: the whole compiler as one straight line of named steps.

spec -> plan -> lock -> kernels -> passes + gates (per candidate, or the locked one) -> choice
-> the bundle staged and measured in a fresh process -> serving -> bundle + lock.
Each step is a call; the data between them is plain objects (see ARCHITECTURE.md).
"""

from __future__ import annotations

import hashlib
import math
import os
import platform
import tempfile
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import onnx

from infc_runtime.abi import ChoiceRecord, KernelFiles, KernelInfo, Manifest, ModelFile, kernel_module
from infc_runtime.pipeline import load_kernel_module
from infc_runtime.types import ServingConfig, Tensors, TensorSpec

from . import __version__
from .archive import archive_name, write_archive
from .bundle import Bundle, compute_bundle, render, runtime_files, stage_bundle, write_bundle
from .choice import Choice, Evaluation
from .coldstart import KernelCache, collect_kernel_cache
from .cost import price_of
from .deploy import deploy_files
from .drift import reference_files
from .emulate import EmulationError, target_site
from .errors import BudgetError, InfcError
from .gates import Outputs
from .isa import host_cpu
from .kernels import registry
from .kernels.codegen import GeneratedModule, generate_module
from .latency_gate import GATE_MODES, LatencyGate, gate, measure_bundle
from .lock import MODES as LOCK_MODES
from .lock import (
    Choices,
    Lock,
    LockError,
    LockInputs,
    LockStatus,
    changes,
    current_inputs,
    file_sha256,
    find_lock,
    read_lock,
    write_lock,
)
from .outcome import BuildOutcome
from .passes import PassContext
from .pins import pinned_requirements, versions
from .plan import Plan, make_plan
from .report import build_report
from .search import Bench, Validation, choices_of, evaluate_locked, locked_candidate, pipeline_for, search
from .serving_tune import SIZES, BatchPoint, choose_serving
from .spec import CheckedSpec, Spec, load_spec, prepare_spec
from .target_numerics import EmulatedRunner, TargetNumerics, target_numerics
from .wheelhouse import Wheelhouse, archive_platform, fetch_wheelhouse, platform_record, python_version, roots

__all__ = ["BuildOutcome", "OutputError", "build"]

Progress = Callable[[str], None]


class OutputError(InfcError):
    """Where the build was asked to write cannot be written (exit 2, before any work)."""

    exit_code = 2




def check_writable(folder: Path, what: str) -> None:
    """Create `folder` if needed and prove a file can be written there, or raise OutputError."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".infc-write-check-"):
            pass
    except OSError as e:
        raise OutputError(f"{what} {folder}: cannot write there ({e.strerror or e})") from None


def build(spec_path: str | Path, outdir: str | Path = "build", *, iterations: int = 300,
          latency_gate: str = "lenient", lock: str = "auto", report_path: str | Path | None = None,
          write: bool = True, progress: Progress | None = None, wheelhouse: bool | None = None,
          archive: bool = False) -> BuildOutcome:
    """Build the bundle a spec describes; raises BudgetError (carrying the result, after writing the
    report) on a miss. `latency_gate`: strict | lenient | off (see infc.latency_gate); `lock`: auto |
    relock | locked | ignore (see infc.lock). The outcome's bundle, report and `--json` are views of it.
    `wheelhouse`: ship the run-time wheels for the target (None: the spec's `deploy.wheelhouse`; see
    infc.wheelhouse); `archive`: also write NAME-VERSION-PLATFORM.tar.gz beside the bundle (infc.archive)."""
    say = progress or (lambda message: None)
    if latency_gate not in GATE_MODES or lock not in LOCK_MODES:
        raise ValueError(f"latency_gate {latency_gate!r} / lock {lock!r}")
    # 0. the output folders are writable: found before any work
    if write:
        check_writable(Path(outdir), "-o/--outdir")
    if report_path:
        check_writable(Path(report_path).absolute().parent, "--report folder")
    # 1. spec: parse, validate against the schema, resolve paths, check files and steps
    say("checking the spec")
    checked = load_spec(spec_path)
    spec = checked.spec
    # 2. plan: candidate pass lists and run-time settings for the target
    plan = make_plan(spec)
    # 2a. lock: the measured choices of an earlier build, reused while their inputs are unchanged
    inputs = current_inputs(spec, {"hardware": plan.target, "isa": plan.isa})
    status, locked = _open_lock(spec, inputs, lock)
    # 2b. prepare: step parameters computed from the calibration data (`from: calibration`)
    checked, prepared = prepare_spec(checked)
    spec = checked.spec
    # 3. kernels: generate the Numba modules of the pre/post dataflows (resolved when the spec loaded)
    source, pre_flow, post_flow = checked.model, checked.pre, checked.post
    modules = {stage: generate_module(stage, flow, name=spec.name, version=spec.version)
               for stage, flow in (("pre", pre_flow), ("post", post_flow))}
    requires = sorted({r for flow in (pre_flow, post_flow) for step in flow.steps
                       for r in registry.get(step.name).requires})  # e.g. tokenizers
    # 3a. wheelhouse: every run-time wheel for the target's platform, fetched before the long part
    wheels = None
    if spec.deploy.wheelhouse if wheelhouse is None else wheelhouse:
        say(f"downloading the run-time wheels for {archive_platform(plan.target)}, Python {python_version()}")
        wheels = fetch_wheelhouse(pinned_requirements(plan.target, requires), plan.target,
                                  roots(plan.target, requires))
    # 3b. numerics: a host that is not the target measures accuracy under an emulator of it, where one is set up
    numerics = target_numerics(plan, lambda: _site(plan, requires, say))
    with tempfile.TemporaryDirectory(prefix="infc-build-") as tmp, ExitStack() as stack:
        work = Path(tmp)
        runner, numerics = _runner(numerics, say)
        if runner is not None:
            stack.callback(runner.close)
        if numerics is not None:
            plan = replace(plan, notes=(*plan.notes, numerics.note))
        # the modules run from a kernels/ folder laid out as the bundle's (their assets beside them)
        kernels = {stage: kernel_module(load_kernel_module(module.write(work / "kernels")))
                   for stage, module in modules.items()}
        # 4. data: calibration feeds (after pre-processing) and validation requests
        say("loading calibration and validation data")
        bench = _bench(checked, plan, kernels, tuple(post_flow.end), work, iterations, say)
        bench = replace(bench, on_target=runner.infer if runner is not None else None)
        # 5-6. passes and gates: the locked candidate, or every candidate and the fastest accurate one
        candidate = locked_candidate(plan, locked.choices.base, locked.choices.candidate,
                                     locked.choices.exclude) if locked else None
        if locked and candidate is None:
            reason = f"this plan has no candidate {locked.choices.base} to keep {list(locked.choices.exclude)} from"
            if lock == "locked":
                raise LockError(f"{status.path} cannot be reused: {reason} (run `infc build --relock`)")
            status = LockStatus(status.path, "invalidated", (reason,))
        choice = evaluate_locked(candidate, source, bench) if candidate is not None else search(source, bench)
        chosen = choice.chosen
        # 7. the bundle about to ship, staged and measured in a fresh process (its own runtime)
        first = with_limits(spec, _initial_serving(spec, locked if candidate is not None else None))
        files = {**_files(spec, plan, chosen.model, modules, requires, wheels),
                 **_monitor_files(checked, kernels, bench)}
        tune = candidate is None and plan.host_matches_target and not _pinned(spec)
        limit = _limit(spec)
        outputs = list(post_flow.end)
        staged = _provenance(spec, plan, inputs, status.path if candidate is not None else None)
        stage = stage_bundle(_compute(spec, plan, chosen, files, first, prepared, outputs, staged), work / "stage")
        say("measuring the bundle in a fresh process" + (" (batch sizes, then latency)" if tune else ""))
        quick = latency_gate == "off"  # reported only: a shorter measurement is enough
        measured = measure_bundle(stage, requests=spec.optimize.validation, budget=spec.budget.latency_ms,
                                  batches=SIZES if tune else (first.max_batch_size,),
                                  stop_above_ms=limit if tune else None, min_samples=iterations,
                                  min_seconds=0.3 if quick else 1.0, max_seconds=2.0 if quick else 10.0,
                                  allow_cpu_fallback=not plan.host_runs_target)
        latency = gate(measured, mode=latency_gate, on_target=plan.host_matches_target)
        # 8. serving: the latency budget sets the batch size and the batch window
        serving, serving_why, batches = _serving(spec, plan, locked if candidate is not None else None,
                                                 latency, tune, first)
        serving = with_limits(spec, serving)
        passed = chosen.accurate and not latency.fails_build
        #    cold start: the warm-up in the fresh process left Numba's cache, shipped for this CPU
        cache = (collect_kernel_cache(stage, host_is_target=plan.host_matches_target) if passed
                 else KernelCache(False, "no bundle is written"))
    # 9. bundle: files, manifest (content + measurements), report
    if passed and status.state in ("written", "relocked", "invalidated"):
        say(f"writing the lock {status.path}")
    status = _save_lock(status, passed, spec, inputs, choice, serving, serving_why, batches, plan)
    used = status.path if status.state in ("reused", "written", "relocked", "invalidated") else None
    outcome = BuildOutcome(spec=spec, plan=plan, choice=choice, pre=pre_flow, post=post_flow, latency=latency,
                           lock=status, serving=serving, serving_why=serving_why, batches=tuple(batches),
                           kernel_cache=cache, host={**_host(plan), "platform": platform.platform()},
                           content=_compute(spec, plan, chosen, {**files, **(wheels.wheels if wheels else {})},
                                            serving, prepared, outputs, _provenance(spec, plan, inputs, used),
                                            wheels))
    outcome = replace(outcome, report=build_report(outcome))
    if report_path:
        Path(report_path).write_text(outcome.report)
    if write and passed:
        say(f"writing {Path(outdir) / outcome.bundle.dirname}")
        outcome = replace(outcome, path=write_bundle(outcome.bundle, Path(outdir)))
        if archive:
            say(f"writing {Path(outdir) / archive_name(outcome.bundle, archive_platform(plan.target))}")
            outcome = replace(outcome, archive=write_archive(outcome.bundle, Path(outdir),
                                                             archive_platform(plan.target)))
    if not passed:
        raise BudgetError(_miss_message(outcome), outcome)
    return outcome


def _site(plan: Plan, requires: list[str], say: Progress) -> Path:
    """The folder of the target's wheels (the bundle's pins) that the emulated python imports: made once."""
    say(f"finding the {plan.target} wheels for the emulator (downloaded and installed once, then cached)")
    return target_site(pinned_requirements(plan.target, requires))


def _runner(numerics: TargetNumerics | None, say: Progress) -> tuple[EmulatedRunner | None, TargetNumerics | None]:
    """The model runner under the target's emulator, started once for the build (None: this host's numerics)."""
    if numerics is None or numerics.emulator is None:
        return None, numerics
    say(f"starting {numerics.emulator.name} to measure accuracy on the target's numerics")
    try:
        return EmulatedRunner(numerics.emulator), numerics
    except EmulationError as e:
        return None, TargetNumerics(None, f"accuracy measured on this host's numerics and fp32 kept: the emulator "
                                          f"did not start ({e})")


def _host(plan: Plan) -> dict[str, Any]:
    """The build host, as the manifest and the lock record it."""
    return {"cpu": host_cpu(), "hardware": plan.host, "isa": plan.host_isa, "cpus": os.cpu_count()}


def _provenance(spec: Spec, plan: Plan, inputs: LockInputs, lock: Path | None) -> dict[str, Any]:
    """What the bundle was built from and by (the manifest's `provenance`): the spec file's, the source model's
    and the lock's sha256 (None without one), infc's version and the build host. Only what already decides
    the build is recorded in the content: the host's system, machine and ISA (the full `platform.platform()`,
    with its kernel release, is in `measurements.host`: it would change the content hash on every OS update)."""
    return {
        "spec_sha256": file_sha256(spec.file),
        "model_sha256": inputs.files["model"],
        "lock_sha256": file_sha256(lock) if lock is not None and lock.is_file() else None,
        "infc_version": __version__,
        "build_host": {"system": platform.system(), "machine": platform.machine(), "isa": plan.host_isa},
    }


def _open_lock(spec: Spec, inputs: LockInputs, mode: str) -> tuple[LockStatus, Lock | None]:
    """What to do with the spec's lock: reuse it (returned), or search (and why)."""
    if mode == "ignore":
        return LockStatus(None, "ignored"), None
    path = find_lock(spec.file)
    if mode == "relock":
        return LockStatus(path, "relocked"), None
    if not path.exists():
        if mode == "locked":
            raise LockError(f"{path}: no lock file (--locked reuses one: build once without --locked and commit "
                            "the lock it writes)")
        return LockStatus(path, "written"), None
    lock = read_lock(path)
    changed = changes(lock.inputs, inputs)
    if changed:
        if mode == "locked":
            raise LockError(f"{path} is out of date: {'; '.join(changed)} (run `infc build --relock` and commit "
                            "the lock)")
        return LockStatus(path, "invalidated", tuple(changed)), None
    return LockStatus(path, "reused"), lock


def _save_lock(status: LockStatus, passed: bool, spec: Spec, inputs: LockInputs, choice: Choice,
               serving: ServingConfig, serving_why: str, batches: list[BatchPoint], plan: Plan) -> LockStatus:
    """Write the lock when the build searched and passed; the status says what happened."""
    if status.state not in ("written", "relocked", "invalidated") or status.path is None:
        return status
    if not passed:
        return LockStatus(status.path, "not written", ("the build missed a budget", *status.reasons))
    chosen = choice.chosen
    base, exclude = choices_of(chosen)
    choices = Choices(chosen.candidate.name, base, exclude,
                      {"max_batch_size": serving.max_batch_size, "max_queue_delay_ms": serving.max_queue_delay_ms})
    evidence = {
        "measured_on": _host(plan),
        "candidates": [{"name": e.candidate.name, "verdict": choice.verdict(e),
                        "accuracy": {a.name: _round(a.value) for a in e.accuracy},
                        "p50_ms": _round(e.latency.p50_ms) if e.latency else None} for e in choice.evaluations],
        "serving": {"reason": serving_why, "batches": [{k: _round(v) for k, v in asdict(p).items()}
                                                       for p in batches]},
    }
    try:
        write_lock(status.path, Lock(spec.file.name, inputs, choices, evidence))
    except OSError as e:
        return LockStatus(status.path, "not written", (f"cannot write it: {e.strerror or e}",))
    return status


def _round(x: float) -> float:
    """Four significant digits: enough for a reviewer, stable enough not to churn a diff (ints stay)."""
    return x if isinstance(x, int) else float(f"{x:.4g}")


def _pinned(spec: Spec) -> bool:
    return {"max_batch_size", "max_queue_delay_ms"} <= spec.serving_pinned


def _limit(spec: Spec) -> float | None:
    lb = spec.budget.latency_ms
    return (lb.p99 or lb.p95 or lb.p50) if lb else None


def with_limits(spec: Spec, serving: ServingConfig) -> ServingConfig:
    """`serving` with the request limits the spec does not set derived from the request inputs and the batch size:
    rows for 8 batches (at least 1,024), elements for that many rows, a body that holds them as JSON numbers
    (inputs of strings keep the default body limit)."""
    pinned = spec.serving_pinned
    rows = serving.max_rows if "max_rows" in pinned else max(1024, 8 * serving.max_batch_size)
    per_row = [math.prod(t.shape) for t in spec.inputs]
    known = all(d >= 0 for t in spec.inputs for d in t.shape)  # a BYTES element counts one (a string)
    elements = serving.max_elements
    if "max_elements" not in pinned and known:
        elements = rows * max(1, sum(per_row))
    body = serving.max_body_bytes
    numbers = known and all(t.dtype != "bytes" for t in spec.inputs)  # strings' sizes are not known: the default
    if "max_body_bytes" not in pinned and numbers:  # ~24 bytes per JSON number, and room for the envelope
        body = min(256 << 20, max(1 << 20, elements * 24 + (64 << 10)))
    decompressed = serving.max_decompressed_bytes if "max_decompressed_bytes" in pinned else body
    return replace(serving, max_rows=rows, max_elements=elements, max_body_bytes=body,
                   max_decompressed_bytes=decompressed)


def _initial_serving(spec: Spec, locked: Lock | None) -> ServingConfig:
    """The serving settings to stage: the lock's, else the spec's."""
    if locked is None:
        return spec.serving
    chosen = locked.choices.serving
    return replace(spec.serving, max_batch_size=int(chosen["max_batch_size"]),
                   max_queue_delay_ms=float(chosen["max_queue_delay_ms"]))


def _serving(spec: Spec, plan: Plan, locked: Lock | None, latency: LatencyGate, tuned: bool,
             first: ServingConfig) -> tuple[ServingConfig, str, list[BatchPoint]]:
    """The serving settings to ship, why, and the batch sweep behind them."""
    batches = list(latency.batches)
    if tuned:
        serving, why = choose_serving(batches, spec.budget.latency_ms, spec.serving_pinned, spec.serving)
        return serving, why, batches
    if locked is not None:
        return first, "from the lock (measured when it was written)", batches
    if _pinned(spec):
        return first, "max_batch_size and max_queue_delay_ms pinned by the spec", batches
    return first, "the build host is not the target: serving settings from the spec", batches


def _bench(checked: CheckedSpec, plan: Plan, kernels: dict[str, KernelInfo], outputs: tuple[TensorSpec, ...],
           work: Path, iterations: int, progress: Progress) -> Bench:
    spec, source = checked.spec, checked.model
    calibration = checked.calibration.requests if checked.calibration else None
    feeds = _feeds(kernels["pre"], calibration) if calibration is not None else None
    ctx = PassContext(workdir=work, target=plan.target, calibration=feeds)
    reference = pipeline_for(spec, plan, kernels, outputs, source)
    if checked.validation:
        requests, labels = checked.validation.requests, checked.validation.labels
        validation = Validation(requests, labels, Outputs(reference, requests, response=True))
        return Bench(spec=spec, plan=plan, kernels=kernels, outputs=outputs, ctx=ctx, requests=requests,
                     validation=validation, iterations=iterations, progress=progress)
    return Bench(spec=spec, plan=plan, kernels=kernels, outputs=outputs, ctx=ctx,
                 requests=reference.example_request(1), iterations=iterations, progress=progress)


def _monitor_files(checked: CheckedSpec, kernels: dict[str, KernelInfo], bench: Bench) -> dict[str, bytes]:
    """monitor/reference.json: the drift reference, of the calibration data (else the validation data) and the
    validation outputs (infc.drift)."""
    data = checked.calibration or checked.validation
    outputs = None if bench.validation is None else {**bench.validation.reference.model,
                                                     **bench.validation.reference.response}
    return reference_files(checked.spec.monitor, kernels["pre"], data.requests if data else None, outputs,
                           [(step.name, step.input.name if step.input else None) for step in checked.post.steps])


def _feeds(pre: KernelInfo, calibration: Tensors) -> Callable[[], Iterator[dict[str, Any]]]:
    """Model-input feeds from the calibration requests (after pre-processing), 16 rows at a time."""
    def feeds() -> Iterator[dict[str, Any]]:
        n = len(next(iter(calibration.values())))
        for start in range(0, n, 16):
            yield pre.run({k: v[start:start + 16] for k, v in calibration.items()})

    return feeds


def _files(spec: Spec, plan: Plan, model: onnx.ModelProto, modules: dict[str, GeneratedModule],
           requires: list[str], wheels: Wheelhouse | None) -> dict[str, bytes]:
    """The bundle's files, but the wheels (added after the bundle was staged and measured: they are not read
    when serving) and the measured ones."""
    common = {"name": spec.name, "version": spec.version, "target": plan.target}
    stated = platform_record(plan.target, wheels)
    kernels = {f"kernels/{rel}": data.encode() if isinstance(data, str) else data
               for module in modules.values() for rel, data in module.files().items()}
    runtime = runtime_files()
    # serve.py pins the verifier it runs first: the one file a bundle must trust by itself
    verifier = hashlib.sha256(runtime["infc_runtime/verify.py"]).hexdigest()
    return {
        "model.onnx": model.SerializeToString(),
        **kernels,  # pre.py, post.py and the assets they read (kernels/assets/)
        "serve.py": render("serve.py.j2", verify_sha256=verifier, **common).encode(),
        "requirements.txt": (wheels.requirements if wheels else pinned_requirements(plan.target, requires)).encode(),
        "install.sh": render("install.sh.j2", python=stated["python"], machine=stated["machine"],
                             glibc=stated["glibc"], **common).encode(),
        # Dockerfile, k8s/ (Deployment + Service, HPA, PDB, KServe InferenceService): a pod asks for the threads
        **deploy_files(spec, plan.target, plan.session["intra_op_num_threads"] or 2),
        **runtime,
    }


def _compute(spec: Spec, plan: Plan, chosen: Evaluation, files: dict[str, bytes], serving: ServingConfig,
             prepared: list[dict[str, Any]], outputs: list[TensorSpec], provenance: dict[str, Any],
             wheels: Wheelhouse | None = None) -> Bundle:
    """The bundle's files and the content part of its manifest (measurements are added after)."""
    base, exclude = choices_of(chosen)
    manifest = Manifest(
        name=spec.name,
        version=spec.version,
        inputs=tuple(spec.inputs),
        outputs=tuple(outputs),
        model=ModelFile("model.onnx", spec.model.name),
        kernels=KernelFiles("kernels/pre.py", "kernels/post.py"),
        session=plan.session,
        serving=serving,
        plan={**plan.to_dict(), "chosen": chosen.candidate.name,
              "passes": [{"name": n, "params": p} for n, p in chosen.candidate.passes]},
        choice=ChoiceRecord(chosen.candidate.name, base, exclude),
        passes=tuple(chosen.records),
        prepared=tuple(prepared),
        versions=versions(),
        provenance=provenance,
        platform=platform_record(plan.target, wheels),
        wheels={path: len(data) for path, data in wheels.wheels.items()} if wheels else {},
        cost=None if (price := price_of(spec.deploy)) is None else price.to_dict(),  # the server's live cost gauge
    )
    # the bundle's spec.yaml shows what the server uses: the chosen batching, the prepared parameters
    shipped = {**spec.data, "serving": serving.to_dict()}
    return compute_bundle(files_=files, manifest=manifest, spec_data=shipped)


def _miss_message(result: BuildOutcome) -> str:
    lines = [f"{result.spec.name} {result.spec.version}: budget missed, no bundle written"]
    for acc in result.accuracy:
        if not acc.passed:
            lines.append(f"  accuracy: {acc.name} = {acc.value:.4f}, budget {acc.op} {acc.bound:g} "
                         f"(off by {abs(acc.margin or 0.0):.4f}; candidate {result.chosen.candidate.name})")
    if result.latency.fails_build:
        for finding in result.latency.findings():
            lines.append(f"  latency: {finding} (candidate {result.chosen.candidate.name})")
    if len(result.evaluations) > 1:
        lines.append("  candidates: " + "; ".join(f"{e.candidate.name}: {result.choice.verdict(e)}"
                                                  for e in result.evaluations))
    return "\n".join(lines)
