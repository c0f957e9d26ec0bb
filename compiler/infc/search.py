"""The candidate search: optimize and measure every candidate plan, then keep the best one.

- Candidates share their leading passes (normalize, fusions): each prefix runs once.
- An int8 candidate that misses an accuracy budget gets a sensitivity search:
  its quantized nodes are ranked by the error each adds (`sensitivity`), and
  the worst 1, 2, 4, ... stay in fp32 until every accuracy budget holds.
- The choice: the fastest candidate inside every accuracy budget, and never one
  that is not clearly faster than fp32 (MIN_SPEEDUP, against timing noise).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import numpy as np
import onnx

from infc_runtime.pipeline import Pipeline, make_session
from infc_runtime.types import Tensors, TensorSpec

from .errors import InfcError
from .gates import AccuracyResult, LatencyResult, Outputs, measure_accuracy, measure_latency, timed
from .passes import PassContext, run_passes
from .plan import Candidate, PassList, Plan
from .sensitivity import rank_nodes
from .spec import Spec

__all__ = ["Bench", "Evaluation", "MIN_SPEEDUP", "evaluate_all", "evaluate_locked", "locked_candidate", "choices_of",
           "choose", "confirm", "time_candidate"]

_SHARED = {"normalize", "fuse_transformer", "fuse_attention"}

MIN_SPEEDUP = 1.05
"""An optimized candidate must beat fp32 by this much (p50 at batch 1) to be chosen."""


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
    sensitivity: dict[str, Any] | None = None
    """How the quantized nodes were ranked when this candidate missed accuracy."""

    @property
    def accurate(self) -> bool:
        return self.error is None and all(a.passed for a in self.accuracy)

    @property
    def worst_margin(self) -> float:
        """How far inside its accuracy budgets the candidate is, at the tightest one."""
        margins = [a.margin for a in self.accuracy if a.margin is not None]
        return min((float("-inf") if math.isnan(m) else m for m in margins), default=0.0)  # NaN: the worst


@dataclass
class Bench:
    """What every candidate is measured with, and the pass prefixes already run."""

    spec: Spec
    plan: Plan
    kernels: dict[str, ModuleType]
    outputs: list[TensorSpec]
    reference: Pipeline | None
    requests: Tensors
    labels: np.ndarray | None
    ctx: PassContext
    iterations: int
    progress: Callable[[str], None] = field(default=lambda message: None)
    """Told what is being measured (a line per candidate or sensitivity variant)."""
    _prefixes: dict[str, tuple[onnx.ModelProto, list[dict[str, Any]]]] = field(default_factory=dict)
    _reference_outputs: Outputs | None = None

    def reference_outputs(self) -> Outputs:
        """The fp32 reference's outputs on the validation data, computed once for all candidates."""
        assert self.reference is not None
        if self._reference_outputs is None:
            self._reference_outputs = Outputs(self.reference, self.requests, response=True)
        return self._reference_outputs

    def pipeline(self, model: onnx.ModelProto) -> Pipeline:
        return Pipeline(name=self.spec.name, version=self.spec.version, inputs=self.spec.inputs,
                        outputs=self.outputs, session=make_session(model.SerializeToString(), self.plan.session),
                        pre=self.kernels["pre"].run, post=self.kernels["post"].run, serving=self.spec.serving)

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
            if passes[n][0] in _SHARED:  # only the common front is worth its memory
                self._prefixes[repr(passes[:n + 1])] = (model, list(records))
        return model, records

    def feeds(self, rows: int = 64, batch: int = 16) -> Iterator[dict[str, Any]]:
        """Model-input feeds from the first validation rows (after pre-processing)."""
        n = min(rows, len(next(iter(self.requests.values()))))
        for start in range(0, n, batch):
            yield self.kernels["pre"].run({k: v[start:start + batch] for k, v in self.requests.items()})


def _evaluate(candidate: Candidate, source: onnx.ModelProto, bench: Bench, *, single: bool,
              with_latency: bool = True) -> Evaluation:
    """Run a candidate's passes, then its gates. With several candidates a failing one is recorded, not fatal."""
    ev = Evaluation(candidate)
    bench.progress(f"candidate {candidate.name}")
    try:
        ev.model, ev.records = bench.run(source, candidate.passes)
    except InfcError as exc:
        if single:
            raise
        ev.error = str(exc)
        return ev
    pipeline = bench.pipeline(ev.model)
    if bench.reference is not None:
        ev.accuracy = measure_accuracy(bench.reference_outputs(), pipeline, bench.requests, bench.labels,
                                       bench.spec.budget.accuracy)
    if with_latency or ev.accurate:
        time_candidate(ev, bench, pipeline)
    return ev


def time_candidate(ev: Evaluation, bench: Bench, pipeline: Pipeline | None = None) -> None:
    """Measure latency for a candidate that was not timed yet."""
    if ev.latency is None and ev.model is not None:
        # compared side by side in this process; the gate measures the chosen bundle in its own process
        ev.latency = measure_latency(pipeline or bench.pipeline(ev.model), bench.requests,
                                     bench.spec.budget.latency_ms, enforce=False, iterations=bench.iterations)


def _quant_index(passes: PassList) -> int | None:
    return next((i for i, (name, _) in enumerate(passes) if name.startswith("quantize_")), None)


MAX_MEASURED = 64
"""Up to this many quantized nodes of a dynamic int8 candidate, each node's cost is measured
(leave-one-out); above that, and for static int8, it is estimated."""


def _with_exclude(passes: PassList, q: int, exclude: list[str]) -> PassList:
    name, params = passes[q]
    return (*passes[:q], (name, {**params, "exclude": exclude}), *passes[q + 1:])


def _score(ev: Evaluation) -> tuple[float, float]:
    """Higher is better: the tightest budget's margin, then the sum of all margins."""
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
    from .passes._quant import COMPUTE_OPS

    nodes = [n.name for n in before.graph.node if n.op_type in COMPUTE_OPS and n.name]
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


def _exclusions(missed: Evaluation, source: onnx.ModelProto, bench: Bench) -> list[Evaluation]:
    """Keep the most costly quantized nodes in fp32, 1, 2, 4, ... of them, until the budgets hold."""
    passes = missed.candidate.passes
    q = _quant_index(passes)
    if q is None or bench.reference is None or missed.error:
        return []
    ranked, how = _rank(missed, source, bench, q)
    missed.sensitivity = how
    tried: list[Evaluation] = []
    k = 1
    while k < len(ranked):  # keeping every node in fp32 would be fp32 with extra work
        ev = _evaluate(Candidate(f"{missed.candidate.name}+fp32x{k}", _with_exclude(passes, q, ranked[:k])),
                       source, bench, single=False, with_latency=False)
        tried.append(ev)
        if ev.accurate:
            break
        k *= 2
    return tried


def evaluate_all(source: onnx.ModelProto, bench: Bench) -> list[Evaluation]:
    """Every candidate of the plan, plus sensitivity variants of the int8 ones that miss accuracy."""
    single = len(bench.plan.candidates) == 1
    evaluations = []
    for candidate in bench.plan.candidates:
        ev = _evaluate(candidate, source, bench, single=single)
        evaluations.append(ev)
        if not ev.accurate:
            evaluations.extend(_exclusions(ev, source, bench))
    return evaluations


def locked_candidate(plan: Plan, base: str, name: str, exclude: Sequence[str]) -> Candidate | None:
    """The plan's candidate `base` with `exclude` kept in fp32, named `name`; None when the plan has no `base`."""
    found = next((c for c in plan.candidates if c.name == base), None)
    if found is None:
        return None
    q = _quant_index(found.passes)
    if not exclude:
        return Candidate(name, found.passes)
    if q is None:
        return None
    return Candidate(name, _with_exclude(found.passes, q, list(exclude)))


def choices_of(ev: Evaluation) -> tuple[str, tuple[str, ...]]:
    """The plan candidate an evaluation derives from, and the nodes it keeps in fp32."""
    q = _quant_index(ev.candidate.passes)
    exclude = tuple(ev.candidate.passes[q][1].get("exclude", ())) if q is not None else ()
    return ev.candidate.name.split("+", 1)[0], exclude


def evaluate_locked(candidate: Candidate, source: onnx.ModelProto, bench: Bench) -> Evaluation:
    """The lock's candidate, optimized and checked against the accuracy budgets (no search, no timing)."""
    ev = _evaluate(candidate, source, bench, single=True, with_latency=False)
    ev.verdict = ("chosen: from the lock" if ev.accurate
                  else "misses the accuracy budget (the locked choice; --relock searches again)")
    return ev


def choose(evaluations: Sequence[Evaluation], *, measurable: bool = True) -> Evaluation:
    """The fastest candidate inside every accuracy budget; never one not faster than fp32.

    When this host's speed is not the target's (`measurable` False), no candidate
    can be proven faster than fp32, so fp32 is kept whenever it is accurate.
    """
    if len(evaluations) == 1:
        evaluations[0].verdict = "chosen (the only candidate)"
        return evaluations[0]
    baseline = next((e for e in evaluations if e.candidate.name == "fp32" and e.accurate), None)
    best: Evaluation | None = None
    for ev in evaluations:
        if not ev.accurate:
            ev.verdict = f"failed: {ev.error}" if ev.error else "misses the accuracy budget"
            continue
        if not measurable and baseline is not None and ev is not baseline:
            ev.verdict = "not chosen: its speed on the target cannot be measured on this host"
            continue
        assert ev.latency is not None
        if baseline is not None and ev is not baseline:
            assert baseline.latency is not None
            speedup = baseline.latency.p50_ms / ev.latency.p50_ms
            if speedup < MIN_SPEEDUP:
                ev.verdict = f"not faster than fp32 (p50 x{speedup:.2f})"
                continue
        if best is None or ev.latency.p50_ms < (best.latency.p50_ms if best.latency else float("inf")):
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


def _p50_ms(pipeline: Pipeline, requests: Tensors, count: int) -> float:
    rows = len(next(iter(requests.values())))
    singles = iter([{k: v[i % rows:i % rows + 1] for k, v in requests.items()} for i in range(count)])
    return float(np.median(timed(lambda: pipeline.run(next(singles)), count)))


def confirm(chosen: Evaluation, evaluations: Sequence[Evaluation], bench: Bench, rounds: int = 7) -> Evaluation:
    """Re-measure a non-fp32 winner against fp32 interleaved (A, B, A, B, ...) before trusting it.

    The candidates were timed one after another, so a passing load spike can make
    a plan look faster than it is; alternating rounds expose both to the same load.
    The winner stays only if its median p50 still beats fp32 by MIN_SPEEDUP.
    """
    baseline = next((e for e in evaluations if e.candidate.name == "fp32" and e.accurate), None)
    if baseline is None or chosen is baseline or not chosen.accurate:
        return chosen
    assert baseline.model is not None and chosen.model is not None
    fast, base = bench.pipeline(chosen.model), bench.pipeline(baseline.model)
    fast.warmup()
    base.warmup()
    # rounds of at least ~0.1 s each, with a pause before each so the other session's
    # onnxruntime threads stop spinning (two live sessions would otherwise share the cores)
    assert baseline.latency is not None
    per_round = max(30, int(0.1 / max(baseline.latency.p50_ms / 1000, 1e-6)))
    a, b = [], []
    for _ in range(rounds):
        time.sleep(0.05)
        a.append(_p50_ms(base, bench.requests, per_round))
        time.sleep(0.05)
        b.append(_p50_ms(fast, bench.requests, per_round))
    speedup = float(np.median(a) / np.median(b))
    if speedup >= MIN_SPEEDUP:
        chosen.verdict += f" (confirmed side by side: x{speedup:.2f} fp32 at p50)"
        return chosen
    chosen.verdict = f"not faster than fp32 when re-measured side by side (p50 x{speedup:.2f})"
    baseline.verdict = "chosen: the only candidate inside the budgets that is not slower than fp32"
    return baseline
