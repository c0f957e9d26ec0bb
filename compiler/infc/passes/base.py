"""The pass contract: a named unit that takes a model and returns a model plus a record.

A pass never mutates its input. `run_passes` runs a list of them in order and
wraps any failure into one `PassError` that names the failing pass and the
passes that ran before it. Each pass also says, in one line, what its record
means (`summary`, shown in report.md); `unchanged`, `fused` and `ops_change`
are the lines several passes share.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import onnx

from ..errors import InfcError, PassError

__all__ = ["PassContext", "PassResult", "Pass", "op_counts", "run_passes", "PASSES", "register", "summary",
           "unchanged", "fused", "ops_change"]

Feeds = list[dict[str, Any]]


@dataclass(frozen=True)
class PassContext:
    """What a pass may need besides the model: a scratch folder, calibration feeds, the target."""

    workdir: Path
    target: str = "x86"
    calibration: Callable[[], Iterator[dict[str, Any]]] | None = None
    """Yields model-input feeds (after pre-processing), one small batch at a time."""


@dataclass(frozen=True)
class PassResult:
    """A pass's output: the model, whether it changed, and what it did."""

    model: onnx.ModelProto
    modified: bool
    record: Mapping[str, Any] = field(default_factory=dict)


class Pass(Protocol):
    """A graph pass: `name`, `call(model, ctx) -> PassResult`, and `summary(record)`: one line saying
    what a record of this pass (as `run_passes` returns it) means, for people."""

    name: str

    def call(self, model: onnx.ModelProto, ctx: PassContext) -> PassResult: ...

    @staticmethod
    def summary(record: Mapping[str, Any]) -> str: ...


PASSES: dict[str, type[Pass]] = {}

P = TypeVar("P", bound=type[Pass])


def register(factory: P) -> P:
    """Register a pass class under its `name` (a duplicate, or one without a summary, is rejected now)."""
    name = getattr(factory, "name", None)
    if not isinstance(name, str) or not name:
        raise ValueError(f"pass {factory!r} has no name")
    if name in PASSES:
        raise ValueError(f"pass {name!r} is registered twice")
    if not callable(getattr(factory, "summary", None)):
        raise ValueError(f"pass {name!r} has no summary(record)")
    PASSES[name] = factory
    return factory


def summary(record: Mapping[str, Any]) -> str:
    """What a pass did, in one line, said by the pass that wrote the record."""
    return PASSES[record["pass"]].summary(record)


def unchanged(record: Mapping[str, Any]) -> str | None:
    """The line of a pass that skipped, or changed nothing and said why; None otherwise."""
    if record.get("skipped"):
        return f"skipped: {record['skipped']}"
    if record.get("reason") and not record.get("modified"):
        return f"no change: {record['reason']}"
    return None


def fused(record: Mapping[str, Any]) -> str | None:
    """The patterns a fusion pass fused, with their counts; None when it fused none."""
    if not record.get("fused"):
        return None
    return "fused: " + ", ".join(f"{k} x{v}" for k, v in record["fused"].items())


def ops_change(record: Mapping[str, Any]) -> str:
    """The op types a pass removed and added, at its `level`."""
    before, after = record.get("ops_before", {}), record.get("ops_after", {})
    gone = [k for k, v in before.items() if after.get(k, 0) < v]
    new = [k for k, v in after.items() if before.get(k, 0) < v]
    if not gone and not new:
        return f"level {record.get('level')}: no change"
    return f"level {record.get('level')}: removed {', '.join(gone) or '-'}; added {', '.join(new) or '-'}"


def op_counts(model: onnx.ModelProto) -> dict[str, int]:
    """Node count per op type (domain-qualified for non-default domains), sorted."""
    counts = Counter(f"{n.domain}.{n.op_type}" if n.domain not in ("", "ai.onnx") else n.op_type
                     for n in model.graph.node)
    return dict(sorted(counts.items()))


def run_passes(model: onnx.ModelProto, steps: Sequence[tuple[str, Mapping[str, Any]]],
               ctx: PassContext) -> tuple[onnx.ModelProto, list[dict[str, Any]]]:
    """Run the named passes in order; returns the final model and one record per pass."""
    records: list[dict[str, Any]] = []
    ran: list[str] = []
    for name, params in steps:
        try:
            result = PASSES[name](**params).call(model, ctx)
        except InfcError:
            raise
        except Exception as exc:
            raise PassError(name, ran, f"{type(exc).__name__}: {exc}") from exc
        records.append({"pass": name, "params": dict(params), "modified": result.modified,
                        "nodes_before": len(model.graph.node), "nodes_after": len(result.model.graph.node),
                        **result.record})
        model = result.model
        ran.append(name)
    return model, records
