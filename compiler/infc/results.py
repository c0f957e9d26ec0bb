"""Machine-readable results: the one JSON document `--json` prints for build, validate, plan and diff.

Each document has `command`, `ok`, `exit_code` and `errors`; the rest depends
on the command. The JSON Schema of all four ships as `results.schema.json`
(`infc schema --results` prints it) and the tests validate real outputs
against it. Computing a document is separate from printing it.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from functools import cache
from importlib.resources import files
from typing import TYPE_CHECKING, Any

from . import __version__
from .annotations import error_dict
from .errors import InfcError, SpecError, SpecErrors
from .report import headline

if TYPE_CHECKING:
    from pathlib import Path

    from .diff import Row, Side
    from .outcome import BuildOutcome
    from .plan import Plan

__all__ = ["results_schema", "error_records", "build_document", "validate_document", "plan_document",
           "diff_document"]


@cache
def results_schema() -> dict[str, Any]:
    """The JSON Schema of every `--json` document."""
    loaded: dict[str, Any] = json.loads(files("infc").joinpath("results.schema.json").read_text())
    return loaded


def error_records(exc: BaseException | None) -> list[dict[str, Any]]:
    """An error as JSON records: every located spec error, else one message."""
    if exc is None:
        return []
    if isinstance(exc, SpecErrors):
        return [error_dict(e) for e in exc.errors]
    if isinstance(exc, SpecError):
        return [error_dict(exc)]
    return [{"message": str(exc)}]


def _exit_code(exc: BaseException | None) -> int:
    if exc is None:
        return 0
    return exc.exit_code if isinstance(exc, InfcError) else 1


def _budgets(result: BuildOutcome) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [
        {"kind": "accuracy", "name": a.name, "value": a.value, "bound": a.bound, "op": a.op,
         "verdict": "pass" if a.passed else "fail", "enforced": True}
        for a in result.accuracy if a.bound is not None]
    lat = result.latency
    for p in lat.percentiles:
        if p.bound_ms is not None:
            d = p.to_dict()
            out.append({"kind": "latency", "name": p.name, "value": p.value_ms, "bound": p.bound_ms, "op": "<=",
                        "verdict": p.verdict, "interval": [d["low_ms"], d["high_ms"]], "unit": "ms",
                        "enforced": lat.on_target and lat.mode != "off"})
    return out


def build_document(spec: Path, result: BuildOutcome | None, exc: BaseException | None) -> dict[str, Any]:
    """`infc build --json`: what was built (or why not) and every budget with its verdict."""
    code = _exit_code(exc)
    doc: dict[str, Any] = {"command": "build", "infc_version": __version__, "spec": str(spec), "ok": code == 0,
                           "exit_code": code, "errors": error_records(exc), "warnings": [], "bundle": None,
                           "headline": None, "plan": None, "serving": None, "budgets": [], "accuracy": [],
                           "latency": None, "lock": None, "cost": None}
    if result is None:
        return doc
    b = result.bundle
    doc.update({
        "headline": headline(result.chosen.accurate, result.latency, result.plan),
        "warnings": result.warnings,
        "bundle": {"path": str(result.path) if result.path else None, "content_hash": b.content_hash,
                   "size_bytes": b.size(), "model_bytes": len(b.files["model.onnx"]), "files": len(b.all_files()),
                   "wheels_bytes": sum(len(d) for p, d in b.files.items() if p.startswith("wheels/")),
                   "archive": str(result.archive) if result.archive else None,
                   "archive_bytes": result.archive.stat().st_size if result.archive else None},
        "plan": {"target": result.plan.target, "isa": result.plan.isa, "provider": result.plan.provider,
                 "host_matches_target": result.plan.host_matches_target, "chosen": result.chosen.candidate.name,
                 "candidates": [{"name": e.candidate.name, "verdict": result.choice.verdict(e)}
                                for e in result.evaluations],
                 "passes": [{"name": n, "params": p} for n, p in result.chosen.candidate.passes]},
        "serving": result.serving.to_dict(),
        "budgets": _budgets(result),
        "accuracy": [{k: v for k, v in asdict(a).items() if k != "details"} | {"name": a.name}
                     for a in result.accuracy],
        "latency": result.latency.to_dict(),
        "lock": result.lock.to_dict(),
        "cost": result.cost.to_dict(),
    })
    return _finite(doc)


def validate_document(outcomes: list[tuple[Path, BaseException | None]]) -> dict[str, Any]:
    """`infc validate --json`: each spec, ok or with its located errors."""
    specs = [{"file": str(path), "ok": exc is None, "errors": error_records(exc)} for path, exc in outcomes]
    code = max((_exit_code(exc) for _, exc in outcomes), default=0)
    return {"command": "validate", "infc_version": __version__, "ok": code == 0, "exit_code": code,
            "specs": specs, "errors": [e for path, exc in outcomes for e in error_records(exc)]}


def plan_document(plan: Plan, batching: dict[str, Any]) -> dict[str, Any]:
    """`infc plan --json`: the plan as the manifest records it, plus how batching will be set."""
    return {"command": "plan", "infc_version": __version__, "ok": True, "exit_code": 0, "errors": [],
            **plan.to_dict(), "batching": batching}


def diff_document(old: Side, new: Side, rows: list[Row]) -> dict[str, Any]:
    """`infc diff --json`: both sides and every row with its change."""
    return _finite({"command": "diff", "infc_version": __version__, "ok": True, "exit_code": 0, "errors": [],
                    "old": old.to_dict(), "new": new.to_dict(), "rows": [r.to_dict() for r in rows]})


def _finite(value: Any) -> Any:
    """JSON has no NaN or infinity: they become null (a NaN accuracy is a failed budget, said by `verdict`)."""
    if isinstance(value, float):
        return value if value == value and value not in (float("inf"), float("-inf")) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value
