"""What a build decided and measured, as one frozen value: `BuildOutcome`.

`build()` returns it (a missed budget raises `BudgetError` carrying it). The
bundle's manifest (`measurements`, `bundle`), report.md (`report.build_report`)
and `infc build --json` (`results.build_document`) are views of it: none of
them holds a fact the outcome does not.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from infc_runtime.types import ServingConfig

from .bundle import Bundle
from .choice import Choice, Evaluation, Tried
from .coldstart import KernelCache
from .cost import CostEstimate, estimate
from .gates import AccuracyResult
from .kernels.graph import Dataflow
from .latency_gate import LatencyGate
from .lock import LockStatus
from .plan import Plan
from .serving_tune import BatchPoint
from .spec import Spec

__all__ = ["BuildOutcome", "candidate_record"]


@dataclass(frozen=True)
class BuildOutcome:
    """A build's decisions and measurements, the bundle they make, and where it was written."""

    spec: Spec
    plan: Plan
    choice: Choice
    pre: Dataflow
    post: Dataflow
    latency: LatencyGate
    """The chosen bundle, measured in a fresh process, and the gate's verdict."""
    lock: LockStatus
    serving: ServingConfig
    serving_why: str
    batches: tuple[BatchPoint, ...]
    """The batch sweep behind `serving` (empty when it was not measured)."""
    kernel_cache: KernelCache
    host: Mapping[str, Any]
    """The build host (cpu, hardware, isa, cpus): what the measurements were taken on."""
    content: Bundle
    """The bundle's files and the content part of its manifest (no measurements, no measured files)."""
    report: str = ""
    """report.md (`report.build_report(outcome)`)."""
    path: Path | None = None
    """Where the bundle was written (None: not written)."""
    archive: Path | None = None
    """Where its archive was written (`--archive`; None: not written)."""

    @property
    def chosen(self) -> Evaluation:
        return self.choice.chosen

    @property
    def evaluations(self) -> tuple[Tried, ...]:
        return self.choice.evaluations

    @property
    def passed(self) -> bool:
        return self.chosen.accurate and not self.latency.fails_build

    @property
    def accuracy(self) -> tuple[AccuracyResult, ...]:
        return self.chosen.accuracy

    @property
    def warnings(self) -> list[str]:
        """What a passing build must still say (an inconclusive or unenforced latency budget)."""
        warning = self.latency.warning()
        return [warning] if warning else []

    @cached_property
    def cost(self) -> CostEstimate:
        """Cost per 1,000 requests at the measured throughput (`infc.cost`)."""
        return estimate(self.spec, self.plan.target, self.serving, self.latency, self.chosen, self.evaluations,
                        lock_reused=self.lock.state == "reused")

    def measurements(self) -> dict[str, Any]:
        """The manifest's `measurements` sections (its `files` are added with the measured files)."""
        return {
            "results": {"passed": self.passed, "accuracy": [asdict(a) for a in self.chosen.accuracy],
                        "latency": self.latency.to_dict()},
            "candidates": [candidate_record(e, self.choice.verdict(e)) for e in self.evaluations],
            "serving_tuning": {"reason": self.serving_why, "batches": [asdict(p) for p in self.batches]},
            "cost": self.cost.to_dict(),
            "kernel_cache": self.kernel_cache.to_dict(),
            "lock": self.lock.to_dict(),
            "host": dict(self.host),
        }

    @cached_property
    def measured(self) -> Bundle:
        """The bundle with its measurements and Numba's cache, before report.md (which describes it)."""
        return self.content.with_files(self.kernel_cache.files).with_measurements(**self.measurements())

    @cached_property
    def bundle(self) -> Bundle:
        """The bundle as written: `measured` plus report.md."""
        return self.measured.with_files({"report.md": self.report.encode()})


def candidate_record(e: Tried, verdict: str) -> dict[str, Any]:
    """A candidate in the manifest's `measurements.candidates`."""
    return {"name": e.candidate.name, "verdict": verdict, "error": e.error,
            "sensitivity": dict(e.sensitivity) if e.sensitivity is not None else None,
            "accuracy": [asdict(a) for a in e.accuracy], "latency": asdict(e.latency) if e.latency else None}
