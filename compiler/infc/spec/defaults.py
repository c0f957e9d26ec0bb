"""Defaults, applied here and nowhere else: validated spec data in its one canonical form,
and the typed `Spec` made of it."""

from __future__ import annotations

import copy
import dataclasses
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any

from infc_runtime.types import CacheConfig, ServingConfig, TensorSpec

from ..isa import DEFAULT_ISA
from ..kernels import registry
from . import budgets
from .model import AccuracyBudget, Budget, Deploy, LatencyBudget, Monitor, Optimize, Spec, Step, Target
from .schema import STEP_SECTIONS, schema
from .yaml import KeyPath, Mark

__all__ = ["canonical", "resolve", "steps", "to_spec"]


def canonical(value: Any, sub: Mapping[str, Any]) -> Any:
    """`value` with the schema's defaults filled in, keys in the schema's order and
    integers as ints (JSON Schema counts 3.0 as an integer)."""
    if sub.get("type") == "integer" and isinstance(value, float):
        return int(value)
    if isinstance(value, list) and "items" in sub:
        return [canonical(item, sub["items"]) for item in value]
    if not isinstance(value, dict) or "properties" not in sub:
        return value
    out = {}
    for key, prop in sub["properties"].items():
        if key in value:
            out[key] = canonical(value[key], prop)
        elif "default" in prop:
            out[key] = canonical(copy.deepcopy(prop["default"]), prop)
    return out


def resolve(raw: dict[str, Any]) -> dict[str, Any]:
    """Validated spec data in its one canonical form: defaults applied, long forms only."""
    data: dict[str, Any] = canonical(copy.deepcopy(raw), schema())
    target = {"hardware": data["target"]} if isinstance(data["target"], str) else data["target"]
    hardware = target["hardware"]
    data["target"] = {"hardware": hardware, **({"threads": int(target["threads"])} if "threads" in target else {})}
    if hardware == "cuda":
        data["target"]["fp16"] = bool(target.get("fp16", True))
    else:
        data["target"]["isa"] = target.get("isa", DEFAULT_ISA[hardware])
    if "accuracy" in data["budget"]:
        data["budget"]["accuracy"] = budgets.resolve(data["budget"]["accuracy"])
    for section in STEP_SECTIONS:
        data[section] = _canonical_steps(data[section])
    data["serving"] = _serving_config(data["serving"]).to_dict()
    return data


def _canonical_steps(items: list[Any]) -> list[dict[str, Any]]:
    """A validated step list in its long form, each step's parameter defaults applied."""
    return [{item: {}} if isinstance(item, str)
            else {k: canonical(v or {}, registry.params_schema(k)) for k, v in item.items()}
            for item in items]


def steps(file: Path, items: list[Any], section: str) -> tuple[Step, ...]:
    """The steps of a validated step list; file parameters made absolute (`data` keeps them as written)."""
    def with_paths(name: str, params: dict[str, Any]) -> dict[str, Any]:
        files = registry.get(name).files
        return {k: str(Path(os.path.abspath(file.parent / v))) if k in files else v for k, v in params.items()}

    return tuple(Step(name, MappingProxyType(with_paths(name, params)), (section, i))
                 for i, item in enumerate(_canonical_steps(items)) for name, params in item.items())


def _serving_config(s: dict[str, Any]) -> ServingConfig:
    """The `serving` section with each value in its field's type (YAML's 2 for 2.0 and the like)."""
    kinds: dict[str, Any] = {f.name: type(f.default) for f in dataclasses.fields(ServingConfig) if f.name != "cache"}
    cache = CacheConfig.from_dict(s["cache"]) if isinstance(s.get("cache"), dict) else None
    return ServingConfig(**{k: kinds[k](v) for k, v in s.items() if k in kinds}, cache=cache)


def _deploy(d: dict[str, Any]) -> Deploy:
    replicas = d["replicas"]
    price = d.get("usd_per_hour")
    return Deploy(bool(d["wheelhouse"]), d.get("base_image"), d.get("image"), int(replicas["min"]),
                  int(replicas["max"]), int(d["cpu_percent"]), str(d["memory"]),
                  None if price is None else float(price), None if d.get("vcpus") is None else int(d["vcpus"]),
                  d.get("instance"))


def _monitor(m: dict[str, Any]) -> Monitor:
    inputs = m.get("inputs")
    return Monitor(bool(m["enabled"]), None if inputs is None else tuple(inputs), int(m["window"]),
                   float(m["sample_rate"]), int(m["bins"]), float(m["psi_warn"]), float(m["psi_alert"]))


def to_spec(file: Path, data: dict[str, Any], marks: dict[KeyPath, Mark],
           inputs: Sequence[TensorSpec], raw: dict[str, Any]) -> Spec:
    """The `Spec` of resolved `data` (`raw`: as written, for the paths of budgets and the pinned serving keys)."""

    def path(value: str | None) -> Path | None:
        return None if value is None else Path(os.path.abspath(file.parent / value))

    def number(value: Any) -> float | None:
        return None if value is None else float(value)

    order = list(schema()["properties"])
    data = {key: data[key] for key in order if key in data}
    budget, opt = data["budget"], data["optimize"]
    latency = budget.get("latency_ms")
    paths = [w.path for w in budgets.written(raw["budget"].get("accuracy"))] if "budget" in raw else []
    accuracy = tuple(
        AccuracyBudget(b["metric"], number(b.get("min")), number(b.get("max")),
                       MappingProxyType({k: v for k, v in b.items() if k not in ("metric", "min", "max")}), path)
        for b, path in zip(budget.get("accuracy", []), paths, strict=True))
    target = data["target"]
    return Spec(
        file=file,
        name=data["name"],
        version=data["version"],
        model=Path(os.path.abspath(file.parent / data["model"])),
        target=Target(target["hardware"], target.get("threads"), target.get("isa"), target.get("fp16", False)),
        inputs=tuple(inputs),
        budget=Budget(
            LatencyBudget(*(number(latency.get(p)) for p in ("p50", "p95", "p99"))) if latency else None,
            accuracy,
        ),
        optimize=Optimize(opt["quantize"], opt["fuse"], path(opt.get("calibration")),
                          path(opt.get("validation"))),
        preprocess=steps(file, data["preprocess"], "preprocess"),
        postprocess=steps(file, data["postprocess"], "postprocess"),
        serving=ServingConfig.from_dict(data["serving"]),
        deploy=_deploy(data["deploy"]),
        data=data,
        marks=MappingProxyType(marks),
        serving_pinned=frozenset(raw["serving"]) if isinstance(raw.get("serving"), dict) else frozenset(),
        monitor=_monitor(data["monitor"]),
    )
