"""The candidate search: optimize and measure every candidate plan, then keep the best one.

- Candidates share their leading passes (the plan's `shared` prefix: normalize,
  fusions): each prefix runs once. An unfused candidate is skipped when the
  fusions it leaves out change nothing (it would repeat the fused one).
- An int8 candidate that misses an accuracy budget gets a sensitivity search:
  its quantized nodes are ranked by the error each adds (`sensitivity`), and
  the worst 1, 2, 4, ... stay in fp32 until every accuracy budget holds.
- The choice (`infc.choice`): the fastest candidate inside every accuracy
  budget, and never one that is not clearly faster than the plan's baseline
  (MIN_SPEEDUP, against timing noise), confirmed side by side.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import onnx

from infc_runtime.abi import KernelInfo
from infc_runtime.pipeline import Pipeline, make_session
from infc_runtime.types import Tensors, TensorSpec

from .choice import MIN_SPEEDUP, Choice, Evaluation, Failure, Tried, choose
from .errors import InfcError
from .gates import Outputs, measure_accuracy, measure_latency, timed
from .passes import PassContext, quantizable_nodes, run_passes
from .plan import Candidate, PassList, Plan
from .sensitivity import rank_nodes
from .spec import Spec
from .target_numerics import choose_by_rule

__all__ = ["Bench", "Validation", "evaluate_all", "evaluate_locked", "locked_candidate", "choices_of", "search",
           "pipeline_for", "MIN_SPEEDUP"]


def pipeline_for(spec: Spec, plan: Plan, kernels: Mapping[str, KernelInfo], outputs: Sequence[TensorSpec],
                 model: onnx.ModelProto) -> Pipeline:
    """The pipeline a bundle of `model` would serve, in this process (on CPU when the build host cannot run the
    target's provider: the plan's notes say so)."""
    session = make_session(model.SerializeToString(), plan.session, allow_cpu_fallback=not plan.host_runs_target)
    return Pipeline(name=spec.name, version=spec.version, inputs=spec.inputs, outputs=outputs, session=session,
                    pre=kernels["pre"], post=kernels["post"], serving=spec.serving,
                    requested_providers=plan.session.get("providers"))


@dataclass(frozen=True)
class Validation:
    """The validation requests, their labels, and the fp32 reference's outputs on them (computed once)."""

    requests: Tensors
    labels: np.ndarray | None
    reference: Outputs


@dataclass(frozen=True)
class Bench:
    """What every candidate is measured with (and the pass prefixes already run)."""

    spec: Spec
    plan: Plan
    kernels: Mapping[str, KernelInfo]
    outputs: tuple[TensorSpec, ...]
    ctx: PassContext
    requests: Tensors
    """What latency is timed on: the validation requests, else an example request."""
    validation: Validation | None = None
    """None: the spec has no validation data (accuracy is not measured)."""
    iterations: int = 300
    progress: Callable[[str], None] = field(default=lambda message: None)
    """Told what is being measured (a line per candidate or sensitivity variant)."""
    on_target: Callable[[onnx.ModelProto], Callable[[Tensors], Tensors]] | None = None
    """Runs a candidate's model with the target's numerics (under an emulator, `infc.target_numerics`): its
    accuracy is measured there, and the choice follows `speed_rule` (speed cannot be measured)."""
    _prefixes: dict[str, tuple[onnx.ModelProto, list[dict[str, Any]]]] = field(
        default_factory=dict, repr=False, compare=False)

    def pipeline(self, model: onnx.ModelProto) -> Pipeline:
        return pipeline_for(self.spec, self.plan, self.kernels, self.outputs, model)

    def run(self, source: onnx.ModelProto, passes: PassList) -> tuple[onnx.ModelProto, list[dict[str, Any]]]:
        """Run `passes` on `source`, reusing the longest prefix already computed."""
        model, records, done = source, [], 0
        for n in range(len(passes), 0, -1):
            key = repr(passes[:n])
            if key in self._prefixes:
                model, cached = self._prefixes[key]
                records, done = list(cached), n
                break
        for n in range(done, len(passes)):
            model, more = run_passes(model, passes[n:n + 1], self.ctx)
            records += more
            # only the common front (the baseline's first passes) is worth its memory
            if n < self.plan.shared and passes[:n + 1] == self.plan.passes[:n + 1]:
                self._prefixes[repr(passes[:n + 1])] = (model, list(records))
        return model, records

    def feeds(self, rows: int = 64, batch: int = 16) -> Iterator[dict[str, Any]]:
        """Model-input feeds from the first validation rows (after pre-processing)."""
        n = min(rows, len(next(iter(self.requests.values()))))
        for start in range(0, n, batch):
            yield self.kernels["pre"].run({k: v[start:start + batch] for k, v in self.requests.items()})


def _measure(candidate: Candidate, model: onnx.ModelProto, records: list[dict[str, Any]], bench: Bench, *,
             with_latency: bool) -> Evaluation:
    """A candidate's gates: accuracy against the reference, and latency (always, for an accurate one)."""
    pipeline = bench.pipeline(model)
    val = bench.validation
    infer = bench.on_target(model) if bench.on_target is not None and val is not None else None
    accuracy = () if val is None else tuple(measure_accuracy(val.reference, pipeline, val.requests, val.labels,
                                                             bench.spec.budget.accuracy, infer=infer))
    ev = Evaluation(candidate, model, tuple(records), accuracy)
    return timed_candidate(ev, bench, pipeline) if with_latency or ev.accurate else ev


def _evaluate(candidate: Candidate, source: onnx.ModelProto, bench: Bench, *, single: bool,
              with_latency: bool = True) -> Tried:
    """Run a candidate's passes, then its gates. With several candidates a failing one is recorded, not fatal."""
    bench.progress(f"candidate {candidate.name}")
    try:
        model, records = bench.run(source, candidate.passes)
    except InfcError as exc:
        if single:
            raise
        return Failure(candidate, exc)
    return _measure(candidate, model, records, bench, with_latency=with_latency)


def timed_candidate(ev: Evaluation, bench: Bench, pipeline: Pipeline | None = None) -> Evaluation:
    """The candidate with its latency measured, if it was not timed yet."""
    if ev.latency is not None:
        return ev
    # compared side by side in this process; the gate measures the chosen bundle in its own process
    return replace(ev, latency=measure_latency(pipeline or bench.pipeline(ev.model), bench.requests,
                                               bench.spec.budget.latency_ms, enforce=False,
                                               iterations=bench.iterations))


def _quant_index(passes: PassList) -> int | None:
    return next((i for i, (name, _) in enumerate(passes) if name.startswith("quantize_")), None)


MAX_MEASURED = 64
"""Up to this many quantized nodes of a dynamic int8 candidate, each node's cost is measured
(leave-one-out); above that, and for static int8, it is estimated."""


def _with_exclude(passes: PassList, q: int, exclude: list[str]) -> PassList:
    name, params = passes[q]
    return (*passes[:q], (name, {**params, "exclude": exclude}), *passes[q + 1:])


def _score(ev: Tried) -> tuple[float, float]:
    """Higher is better: the tightest budget's margin, then the sum of all margins (a failed variant: 0, 0)."""
    if isinstance(ev, Failure):
        return (0.0, 0.0)
    margins = [a.margin for a in ev.accuracy if a.margin is not None and not math.isnan(a.margin)]
    return (ev.worst_margin, sum(margins))


def _rank(missed: Evaluation, source: onnx.ModelProto, bench: Bench, q: int) -> tuple[list[str], dict[str, Any]]:
    """Quantized nodes, the most costly first, and how that was found (for the manifest).

    Leave-one-out: quantize everything but one node and measure the budgets;
    the node whose exclusion helps the most costs the most. For large graphs,
    the activation-error estimate of `sensitivity.rank_nodes` instead.
    """
    passes = missed.candidate.passes
    before, _ = bench.run(source, passes[:q])
    nodes = quantizable_nodes(before)
    # static int8 recalibrates on every call: too slow to measure node by node, so estimate
    if len(nodes) > MAX_MEASURED or passes[q][0] != "quantize_dynamic":
        after, _ = bench.run(source, passes[:q + 1])
        ranked = rank_nodes(before, after, list(bench.feeds()))
        return [n for n, _ in ranked], {"method": "activation error (estimate)", "scores": dict(ranked)}
    scored = []
    for node in nodes:
        ev = _evaluate(Candidate(f"{missed.candidate.name}-{node}", _with_exclude(passes, q, [node])), source,
                       bench, single=False, with_latency=False)
        scored.append((_score(ev), node))
    scored.sort(key=lambda item: item[0], reverse=True)
    return [n for _, n in scored], {"method": "leave-one-out (measured)",
                                    "scores": {n: round(sc[0], 6) for sc, n in scored}}


def _exclusions(missed: Evaluation, source: onnx.ModelProto, bench: Bench) -> list[Tried]:
    """The missed candidate with its sensitivity ranking, then variants keeping its most costly quantized
    nodes in fp32, 1, 2, 4, ... of them, until the budgets hold."""
    passes = missed.candidate.passes
    q = _quant_index(passes)
    if q is None or bench.validation is None:
        return [missed]
    ranked, how = _rank(missed, source, bench, q)
    tried: list[Tried] = [replace(missed, sensitivity=how)]
    k = 1
    while k < len(ranked):  # keeping every node in fp32 would be fp32 with extra work
        ev = _evaluate(Candidate(f"{missed.candidate.name}+fp32x{k}", _with_exclude(passes, q, ranked[:k])),
                       source, bench, single=False, with_latency=False)
        tried.append(ev)
        if ev.accurate:
            break
        k *= 2
    return tried


def _repeats(candidate: Candidate, source: onnx.ModelProto, bench: Bench) -> bool:
    """Whether `candidate` would repeat another: none of the passes it leaves out changes the model."""
    if not candidate.unless_unchanged_by:
        return False
    _, records = bench.run(source, bench.plan.candidates[0].passes[:bench.plan.shared])  # run once, kept
    return not any(r["modified"] for r in records if r["pass"] in candidate.unless_unchanged_by)


def evaluate_all(source: onnx.ModelProto, bench: Bench) -> list[Tried]:
    """Every candidate of the plan (but one that would repeat another), plus sensitivity variants of the
    int8 ones that miss accuracy."""
    single = len(bench.plan.candidates) == 1
    evaluations: list[Tried] = []
    for candidate in bench.plan.candidates:
        if _repeats(candidate, source, bench):
            bench.progress(f"candidate {candidate.name}: skipped, {', '.join(candidate.unless_unchanged_by)} "
                           "changed nothing")
            continue
        ev = _evaluate(candidate, source, bench, single=single)
        evaluations += _exclusions(ev, source, bench) if isinstance(ev, Evaluation) and not ev.accurate else [ev]
    return evaluations


def search(source: onnx.ModelProto, bench: Bench) -> Choice:
    """Every candidate, evaluated; the choice among them (a winner other than the baseline confirmed side by
    side); the chosen candidate timed (a closest miss was not, and the report shows it)."""
    evaluations = evaluate_all(source, bench)
    failures = [e for e in evaluations if isinstance(e, Failure)]
    if len(failures) == len(evaluations):
        raise failures[0].exception  # nothing to choose from: as with a single candidate

    def side_by_side(fast: Evaluation, base: Evaluation, base_p50_ms: float) -> float:
        bench.progress(f"confirming {fast.candidate.name} against {base.candidate.name}, side by side")
        return _side_by_side(fast, base, base_p50_ms, bench)

    if bench.on_target is not None:  # accuracy on the target's numerics; speed by rule (see target_numerics)
        choice = choose_by_rule(evaluations, bench.plan, source)
    else:
        choice = choose(evaluations, measurable=bench.plan.host_matches_target, side_by_side=side_by_side)
    chosen = timed_candidate(choice.chosen, bench)
    return replace(choice, chosen=chosen,
                   evaluations=tuple(chosen if e is choice.chosen else e for e in choice.evaluations))


def locked_candidate(plan: Plan, base: str, name: str, exclude: Sequence[str]) -> Candidate | None:
    """The plan's candidate `base` with `exclude` kept in fp32, named `name`; None when the plan has no `base`."""
    found = next((c for c in plan.candidates if c.name == base), None)
    if found is None:
        return None
    q = _quant_index(found.passes)
    if not exclude:
        return Candidate(name, found.passes, baseline=found.baseline)
    if q is None:
        return None
    return Candidate(name, _with_exclude(found.passes, q, list(exclude)))


def choices_of(ev: Evaluation) -> tuple[str, tuple[str, ...]]:
    """The plan candidate an evaluation derives from, and the nodes it keeps in fp32."""
    q = _quant_index(ev.candidate.passes)
    exclude = tuple(ev.candidate.passes[q][1].get("exclude", ())) if q is not None else ()
    return ev.candidate.name.split("+", 1)[0], exclude


def evaluate_locked(candidate: Candidate, source: onnx.ModelProto, bench: Bench) -> Choice:
    """The lock's candidate, optimized and checked against the accuracy budgets (no search, no timing)."""
    bench.progress(f"candidate {candidate.name}")
    model, records = bench.run(source, candidate.passes)
    ev = _measure(candidate, model, records, bench, with_latency=False)
    verdict = ("chosen: from the lock" if ev.accurate
               else "misses the accuracy budget (the locked choice; --relock searches again)")
    return Choice(ev, {candidate.name: verdict}, (ev,))


def _p50_ms(pipeline: Pipeline, requests: Tensors, count: int) -> float:
    rows = len(next(iter(requests.values())))
    singles = iter([{k: v[i % rows:i % rows + 1] for k, v in requests.items()} for i in range(count)])
    return float(np.median(timed(lambda: pipeline.run(next(singles)), count)))


def _side_by_side(fast_ev: Evaluation, base_ev: Evaluation, base_p50_ms: float, bench: Bench,
                  rounds: int = 7) -> float:
    """The winner's p50 speedup over the baseline, re-measured interleaved (A, B, A, B, ...).

    The candidates were timed one after another, so a passing load spike can make
    a plan look faster than it is; alternating rounds expose both to the same load.
    """
    fast, base = bench.pipeline(fast_ev.model), bench.pipeline(base_ev.model)
    fast.warmup()
    base.warmup()
    # rounds of at least ~0.1 s each, with a pause before each so the other session's
    # onnxruntime threads stop spinning (two live sessions would otherwise share the cores)
    per_round = max(30, int(0.1 / max(base_p50_ms / 1000, 1e-6)))
    a, b = [], []
    for _ in range(rounds):
        time.sleep(0.05)
        a.append(_p50_ms(base, bench.requests, per_round))
        time.sleep(0.05)
        b.append(_p50_ms(fast, bench.requests, per_round))
    return float(np.median(a) / np.median(b))
