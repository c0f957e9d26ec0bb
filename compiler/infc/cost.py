"""Cost per 1,000 requests, from what the build measured: the report's `## Cost`, `--json`'s `cost`, `infc diff`.

A request is one row, as the build measures them (the validation requests, one
row each), served in full batches of the chosen `max_batch_size` (a loaded
server; one idle part of the time costs more per request). From the measured
throughput R (rows/s) of the server's session, which used U vCPUs (the spec's
`target.threads`, else the CPUs the measuring process could use, split between
`serving.instances`):

    vCPU-seconds per 1,000 requests = 1000 x U / R
    USD per 1,000 requests          = that x the price of a vCPU-second
    price of a vCPU-second          = usd_per_hour / vcpus / 3600

`vcpus` is the instance's (infc's table, `infc.instances`) or the spec's
`deploy.vcpus`; without it, `usd_per_hour` is the price of the vCPUs the server
uses. A cuda bundle is charged its whole host (`usd_per_hour x 1000 / R / 3600`:
the GPU is the point, not the vCPUs). USD per 1,000,000 rows is 1,000 times
the cost of 1,000 requests of one row.

The shipped plan's throughput is the latency gate's batch at `max_batch_size`
(the bundle as it ships, measured in a fresh process). fp32's is measured only
in the build process, in the candidate search, side by side with the other
candidates at the search's batch size: the saving compares the shipped plan's
and fp32's throughput from that same measurement (both named in the report);
when the build did not time fp32 (a reused lock, or a plan without an fp32
candidate) it says so instead of estimating.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from infc_runtime.cpus import usable_cpus

from .choice import Evaluation
from .instances import INSTANCES, PRICES_AS_OF, PRICES_SOURCE
from .spec.model import Deploy

if TYPE_CHECKING:
    from collections.abc import Sequence

    from infc_runtime.types import ServingConfig

    from .choice import Tried
    from .latency_gate import LatencyGate
    from .spec import Spec

__all__ = ["CostEstimate", "PlanCost", "Price", "estimate", "price_of", "usd"]


@dataclass(frozen=True)
class Price:
    """What one host costs: USD per hour, the vCPUs it buys (None: those the server uses), and where it came from."""

    usd_per_hour: float
    vcpus: int | None
    instance: str | None
    source: str

    def to_dict(self) -> dict[str, Any]:
        return {"usd_per_hour": self.usd_per_hour, "vcpus": self.vcpus, "instance": self.instance,
                "source": self.source}

    def describe(self) -> str:
        if self.instance is not None:
            row = INSTANCES[self.instance]
            return (f"USD {self.usd_per_hour:g} per hour for one {self.instance} ({row.cloud}, {row.vcpus} vCPUs, "
                    f"{row.kind}; infc's table: {self.source})")
        buys = f"{self.vcpus} vCPUs" if self.vcpus else "the vCPUs the server uses"
        return f"USD {self.usd_per_hour:g} per hour for {buys} (the spec's deploy.usd_per_hour)"


def price_of(deploy: Deploy) -> Price | None:
    """The spec's price (`usd_per_hour`, or an instance of the table); None when it gives none."""
    if deploy.instance is not None:
        row = INSTANCES[deploy.instance]
        return Price(row.usd_per_hour, row.vcpus, row.name, PRICES_SOURCE)
    if deploy.usd_per_hour is not None:
        return Price(deploy.usd_per_hour, deploy.vcpus, None, "deploy.usd_per_hour")
    return None


@dataclass(frozen=True)
class PlanCost:
    """One plan's measured throughput and what a request costs at it."""

    plan: str
    measured: str
    """Where the throughput was measured (fresh process / build process, side by side)."""
    batch: int
    rows_per_s: float
    vcpus: float
    """The vCPUs the measured session used."""
    usd_per_vcpu_second: float | None

    @property
    def vcpu_seconds_per_1000(self) -> float:
        return 1000.0 * self.vcpus / self.rows_per_s

    @property
    def usd_per_1000_requests(self) -> float | None:
        return None if self.usd_per_vcpu_second is None else self.vcpu_seconds_per_1000 * self.usd_per_vcpu_second

    @property
    def usd_per_million_rows(self) -> float | None:
        per_1000 = self.usd_per_1000_requests
        return None if per_1000 is None else per_1000 * 1000.0

    def to_dict(self) -> dict[str, Any]:
        return {"plan": self.plan, "measured": self.measured, "batch": self.batch, "rows_per_s": self.rows_per_s,
                "vcpus": self.vcpus, "vcpu_seconds_per_1000_requests": self.vcpu_seconds_per_1000,
                "usd_per_1000_requests": self.usd_per_1000_requests,
                "usd_per_1000000_rows": self.usd_per_million_rows}


@dataclass(frozen=True)
class CostEstimate:
    """The cost section: the price, the shipped plan's cost, and fp32's beside it (measured side by side)."""

    price: Price | None
    vcpus: float
    """The vCPUs the server's session used when measured (see the module's docstring)."""
    vcpus_why: str
    shipped: PlanCost | None
    compared: tuple[PlanCost, PlanCost] | None
    """(the shipped plan, fp32), measured side by side in the build process; None when fp32 was not timed."""
    note: str
    """What is compared, or why fp32 is missing."""
    on_target: bool

    @property
    def saving(self) -> float | None:
        """The share of fp32's cost per request the shipped plan saves (negative: it costs more)."""
        if self.compared is None:
            return None
        shipped, fp32 = self.compared
        return 1.0 - fp32.rows_per_s / shipped.rows_per_s

    def to_dict(self) -> dict[str, Any]:
        return {"price": None if self.price is None else self.price.to_dict(), "vcpus": self.vcpus,
                "vcpus_why": self.vcpus_why, "on_target": self.on_target,
                "shipped": None if self.shipped is None else self.shipped.to_dict(),
                "side_by_side": None if self.compared is None else [c.to_dict() for c in self.compared],
                "saving": self.saving, "note": self.note, "prices_as_of": PRICES_AS_OF}


def estimate(spec: Spec, target: str, serving: ServingConfig, latency: LatencyGate, chosen: Evaluation,
             evaluations: Sequence[Tried], *, lock_reused: bool = False) -> CostEstimate:
    """A build's cost figures, from its measurements: the latency gate's batches (`latency`), the candidates'
    throughput in the search (`evaluations`, `chosen`); `serving`: what ships; `lock_reused`: the plan came from
    the lock, and no candidate was timed beside another."""
    price = price_of(spec.deploy)
    instances = max(1, serving.instances)
    threads = spec.target.threads
    vcpus = max(1.0, (threads or usable_cpus()) / instances)
    why = (f"target.threads {threads}" if threads else f"the {usable_cpus()} CPUs the measuring process could use")
    why += f", split between {instances} instances" if instances > 1 else ""
    cuda = target == "cuda"
    per_second = None
    if price is not None:  # a cuda host is charged whole: its vCPUs are those "used"
        per_second = price.usd_per_hour / 3600.0 / (vcpus if cuda else (price.vcpus or vcpus))

    def plan_cost(plan: str, measured: str, batch: int, rows_per_s: float) -> PlanCost:
        return PlanCost(plan, measured, batch, rows_per_s, vcpus, per_second)

    point = next((b for b in latency.batches if b.batch == serving.max_batch_size and b.rows_per_s > 0), None)
    shipped = None if point is None else plan_cost(chosen.candidate.name, "fresh process (the latency gate)",
                                                   point.batch, point.rows_per_s)
    baseline = next((e.latency for e in evaluations
                     if isinstance(e, Evaluation) and e.candidate.baseline and e.latency is not None), None)
    compared = None
    timed = chosen.latency
    if timed is not None and baseline is not None:
        side = "build process, side by side"
        compared = (plan_cost(chosen.candidate.name, side, timed.batch_size, timed.throughput_rps),
                    plan_cost("fp32", side, baseline.batch_size, baseline.throughput_rps))
        note = ("the shipped plan is fp32: no quantization saving" if chosen.candidate.baseline else
                f"{chosen.candidate.name} against fp32, both measured in the build process at batch "
                f"{timed.batch_size}, one after the other in the candidate search")
    elif chosen.candidate.baseline:
        note = "the shipped plan is fp32: no quantization saving"
    elif timed is None or lock_reused:
        note = ("fp32 not compared: the build reused its lock and timed no candidate side by side "
                "(`infc build --relock` measures them)")
    else:
        note = (f"fp32 not compared: the plan has no fp32 candidate (optimize.quantize "
                f"{spec.optimize.quantize}; `auto` measures fp32 beside the others)")
    return CostEstimate(price, vcpus, why, shipped, compared, note, latency.on_target)


def usd(x: float | None) -> str:
    """A small amount of dollars, three significant digits, plainly written."""
    if x is None:
        return "-"
    if x == 0 or x >= 0.001:
        return f"{x:.3g}" if x < 1000 else f"{x:,.0f}"
    return f"{x:.2e}"
