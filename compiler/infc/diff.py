"""`infc diff OLD NEW`: what changed between two builds, as a markdown table for a pull request.

OLD and NEW are each a bundle directory, a lock file, or a spec (which is
built first, reusing its lock and the build cache: `infc.build_cache`). Each
is read into a `Side`: spec data, model hash, optimized ops by type,
quantized/fused/excluded nodes, sizes, accuracy and latency against their
budgets, batching. `compare` lines them up into rows; a row that changed is
marked `better`, `worse` or `neutral`:

- accuracy: higher is better for a `min` budget, lower for a `max` one;
- latency: better/worse only when the two confidence intervals do not
  overlap (otherwise `neutral`: within the measurement's noise);
- sizes: better/worse past a 1 % change; everything else `neutral`.

Bundles (schema 1.2 on) also show their provenance: the spec's, the source
model's and the lock's sha256, the infc version and the build host (system,
machine, ISA), so a changed build machine or compiler shows in the review.

A lock file knows less than a bundle (no optimized model, latency only as
the search's p50): what a side does not know shows as `-`.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx

from infc_runtime.abi import Manifest, ManifestError

from .bounded import TooLarge, read_bounded
from .errors import InfcError
from .lock import read_lock, spec_changes
from .spec.yaml import parse

__all__ = ["DiffError", "Row", "Side", "compare", "load_side", "side_from_bundle", "render_markdown"]

_MAX_JSON = 64 << 20  # a manifest this large is not ours
_MAX_SPEC = 4 << 20  # a bundle's spec.yaml is the resolved form of a spec of at most 1 MiB
_MAX_MODEL = 2 << 30  # protobuf's own limit: a bigger model.onnx cannot be parsed
_SERVING_KEYS = ("serving.max_batch_size", "serving.max_queue_delay_ms")


class DiffError(InfcError):
    """A side of the diff cannot be read (exit 2)."""

    exit_code = 2


@dataclass
class Side:
    """What one build says about itself; None: this kind of input does not record it."""

    label: str
    kind: str  # bundle | lock | spec
    spec: dict[str, Any]
    model_sha256: str | None = None
    content_hash: str | None = None
    chosen: str | None = None
    ops: dict[str, int] | None = None
    quantized: dict[str, int] | None = None
    fused: dict[str, int] | None = None
    excluded: list[str] | None = None
    bundle_bytes: int | None = None
    model_bytes: int | None = None
    accuracy: list[dict[str, Any]] = field(default_factory=list)
    latency: dict[str, dict[str, Any]] = field(default_factory=dict)
    serving: dict[str, Any] = field(default_factory=dict)
    passed: bool | None = None
    provenance: dict[str, Any] | None = None
    """The manifest's `provenance` (what and who built it); None for a lock or a bundle older than schema 1.2."""
    cost: dict[str, Any] | None = None
    """The manifest's `measurements.cost` (`infc.cost`); None for a lock or a bundle built before it."""

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if k != "spec"}


@dataclass(frozen=True)
class Row:
    section: str
    item: str
    old: str
    new: str
    change: str  # same | better | worse | neutral

    def to_dict(self) -> dict[str, str]:
        return vars(self).copy()


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(read_bounded(path, _MAX_JSON))
    except TooLarge:
        raise DiffError(f"{path}: larger than {_MAX_JSON >> 20} MiB") from None
    except (OSError, ValueError, RecursionError) as e:
        raise DiffError(f"{path}: cannot read it ({e})") from None
    if not isinstance(data, dict):
        raise DiffError(f"{path}: not a JSON object")
    return data


def _records(passes: Sequence[Mapping[str, Any]]) -> tuple[dict[str, int], dict[str, int], list[str]]:
    quantized: Counter[str] = Counter()
    fused: Counter[str] = Counter()
    excluded: list[str] = []
    for r in passes:
        quantized.update(r.get("quantized_ops") or {})
        fused.update(r.get("fused") or {})
        excluded += list(r.get("excluded") or [])
    return dict(quantized), dict(fused), excluded


def side_from_bundle(label: str, manifest: Manifest, spec_text: bytes | None, model: bytes | None,
                     size: int | None, kind: str = "bundle") -> Side:
    """A side from a bundle's manifest, spec.yaml and model bytes (a directory, or an in-memory build)."""
    spec = parse(spec_text).data if spec_text else {}  # the spec reader's limits: no alias bombs, no deep nesting
    results = manifest.measurements.get("results", {})
    quantized, fused, excluded = _records(manifest.passes)
    ops = None
    if model is not None:
        graph = onnx.load_from_string(model).graph
        ops = dict(sorted(Counter(n.op_type for n in graph.node).items()))
    latency = {p["name"]: p for p in results.get("latency", {}).get("percentiles", [])}
    return Side(label, kind, spec if isinstance(spec, dict) else {},
                model_sha256=manifest.files.get("model.onnx"), content_hash=manifest.content_hash or None,
                chosen=manifest.choice.candidate if manifest.choice else (manifest.plan or {}).get("chosen"),
                ops=ops, quantized=quantized, fused=fused, excluded=excluded, bundle_bytes=size,
                model_bytes=len(model) if model is not None else None,
                accuracy=[{k: a.get(k) for k in ("metric", "params", "value", "bound", "op", "passed")}
                          for a in results.get("accuracy", [])],
                latency=latency, serving={"max_batch_size": manifest.serving.max_batch_size,
                                          "max_queue_delay_ms": manifest.serving.max_queue_delay_ms},
                passed=results.get("passed"),
                provenance=dict(manifest.provenance) if isinstance(manifest.provenance, Mapping) else None,
                cost=_cost(manifest.measurements.get("cost")))


def _cost(value: Any) -> dict[str, Any] | None:
    return dict(value) if isinstance(value, Mapping) else None


def _from_directory(path: Path) -> Side:
    try:
        manifest = Manifest.from_dict(_read_json(path / "manifest.json"))
    except ManifestError as e:
        raise DiffError(f"{path}/manifest.json: {e}") from None
    spec = path / "spec.yaml"
    named = manifest.model.path
    model = (path / named).resolve()
    if Path(named).is_absolute() or path.resolve() not in model.parents:
        raise DiffError(f"{path}/manifest.json: model.path {named!r} is not inside the bundle")
    size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return side_from_bundle(str(path), manifest, _read_bytes(spec, _MAX_SPEC), _read_bytes(model, _MAX_MODEL), size)


def _read_bytes(path: Path, limit: int) -> bytes | None:
    """The file's bytes (None when there is no such file), never more than `limit` + 1 of them read."""
    if not path.is_file():
        return None
    try:
        return read_bounded(path, limit)
    except TooLarge:
        raise DiffError(f"{path}: larger than {limit >> 20} MiB") from None
    except OSError as e:
        raise DiffError(f"{path}: cannot read it ({e})") from None


def _from_lock(path: Path) -> Side:
    lock = read_lock(path)
    evidence = lock.evidence
    chosen: dict[str, Any] = next((c for c in evidence.get("candidates", [])
                                   if c.get("name") == lock.choices.candidate), {})
    accuracy = [{"metric": name, "value": value, "bound": None, "op": None, "passed": None}
                for name, value in chosen.get("accuracy", {}).items()]
    latency = {"p50": {"name": "p50", "value_ms": chosen["p50_ms"], "low_ms": None, "high_ms": None,
                       "bound_ms": None, "verdict": None}} if chosen.get("p50_ms") is not None else {}
    return Side(str(path), "lock", dict(lock.inputs.spec), model_sha256=None, chosen=lock.choices.candidate,
                excluded=list(lock.choices.exclude), accuracy=accuracy, latency=latency,
                serving=dict(lock.choices.serving))


def load_side(path: Path, build_spec: Any = None) -> Side:
    """Read one side: a bundle directory, a `.lock` file, or a spec (built with `build_spec(path) -> Side`)."""
    if path.is_dir():
        if not (path / "manifest.json").is_file():
            raise DiffError(f"{path}: a directory without manifest.json is not a bundle")
        return _from_directory(path)
    if not path.is_file():
        raise DiffError(f"{path}: no such file or directory")
    if path.suffix == ".lock":
        return _from_lock(path)
    if path.suffix in (".yaml", ".yml"):
        if build_spec is None:
            raise DiffError(f"{path}: a spec needs building first")
        side: Side = build_spec(path)
        return side
    raise DiffError(f"{path}: expected a bundle directory, a .lock file or a .yaml spec")


# ---------------------------------------------------------------- comparing


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    return f"{n / 1e6:.2f} MB" if n >= 1e6 else f"{n / 1e3:.1f} kB"


def _by_size(old: int | None, new: int | None) -> str:
    if old is None or new is None or old == new:
        return "same" if old == new else "neutral"
    if abs(new - old) <= 0.01 * old:
        return "neutral"
    return "better" if new < old else "worse"


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list | dict):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def _accuracy_rows(old: Side, new: Side) -> list[Row]:
    def key(a: dict[str, Any]) -> str:
        params = a.get("params") or {}
        shown = ", ".join(f"{k}={v}" for k, v in sorted(params.items()))
        return f"{a['metric']}({shown})" if shown else str(a["metric"])

    a_map, b_map = {key(a): a for a in old.accuracy}, {key(a): a for a in new.accuracy}
    rows = []
    for name in list(dict.fromkeys([*a_map, *b_map])):
        a, b = a_map.get(name, {}), b_map.get(name, {})
        bound = b.get("bound") if b.get("bound") is not None else a.get("bound")
        op = b.get("op") or a.get("op") or ">="
        label = f"{name} (budget {op} {bound:g})" if bound is not None else name

        def show(x: dict[str, Any]) -> str:
            if x.get("value") is None:
                return "-"
            passed = x.get("passed")
            verdict = "" if passed is None else " pass" if passed else " **MISS**"
            return f"{x['value']:.4f}{verdict}"

        va, vb = a.get("value"), b.get("value")
        if va is None or vb is None:
            change = "neutral" if va != vb else "same"
        elif va == vb:
            change = "same"
        else:
            change = "better" if (vb > va) == (op == ">=") else "worse"
        rows.append(Row("accuracy", label, show(a), show(b), change))
    return rows


def _ms(x: float | None, unbounded: str) -> str:
    return unbounded if x is None else f"{x:.3f}"


def _latency_rows(old: Side, new: Side) -> list[Row]:
    rows = []
    for q in ("p50", "p95", "p99"):
        a, b = old.latency.get(q), new.latency.get(q)
        if a is None and b is None:
            continue
        bound = (b or {}).get("bound_ms") or (a or {}).get("bound_ms")

        def show(x: dict[str, Any] | None) -> str:
            if x is None:
                return "-"
            low, high = x.get("low_ms"), x.get("high_ms")
            interval = (f" [{_ms(low, '-inf')}, {_ms(high, '+inf')}]"
                        if x.get("verdict") is not None or low is not None else "")
            verdict = f" {x['verdict']}" if x.get("verdict") else ""
            return f"{x['value_ms']:.3f} ms{interval}{verdict}"

        change = "neutral"
        if a is not None and b is not None:
            if a["value_ms"] == b["value_ms"]:
                change = "same"
            elif None not in (a.get("low_ms"), a.get("high_ms"), b.get("low_ms"), b.get("high_ms")):
                if b["high_ms"] < a["low_ms"]:
                    change = "better"
                elif b["low_ms"] > a["high_ms"]:
                    change = "worse"
        label = f"{q}" + (f" (budget {bound:g} ms)" if bound is not None else "")
        rows.append(Row("latency", label, show(a), show(b), change))
    return rows


def compare(old: Side, new: Side) -> list[Row]:
    """Every row of the diff, in the order a reviewer reads them."""
    # the batching a bundle's spec.yaml shows is the build's choice: compared once, under serving
    rows = [Row("spec", f"`{k}`", _fmt(a), _fmt(b), "neutral") for k, a, b in spec_changes(old.spec, new.spec)
            if k not in _SERVING_KEYS]

    def row(section: str, item: str, a: Any, b: Any, change: str | None = None) -> None:
        sa, sb = _fmt(a), _fmt(b)
        rows.append(Row(section, item, sa, sb, "same" if sa == sb else (change or "neutral")))

    row("model", "optimized model sha256", (old.model_sha256 or "")[:12] or None,
        (new.model_sha256 or "")[:12] or None)
    row("model", "chosen plan", old.chosen, new.chosen)
    for op in sorted(set(old.ops or {}) | set(new.ops or {})):
        row("model", f"ops: {op}", (old.ops or {}).get(op, 0) if old.ops is not None else None,
            (new.ops or {}).get(op, 0) if new.ops is not None else None)
    row("model", "quantization ops",
        sum(old.quantized.values()) if old.quantized is not None else None,
        sum(new.quantized.values()) if new.quantized is not None else None)
    row("model", "fused patterns", old.fused, new.fused)
    row("model", "kept in fp32", ", ".join(old.excluded) if old.excluded else None,
        ", ".join(new.excluded) if new.excluded else None)
    rows.append(Row("size", "bundle", _size(old.bundle_bytes), _size(new.bundle_bytes),
                    _by_size(old.bundle_bytes, new.bundle_bytes)))
    rows.append(Row("size", "model", _size(old.model_bytes), _size(new.model_bytes),
                    _by_size(old.model_bytes, new.model_bytes)))
    rows += _accuracy_rows(old, new)
    rows += _latency_rows(old, new)
    for key in ("max_batch_size", "max_queue_delay_ms"):
        row("serving", f"`{key}`", old.serving.get(key), new.serving.get(key))
    rows += _cost_rows(old.cost, new.cost)
    for item, (a, b) in _provenance(old.provenance, new.provenance).items():
        row("provenance", item, a, b)
    return rows


def _cost_rows(old: Mapping[str, Any] | None, new: Mapping[str, Any] | None) -> list[Row]:
    """The shipped plan's cost per 1,000 requests (USD, and vCPU-seconds) and throughput; better or worse past a
    10% change (throughput is measured without an interval: smaller changes are noise as often as not)."""
    if old is None and new is None:
        return []

    def shipped(side: Mapping[str, Any] | None, key: str) -> float | None:
        plan = None if side is None else side.get("shipped")
        value = plan.get(key) if isinstance(plan, Mapping) else None
        return float(value) if isinstance(value, int | float) else None

    def price(side: Mapping[str, Any] | None) -> str | None:
        p = None if side is None else side.get("price")
        if not isinstance(p, Mapping):
            return "none" if side is not None else None
        return f"{p.get('instance') or 'USD'} {p.get('usd_per_hour')}/h"

    rows = []
    for item, key, lower in (("USD per 1,000 requests", "usd_per_1000_requests", True),
                             ("vCPU-s per 1,000 requests", "vcpu_seconds_per_1000_requests", True),
                             ("rows/s at max_batch_size", "rows_per_s", False)):
        a, b = shipped(old, key), shipped(new, key)
        if a is None and b is None:
            continue
        change = "neutral" if a != b else "same"
        if a is not None and b is not None and a > 0 and abs(b - a) > 0.1 * a:
            change = "better" if (b < a) == lower else "worse"
        rows.append(Row("cost", item, _fmt(a), _fmt(b), change))
    a_price, b_price = price(old), price(new)
    rows.append(Row("cost", "price", _fmt(a_price), _fmt(b_price), "same" if a_price == b_price else "neutral"))
    saving = [None if s is None or s.get("saving") is None else f"{s['saving']:.0%}" for s in (old, new)]
    rows.append(Row("cost", "saving against fp32", _fmt(saving[0]), _fmt(saving[1]),
                    "same" if saving[0] == saving[1] else "neutral"))
    return rows


_HASHES = (("spec sha256", "spec_sha256"), ("source model sha256", "model_sha256"), ("lock sha256", "lock_sha256"))


def _provenance(old: Mapping[str, Any] | None, new: Mapping[str, Any] | None) -> dict[str, tuple[Any, Any]]:
    """Provenance item -> (old, new) as shown: hashes cut to 12 digits, the build host as `system machine (isa)`;
    nothing when neither side records provenance (two locks, or bundles before schema 1.2)."""
    if old is None and new is None:
        return {}

    def hash_of(side: Mapping[str, Any] | None, key: str) -> str | None:
        value = None if side is None else side.get(key)
        return value[:12] if isinstance(value, str) else ("none" if side is not None else None)

    def host(side: Mapping[str, Any] | None) -> str | None:
        h = None if side is None else side.get("build_host")
        if not isinstance(h, Mapping):
            return None
        return f"{h.get('system', '?')} {h.get('machine', '?')} ({h.get('isa', '?')})"

    items = {label: (hash_of(old, key), hash_of(new, key)) for label, key in _HASHES}
    items["infc version"] = (None if old is None else old.get("infc_version"),
                             None if new is None else new.get("infc_version"))
    items["build host"] = (host(old), host(new))
    return items


_MARK = {"better": "better", "worse": "**worse**", "neutral": "changed", "same": ""}


def render_markdown(old: Side, new: Side, rows: list[Row], *, all_rows: bool = False) -> str:
    """The table for a pull request: changed rows (all with `all_rows`), then a one-line tally."""
    shown = [r for r in rows if all_rows or r.change != "same"]
    tally = Counter(r.change for r in rows)
    name = new.spec.get("name") or old.spec.get("name") or "bundle"
    lines = [f"### infc diff: {name}", "",
             f"`{old.label}` -> `{new.label}`: {tally['better']} better, {tally['worse']} worse, "
             f"{tally['neutral']} changed, {tally['same']} unchanged.", ""]
    if not shown:
        return "\n".join([*lines, "No differences."]) + "\n"
    lines += ["| | | old | new | |", "|---|---|---|---|---|"]
    for r in shown:
        lines.append(f"| {r.section} | {r.item} | {r.old} | {r.new} | {_MARK[r.change]} |")
    return "\n".join(lines) + "\n"
