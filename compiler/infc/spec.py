"""The spec: one YAML file naming a model, its target, budgets and pre/post steps.

`load_spec` is the only reader of spec files. It either returns a typed,
immutable `Spec` (defaults applied, paths absolute, request inputs known) or
raises `SpecErrors` listing every problem it found, each located as
`file:line:col key.path: message`. Later stages locate their own findings with
`Spec.error(path, message)`; nothing downstream re-reads YAML.
"""

from __future__ import annotations

import copy
import itertools
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from infc_runtime.types import ServingConfig, TensorSpec

from .errors import PathPart, SpecError, SpecErrors
from .kernels import registry
from .kernels.signature import check_pipeline
from .spec_files import check_arrays, compare_inputs, load_model, model_inputs, shown
from .spec_schema import STEP_SECTIONS, schema
from .spec_validate import Finding, validate
from .spec_yaml import KeyPath, Mark, parse

__all__ = [
    "Target", "LatencyBudget", "AccuracyBudget", "Budget", "Optimize", "Step", "Spec",
    "schema", "load_spec",
]


@dataclass(frozen=True)
class Target:
    """Where the bundle runs: `x86`, `arm` or `cuda`; `threads` None lets the plan choose."""

    hardware: str
    threads: int | None = None


@dataclass(frozen=True)
class LatencyBudget:
    """Latency percentiles at batch 1 that the build must meet, in ms (None: not budgeted)."""

    p50: float | None = None
    p95: float | None = None
    p99: float | None = None


@dataclass(frozen=True)
class AccuracyBudget:
    """`metric` of the optimized model against the original must stay >= `min` (or <= `max`)."""

    metric: str
    min: float | None = None
    max: float | None = None


@dataclass(frozen=True)
class Budget:
    """What the build must meet; a missing part is not checked."""

    latency_ms: LatencyBudget | None = None
    accuracy: AccuracyBudget | None = None


@dataclass(frozen=True)
class Optimize:
    """Graph optimizations to try, and the data they need (absolute paths)."""

    quantize: str = "none"
    fuse: bool = True
    calibration: Path | None = None
    validation: Path | None = None


@dataclass(frozen=True)
class Step:
    """One pre/post step: its registry name, its parameters, and where the spec wrote it."""

    name: str
    params: Mapping[str, Any]
    path: tuple[PathPart, ...]


@dataclass(frozen=True)
class Spec:
    """A loaded spec: typed fields, plus `data` (the resolved spec as plain data, defaults
    applied; written into bundles as spec.yaml) and `marks` (key path -> line, col)."""

    file: Path
    name: str
    version: str
    model: Path
    target: Target
    inputs: tuple[TensorSpec, ...]
    budget: Budget
    optimize: Optimize
    preprocess: tuple[Step, ...]
    postprocess: tuple[Step, ...]
    serving: ServingConfig
    data: Mapping[str, Any]
    marks: Mapping[KeyPath, Mark]

    def error(self, path: Sequence[PathPart], message: str) -> SpecError:
        """A `SpecError` about `path`, located where the nearest written part of it is."""
        line, col = _nearest(self.marks, tuple(path))
        return SpecError(shown(self.file), line, col, tuple(path), message)


def _nearest(marks: Mapping[KeyPath, Mark], path: KeyPath) -> Mark:
    for n in range(len(path), -1, -1):
        if path[:n] in marks:
            return marks[path[:n]]
    return (1, 1)


def load_spec(path: str | Path) -> Spec:
    """Read, validate and resolve the spec at `path`; raise `SpecErrors` with every problem."""
    file = Path(os.path.abspath(path))
    name = shown(file)
    try:
        raw = file.read_bytes()
    except (OSError, ValueError) as e:  # ValueError: a NUL in the path
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise SpecErrors([SpecError(name, 1, 1, (), f"cannot read the spec: {reason}")]) from None

    # 1. parse, keeping the line and column of every key and value
    doc = parse(raw)
    errors = [SpecError(name, line, col, p, message) for p, (line, col), message in doc.problems]
    if doc.data is None and not doc.problems:
        errors.append(SpecError(name, 1, 1, (), "the spec is empty: expected a mapping with at least "
                                "name, version, model and target"))

    def locate(f: Finding) -> SpecError:
        at = f.path if f.at is None else f.at
        marks = doc.key_marks if f.at_key and at in doc.key_marks else doc.marks
        line, col = _nearest(marks, at)
        return SpecError(name, line, col, f.path, f.message)

    # 2. validate against the schema, then the rules that tie fields together
    if doc.data is not None:
        errors += [locate(f) for f in validate(doc.data, schema()) if f.path not in doc.unusable]
        if isinstance(doc.data, dict):
            errors += [locate(f) for f in _cross_checks(doc.data)]
    if errors:
        raise SpecErrors(errors)

    # 3. defaults, applied here and nowhere else
    data = _resolve(doc.data)
    marks = dict(doc.marks)

    # 4. the model, and the request inputs it implies when the spec lists none
    model = load_model(file.parent / data["model"])
    if isinstance(model, str):
        raise SpecErrors([locate(Finding(("model",), model))])
    found, problems = model_inputs(model)
    if "inputs" not in data or not data["preprocess"]:
        errors += [locate(Finding(("model",), p)) for p in problems]
    if "inputs" in data:
        inputs = [TensorSpec.from_dict(t) for t in data["inputs"]]
        if not data["preprocess"]:
            errors += [locate(Finding(p, m)) for p, m in compare_inputs(inputs, found)]
    else:
        inputs = found
        marks[("inputs",)] = doc.marks[("model",)]  # errors about them point at the model
    data["inputs"] = [t.to_dict() for t in inputs]

    # 5. calibration and validation data for those inputs
    for key in ("calibration", "validation"):
        if key not in data["optimize"]:
            continue
        messages, labels = check_arrays(file.parent / data["optimize"][key], inputs)
        at: KeyPath = ("optimize", key)
        errors += [locate(Finding(at, m)) for m in messages]
        metric = data["budget"].get("accuracy", {}).get("metric")
        if key == "validation" and labels is False and metric == "accuracy":
            errors.append(locate(Finding(at, f"{shown(file.parent / data['optimize'][key])} has no "
                                             "`labels` array, which metric accuracy needs")))
    if errors:
        raise SpecErrors(errors)
    spec = _build(file, data, marks, inputs)

    # 6. the pre/post steps against the model
    errors = check_pipeline(spec, model)
    if errors:
        raise SpecErrors(errors)
    return spec


_BOUNDS = {  # metric: (the bound it takes, lowest, highest allowed)
    "top1_agreement": ("min", 0.0, 1.0),
    "accuracy": ("min", 0.0, 1.0),
    "cosine": ("min", -1.0, 1.0),
    "max_abs_error": ("max", 0.0, None),
}


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _cross_checks(raw: dict[str, Any]) -> list[Finding]:
    """Rules between fields; written to tolerate data the schema has rejected."""
    def mapping(v: Any) -> dict[str, Any]:
        return v if isinstance(v, dict) else {}

    out: list[Finding] = []
    opt, budget, target = mapping(raw.get("optimize")), mapping(raw.get("budget")), raw.get("target")
    hardware = mapping(target).get("hardware") if isinstance(target, dict) else target
    quantize = opt.get("quantize")
    q = ("optimize", "quantize")
    if quantize == "fp16" and hardware in ("x86", "arm"):
        out.append(Finding(q, f"fp16 needs target cuda, got {hardware} (on CPUs use dynamic or static)"))
    if quantize in ("static", "auto") and "calibration" not in opt:
        out.append(Finding(q, f"quantize {quantize} needs optimize.calibration "
                              "(an .npz with an array per request input)"))
    if quantize == "auto" and "accuracy" not in budget:
        out.append(Finding(q, "quantize auto needs budget.accuracy to choose between candidates"))

    accuracy = budget.get("accuracy")
    if isinstance(accuracy, dict):
        if "validation" not in opt:
            out.append(Finding(("budget", "accuracy"), "an accuracy budget needs optimize.validation "
                                                       "(an .npz with an array per request input)"))
        out += _accuracy_bounds(accuracy)

    latency = mapping(budget.get("latency_ms"))
    given = [(p, latency[p]) for p in ("p50", "p95", "p99") if _number(latency.get(p))]
    for (p, low), (q_, high) in itertools.pairwise(given):
        if high < low:
            out.append(Finding(("budget", "latency_ms", q_), f"{q_} ({high}) is below {p} ({low})"))

    inputs = raw.get("inputs")
    seen: dict[str, int] = {}
    for i, t in enumerate(inputs if isinstance(inputs, list) else []):
        tensor_name = mapping(t).get("name")
        if isinstance(tensor_name, str) and tensor_name in seen:
            out.append(Finding(("inputs", i, "name"),
                               f"duplicate input name {tensor_name!r} (also inputs[{seen[tensor_name]}])"))
        elif isinstance(tensor_name, str):
            seen[tensor_name] = i
    return out


def _accuracy_bounds(accuracy: dict[str, Any]) -> list[Finding]:
    metric = accuracy.get("metric")
    if not isinstance(metric, str) or metric not in _BOUNDS:
        return []
    bound, low, high = _BOUNDS[metric]
    other = "max" if bound == "min" else "min"
    here: KeyPath = ("budget", "accuracy")
    out: list[Finding] = []
    if other in accuracy:
        out.append(Finding((*here, other), f"metric {metric} takes `{bound}`, not `{other}`"))
    value = accuracy.get(bound)
    if value is None:
        what = "lowest" if bound == "min" else "highest"
        out.append(Finding((*here, bound), f"missing required key for metric {metric}: the {what} acceptable value",
                           at=here))
    elif _number(value) and (value < low or (high is not None and value > high)):
        wanted = f"in [{low:g}, {high:g}]" if high is not None else f">= {low:g}"
        out.append(Finding((*here, bound), f"expected a number {wanted} for {metric}, got {value!r}"))
    return out


def _canonical(value: Any, sub: Mapping[str, Any]) -> Any:
    """`value` with the schema's defaults filled in, keys in the schema's order and
    integers as ints (JSON Schema counts 3.0 as an integer)."""
    if sub.get("type") == "integer" and isinstance(value, float):
        return int(value)
    if isinstance(value, list) and "items" in sub:
        return [_canonical(item, sub["items"]) for item in value]
    if not isinstance(value, dict) or "properties" not in sub:
        return value
    out = {}
    for key, prop in sub["properties"].items():
        if key in value:
            out[key] = _canonical(value[key], prop)
        elif "default" in prop:
            out[key] = _canonical(copy.deepcopy(prop["default"]), prop)
    return out


def _resolve(raw: dict[str, Any]) -> dict[str, Any]:
    """Validated spec data in its one canonical form: defaults applied, long forms only."""
    data: dict[str, Any] = _canonical(copy.deepcopy(raw), schema())
    target = data["target"]
    data["target"] = {"hardware": target} if isinstance(target, str) else {
        "hardware": target["hardware"], **({"threads": int(target["threads"])} if "threads" in target else {})}
    for section in STEP_SECTIONS:
        data[section] = [{item: {}} if isinstance(item, str)
                         else {k: _canonical(v or {}, registry.params_schema(k)) for k, v in item.items()}
                         for item in data[section]]
    s = data["serving"]
    data["serving"] = ServingConfig(int(s["max_batch_size"]), float(s["max_queue_delay_ms"]),
                                    int(s["max_queue"]), float(s["timeout_ms"])).to_dict()
    return data


def _build(file: Path, data: dict[str, Any], marks: dict[KeyPath, Mark],
           inputs: Sequence[TensorSpec]) -> Spec:
    def path(value: str | None) -> Path | None:
        return None if value is None else Path(os.path.abspath(file.parent / value))

    def number(value: Any) -> float | None:
        return None if value is None else float(value)

    def steps(section: str) -> tuple[Step, ...]:
        return tuple(Step(name, MappingProxyType(params), (section, i))
                     for i, item in enumerate(data[section]) for name, params in item.items())

    order = list(schema()["properties"])
    data = {key: data[key] for key in order if key in data}
    budget, opt = data["budget"], data["optimize"]
    latency, accuracy = budget.get("latency_ms"), budget.get("accuracy")
    return Spec(
        file=file,
        name=data["name"],
        version=data["version"],
        model=Path(os.path.abspath(file.parent / data["model"])),
        target=Target(data["target"]["hardware"], data["target"].get("threads")),
        inputs=tuple(inputs),
        budget=Budget(
            LatencyBudget(*(number(latency.get(p)) for p in ("p50", "p95", "p99"))) if latency else None,
            AccuracyBudget(accuracy["metric"], number(accuracy.get("min")), number(accuracy.get("max")))
            if accuracy else None,
        ),
        optimize=Optimize(opt["quantize"], opt["fuse"], path(opt.get("calibration")),
                          path(opt.get("validation"))),
        preprocess=steps("preprocess"),
        postprocess=steps("postprocess"),
        serving=ServingConfig(**data["serving"]),
        data=data,
        marks=MappingProxyType(marks),
    )
