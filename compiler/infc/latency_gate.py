"""The latency gate: measure the bundle about to ship in a fresh process, and decide with confidence.

What ships is measured as it runs: the bundle's files are staged in a scratch
folder and `python -m infc_runtime measure` runs there, in a new interpreter,
with the bundle's own runtime copy, its manifest's session settings, the
server's warm-up and heap settling (`infc_runtime.latency.settle_heap`). The
compiler's own heap (models, candidates, Numba) never shares a garbage
collector with the timed requests.

Each budgeted percentile gets a confidence interval (distribution-free
order-statistic bounds, 95 %), and the sample count adapts until every
interval is on one side of its budget or the time runs out. The rule:

- `pass`: the interval lies wholly at or below the budget;
- `fail`: wholly above it;
- `inconclusive`: it straddles the budget. `--latency-gate=strict` fails the
  build then; `lenient` (the default) prints a warning and exits 0; `off`
  never fails on latency (it is still measured and reported).

Latency is enforced only where the build host is the target (same hardware and
ISA); elsewhere it is reported as `not measured on the target`, never as a pass.
A cuda bundle on a host without CUDA is measured on CPU (the measure command's
`--allow-cpu-fallback`, given only then) and the gate records the providers it
ran on, so the report can say so.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from infc_runtime.latency import BatchPoint

from .spec import LatencyBudget

__all__ = ["GATE_MODES", "GatePercentile", "LatencyGate", "MeasureError", "gate", "measure_bundle"]

GATE_MODES = ("strict", "lenient", "off")

# run in the staged bundle's folder: its own runtime first on sys.path, never the installed one
_RUN = ("import sys; sys.path.insert(0, '.'); import infc_runtime; "
        "from infc_runtime.serve import main; sys.exit(main(sys.argv[1:]))")


class MeasureError(RuntimeError):
    """The staged bundle could not be measured (its warm-up or a request failed): a bug, not a budget miss."""


@dataclass(frozen=True)
class GatePercentile:
    """One percentile of per-request latency with its interval, against its budget (None: not budgeted)."""

    name: str
    value_ms: float
    low_ms: float
    high_ms: float
    bound_ms: float | None
    verdict: str | None

    def interval(self) -> str:
        low = f"{self.low_ms:.3f}" if math.isfinite(self.low_ms) else "-inf"
        high = f"{self.high_ms:.3f}" if math.isfinite(self.high_ms) else "+inf"
        return f"[{low}, {high}] ms"

    def to_dict(self) -> dict[str, Any]:
        def finite(x: float) -> float | None:
            return x if math.isfinite(x) else None

        return {"name": self.name, "value_ms": self.value_ms, "low_ms": finite(self.low_ms),
                "high_ms": finite(self.high_ms), "bound_ms": self.bound_ms, "verdict": self.verdict}


@dataclass(frozen=True)
class LatencyGate:
    """The bundle's measured latency and what the gate makes of it."""

    mode: str
    on_target: bool
    percentiles: tuple[GatePercentile, ...]
    samples: int
    seconds: float
    confidence: float
    stopped: str
    noise: dict[str, Any] = field(default_factory=dict)
    gc: dict[str, Any] = field(default_factory=dict)
    batches: tuple[BatchPoint, ...] = ()
    providers: tuple[str, ...] = ()
    """The execution providers the measured session used (empty: a measurement that did not say)."""
    cpu_fallback: tuple[str, ...] = ()
    """The providers the bundle was built for and the measurement did without (CUDA on a CPU-only host)."""

    def get(self, name: str) -> GatePercentile:
        return next(p for p in self.percentiles if p.name == name)

    @property
    def p50_ms(self) -> float:
        return self.get("p50").value_ms

    @property
    def p95_ms(self) -> float:
        return self.get("p95").value_ms

    @property
    def p99_ms(self) -> float:
        return self.get("p99").value_ms

    @property
    def measured(self) -> str | None:
        """What the measurement says of the budget: fail > inconclusive > pass; None without a budget."""
        verdicts = {p.verdict for p in self.percentiles if p.verdict}
        for v in ("fail", "inconclusive", "pass"):
            if v in verdicts:
                return v
        return None

    @property
    def state(self) -> str:
        """The gate's verdict for people: `pass`, `fail`, `inconclusive`, `no budget`,
        `not measured on the target`, or `over budget (not enforced)` / `... (off)` variants."""
        measured = self.measured
        if measured is None:
            return "no budget"
        if not self.on_target:
            return "not measured on the target"
        if self.mode == "off" and measured != "pass":
            return f"{measured} (not enforced: --latency-gate=off)"
        return measured

    @property
    def fails_build(self) -> bool:
        if not self.on_target or self.mode == "off":
            return False
        return self.measured == "fail" or (self.measured == "inconclusive" and self.mode == "strict")

    def findings(self) -> list[str]:
        """One line per budgeted percentile that did not pass: value, interval, budget."""
        out = []
        for p in self.percentiles:
            if p.verdict in ("fail", "inconclusive"):
                rel = ">" if p.verdict == "fail" else "straddles"
                out.append(f"{p.name} {p.value_ms:.3f} ms, {self.confidence:.0%} interval {p.interval()} {rel} "
                           f"budget {p.bound_ms:g} ms ({p.verdict})")
        return out

    def warning(self) -> str | None:
        """What a passing build must still say about latency (lenient inconclusive, off, not on the target)."""
        lines = self.findings()
        if self.measured in (None, "pass") and self.on_target:
            return None
        if not self.on_target and self.measured is not None:
            where = (f"the build host cannot use {', '.join(self.cpu_fallback)}, so it was measured on "
                     f"{', '.join(self.providers)}" if self.cpu_fallback else "the build host is not the target")
            return (f"latency not measured on the target ({where}); measured here: "
                    + ", ".join(f"{p.name} {p.value_ms:.3f} ms (budget {p.bound_ms:g})"
                                for p in self.percentiles if p.bound_ms is not None))
        if self.fails_build or not lines:
            return None
        how = "--latency-gate=off" if self.mode == "off" else "--latency-gate=lenient"
        return f"latency {self.measured}, not failed ({how}): " + "; ".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "on_target": self.on_target, "state": self.state,
                "fails_build": self.fails_build, "samples": self.samples, "seconds": round(self.seconds, 3),
                "confidence": self.confidence, "stopped": self.stopped,
                "percentiles": [p.to_dict() for p in self.percentiles], "noise": self.noise, "gc": self.gc,
                "batches": [vars(b) for b in self.batches], "providers": list(self.providers),
                "cpu_fallback": list(self.cpu_fallback)}


def _budgets(budget: LatencyBudget | None) -> dict[str, float]:
    if budget is None:
        return {}
    return {q: float(v) for q in ("p50", "p95", "p99") if (v := getattr(budget, q)) is not None}


def measure_bundle(stage: Path, *, requests: Path | None, budget: LatencyBudget | None,
                   batches: Sequence[int] = (), stop_above_ms: float | None = None, min_samples: int = 300,
                   min_seconds: float = 1.0, max_seconds: float = 10.0, timeout: float = 900,
                   allow_cpu_fallback: bool = False) -> dict[str, Any]:
    """Run `python -m infc_runtime measure` on the bundle staged in `stage`, in a fresh interpreter;
    its JSON document. Warm-up writes Numba's cache into `stage/kernels/__pycache__`.

    `allow_cpu_fallback`: a bundle built for CUDA may be measured on CPU (where the build host cannot run the
    target); the document's `providers` and `cpu_fallback` then say so. Without it such a bundle fails to load."""
    cmd = [sys.executable, "-c", _RUN, "measure", ".", "--min-samples", str(min_samples),
           "--min-seconds", f"{min_seconds:g}", "--max-seconds", f"{max_seconds:g}"]
    if allow_cpu_fallback:
        cmd += ["--allow-cpu-fallback"]
    if requests is not None:
        cmd += ["--requests", str(requests)]
    for name, bound in _budgets(budget).items():
        cmd += ["--budget", f"{name}={bound:g}"]
    if batches:
        cmd += ["--batches", ",".join(str(b) for b in batches)]
    if stop_above_ms is not None:
        cmd += ["--stop-above-ms", f"{stop_above_ms:g}"]
    done = subprocess.run(cmd, cwd=stage, capture_output=True, text=True, timeout=timeout,
                          env=_environment())
    if done.returncode != 0:
        raise MeasureError(f"measuring the staged bundle failed (exit {done.returncode}): "
                           f"{done.stderr.strip()[-2000:]}")
    try:
        result: dict[str, Any] = json.loads(done.stdout)
    except json.JSONDecodeError as exc:
        raise MeasureError(f"the bundle's measure command printed no JSON ({exc}): {done.stdout[:500]}") from None
    return result


_NOT_PASSED = ("NUMBA_CACHE_DIR", "NUMBA_DISABLE_JIT", "INFC_PUBLIC_KEY", "INFC_ALLOW_CPU_FALLBACK")


def _environment() -> dict[str, str]:
    """The compiler's environment, less what would change how the bundle runs (JIT switches, cache folders) and
    the serving switches meant for deployed bundles (a required signature: the staged bundle is not signed yet;
    CPU fallback: the build decides it, `allow_cpu_fallback`)."""
    import os

    return {k: v for k, v in os.environ.items() if k not in _NOT_PASSED}


def _bound(x: Any, infinite: float) -> float:
    """JSON's null stands for an unbounded side (`infinite`: -inf for a low side, +inf for a high one)."""
    return infinite if x is None else float(x)


def gate(measurement: dict[str, Any], *, mode: str, on_target: bool) -> LatencyGate:
    """The gate's view of a `measure` document."""
    if mode not in GATE_MODES:
        raise ValueError(f"latency gate mode {mode!r}: expected one of {', '.join(GATE_MODES)}")
    percentiles = tuple(
        GatePercentile(p["name"], float(p["value_ms"]), _bound(p.get("low_ms"), -math.inf),
                       _bound(p.get("high_ms"), math.inf), p.get("bound_ms"), p.get("verdict"))
        for p in measurement["percentiles"])
    batches = tuple(BatchPoint(int(b["batch"]), float(b["p50_ms"]), float(b["p99_ms"]),
                               _bound(b["rows_per_s"], math.inf))
                    for b in measurement.get("batches", []))
    fallback = tuple(str(p) for p in measurement.get("cpu_fallback", ()))
    # a bundle measured without the provider it was built for is never on its target, whatever the plan thought
    return LatencyGate(mode, on_target and not fallback, percentiles, int(measurement["samples"]),
                       float(measurement["seconds"]), float(measurement["confidence"]),
                       str(measurement.get("stopped", "")), dict(measurement.get("noise", {})),
                       dict(measurement.get("gc", {})), batches,
                       tuple(str(p) for p in measurement.get("providers", ())), fallback)
