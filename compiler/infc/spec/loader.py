"""The spec: one YAML file naming a model, its target, budgets and pre/post steps.

`load_spec` is the only reader of spec files. It either returns a typed,
immutable `Spec` (defaults applied, paths absolute, request inputs known) or
raises `SpecErrors` listing every problem it found, each located as
`file:line:col key.path: message`. Later stages locate their own findings with
`Spec.error(path, message)`; nothing downstream re-reads YAML.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import onnx

from infc_runtime.types import ServingConfig, TensorSpec

from ..bounded import TooLarge, read_bounded
from ..errors import PathPart, SpecError, SpecErrors
from ..isa import DEFAULT_ISA, ISAS, NATIVE, host_hardware
from ..kernels import registry
from ..modelio import graph_outputs
from . import budgets
from .dataflow import broken, check_pipeline, resolve_stages
from .files import check_arrays, compare_inputs, load_model, model_inputs, shown
from .prepare import steps_needing_data
from .schema import STEP_SECTIONS, schema
from .validate import Finding, validate
from .yaml import KeyPath, Mark, parse

__all__ = [
    "Target", "LatencyBudget", "AccuracyBudget", "Budget", "Optimize", "Step", "Spec",
    "schema", "load_spec", "MAX_SPEC_BYTES",
]


@dataclass(frozen=True)
class Target:
    """Where the bundle runs: `x86`, `arm` or `cuda`; `threads` None lets the plan choose.

    `isa`: the CPU instruction set (`infc.isa.ISAS`; `native` = the build host's, see
    `infc.isa.resolve_isa`), None for cuda. `fp16`: whether a cuda target runs fp16
    (always False on CPUs).
    """

    hardware: str
    threads: int | None = None
    isa: str | None = None
    fp16: bool = False


@dataclass(frozen=True)
class LatencyBudget:
    """Latency percentiles at batch 1 that the build must meet, in ms (None: not budgeted)."""

    p50: float | None = None
    p95: float | None = None
    p99: float | None = None


@dataclass(frozen=True)
class AccuracyBudget:
    """`metric` (a name in `infc.accuracy.METRICS`) of the optimized model against the original
    must stay >= `min` (or <= `max`, for an error metric).

    `params`: the metric's parameters, defaults applied (`output`, `k`, `threshold`,
    `column`; see `infc.accuracy.PARAMS`). `path`: where the spec wrote this budget.
    """

    metric: str
    min: float | None = None
    max: float | None = None
    params: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    path: tuple[PathPart, ...] = field(default=("budget", "accuracy"), compare=False)

    @property
    def bound(self) -> float | None:
        """The budgeted value: `max` for an error metric, else `min`."""
        return self.max if self.max is not None else self.min

    @property
    def output(self) -> str | int | None:
        """The tensor compared (a model output name or index, or a response tensor name);
        None: the model's first output."""
        value: str | int | None = self.params.get("output")
        return value


@dataclass(frozen=True)
class Budget:
    """What the build must meet; a missing part is not checked (no accuracy budget: `()`)."""

    latency_ms: LatencyBudget | None = None
    accuracy: tuple[AccuracyBudget, ...] = ()


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
    serving_pinned: frozenset[str] = frozenset()
    """The `serving` keys the spec wrote; the build may choose the others (defaults fill `serving`)."""

    def error(self, path: Sequence[PathPart], message: str) -> SpecError:
        """A `SpecError` about `path`, located where the nearest written part of it is."""
        return _located(self.file, self.marks, path, message)


@dataclass(frozen=True)
class _Stages:
    """What the pipeline check reads (`kernels.signature.Stages`), assembled from the usable
    parts of a spec before, or without, a whole `Spec`."""

    file: Path
    marks: Mapping[KeyPath, Mark]
    inputs: tuple[TensorSpec, ...]
    preprocess: tuple[Step, ...]
    postprocess: tuple[Step, ...]

    def error(self, path: Sequence[PathPart], message: str) -> SpecError:
        return _located(self.file, self.marks, path, message)


def _nearest(marks: Mapping[KeyPath, Mark], path: KeyPath) -> Mark:
    for n in range(len(path), -1, -1):
        if path[:n] in marks:
            return marks[path[:n]]
    return (1, 1)


def _located(file: Path, marks: Mapping[KeyPath, Mark], path: Sequence[PathPart], message: str) -> SpecError:
    line, col = _nearest(marks, tuple(path))
    return SpecError(shown(file), line, col, tuple(path), message)


def _usable(wrong: Iterable[KeyPath]) -> Callable[[KeyPath], bool]:
    """Whether a value can be read by later checks: nothing at, inside or around it is wrong."""
    paths = list(wrong)
    return lambda at: not any(p[:len(at)] == at or at[:len(p)] == p for p in paths)


def load_spec(path: str | Path) -> Spec:
    """Read, validate and resolve the spec at `path`; raise `SpecErrors` with every problem.

    One run finds every problem that can be known before building. Only a file that
    is not a YAML mapping stops at once; a wrong value leaves out just the checks that
    read it (a wrong budget does not hide a missing model file, a broken step does
    not hide one of the other stage), and a check that needs the model runs when it loads.
    """
    file = Path(os.path.abspath(path))
    name = shown(file)
    raw = _read(file, name)

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
    wrong = [f for f in validate(doc.data, schema()) if f.path not in doc.unusable] if doc.data is not None else []
    errors += [locate(f) for f in wrong]
    if not isinstance(doc.data, dict):
        raise SpecErrors(errors)
    cross = _cross_checks(doc.data)
    errors += [locate(f) for f in cross]
    # what is wrong is not read again; a duplicate input name leaves the request tensors unknown
    usable = _usable([f.path for f in wrong] + [p for p, _, _ in doc.problems]
                     + [f.path for f in cross if f.path[:1] == ("inputs",)])

    # 3. the files it names and the pre/post steps, each checked as far as what it needs is usable
    found = _check_files_and_steps(file, doc.data, doc.marks, usable)
    errors += [locate(f) for f in found.findings] + found.errors
    if errors:
        raise SpecErrors(errors)

    # 4. defaults, applied here and nowhere else
    assert found.inputs is not None  # no errors: the inputs are known
    data = _resolve(doc.data)
    data["inputs"] = [t.to_dict() for t in found.inputs]
    return _build(file, data, found.marks, found.inputs, doc.data)


MAX_SPEC_BYTES = 1 << 20
"""The largest spec file read (1 MiB). A spec is a few kB; a list of 20,000 class names fits.
A pull request can hold any file: past this, nothing more is read."""


def _read(file: Path, name: str) -> bytes:
    """The spec's bytes, never more than `MAX_SPEC_BYTES` + 1 of them read."""
    try:
        return read_bounded(file, MAX_SPEC_BYTES)
    except TooLarge as e:
        said = f"{e.size:,} bytes" if e.size > MAX_SPEC_BYTES else f"more than {MAX_SPEC_BYTES:,} bytes"  # a pipe
        raise SpecErrors([SpecError(name, 1, 1, (), f"the spec is {said}; a spec may be at most "
                                                    f"{MAX_SPEC_BYTES:,} bytes (1 MiB)")]) from None
    except (OSError, ValueError) as e:  # ValueError: a NUL in the path
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise SpecErrors([SpecError(name, 1, 1, (), f"cannot read the spec: {reason}")]) from None


@dataclass
class _Checked:
    """What `_check_files_and_steps` found: problems (as findings, or located already), the request
    inputs (None: unknown) and the marks, with `inputs` pointing at the model when it names them."""

    findings: list[Finding]
    errors: list[SpecError]
    inputs: list[TensorSpec] | None
    marks: dict[KeyPath, Mark]


def _check_files_and_steps(file: Path, raw: dict[str, Any], doc_marks: Mapping[KeyPath, Mark],
                  usable: Callable[[KeyPath], bool]) -> _Checked:
    """The model, the calibration/validation data, the pre/post steps and the tensors the
    accuracy budgets compare: every check whose inputs are usable."""
    out = _Checked([], [], None, dict(doc_marks))
    opt, accuracy = _mapping(raw.get("optimize")), _mapping(raw.get("budget")).get("accuracy")
    budgeted = usable(("budget", "accuracy"))
    no_pre = usable(("preprocess",)) and not raw.get("preprocess")
    data_keys = [k for k in ("calibration", "validation") if k in opt and usable(("optimize", k))]

    # the model, and the request inputs: as written, or the model's
    model: onnx.ModelProto | None = None
    if usable(("model",)):
        loaded = load_model(file.parent / raw["model"])
        model = None if isinstance(loaded, str) else loaded
        if isinstance(loaded, str):
            out.findings.append(Finding(("model",), loaded + _unchecked_note(raw, data_keys)))
    elif "inputs" not in raw and data_keys:  # the model's own problem is reported already
        out.findings.append(Finding(("model",), _unchecked_note(raw, data_keys).removeprefix("; ")))
    complete = "inputs" in raw
    if "inputs" in raw and usable(("inputs",)):
        out.inputs = [TensorSpec.from_dict(t) for t in _canonical(raw["inputs"], schema()["properties"]["inputs"])]
    if model is not None:
        model_found, problems = model_inputs(model)
        if "inputs" not in raw or no_pre:
            out.findings += [Finding(("model",), p) for p in problems]
        if "inputs" not in raw:
            out.inputs, complete = model_found, not problems
            out.marks[("inputs",)] = doc_marks[("model",)]  # errors about them point at the model
        elif out.inputs is not None and no_pre:
            out.findings += [Finding(p, m) for p, m in compare_inputs(out.inputs, model_found)]

    # calibration and validation data for those inputs (only as archives while the inputs are unknown)
    for key in data_keys:
        npz = file.parent / opt[key]
        messages, summary = check_arrays(npz, out.inputs or [])
        at: KeyPath = ("optimize", key)
        out.findings += [Finding(at, m) for m in messages]
        if key == "validation" and summary is not None and not messages and budgeted:
            out.findings += budgets.data_findings(accuracy, summary.labels, summary.samples, shown(npz), at)
    if model is None:
        return out

    # the pre/post steps against the model, then the tensors the accuracy budgets compare
    skip = {s for s in STEP_SECTIONS if not usable((s,))}
    if out.inputs is None or not complete or ("inputs" in raw and no_pre):
        skip.add("preprocess")  # request inputs unknown; or none to run, and compare_inputs checked them
    pre, post = (() if s in skip else _steps(file, raw.get(s) or [], s) for s in ("preprocess", "postprocess"))
    stages = _Stages(file, out.marks, tuple(out.inputs or ()), pre, post)
    out.errors += check_pipeline(stages, model, skip)
    if budgeted and budgets.written(accuracy):
        response = list(resolve_stages(stages, model, skip)[1].end)
        known = "postprocess" not in skip and not broken(out.errors, "postprocess")
        out.findings += budgets.output_findings(accuracy, graph_outputs(model), response, complete=known)
    return out


def _unchecked_note(raw: dict[str, Any], data_keys: Sequence[str]) -> str:
    """What a model that cannot be read leaves unchecked, when the request inputs are its own."""
    if "inputs" in raw or not data_keys:
        return ""
    return (f"; the spec lists no `inputs`, so the request inputs are the model's: the arrays in "
            f"{' and '.join(f'optimize.{k}' for k in data_keys)} are checked against them once it loads")


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _mapping(v: Any) -> dict[str, Any]:
    return v if isinstance(v, dict) else {}


def _cross_checks(raw: dict[str, Any]) -> list[Finding]:
    """Rules between fields; written to tolerate data the schema has rejected."""
    out: list[Finding] = []
    opt, budget, target = _mapping(raw.get("optimize")), _mapping(raw.get("budget")), raw.get("target")
    hardware = _mapping(target).get("hardware") if isinstance(target, dict) else target
    out += _target_checks(_mapping(target), hardware)
    quantize = opt.get("quantize")
    q = ("optimize", "quantize")
    if quantize == "fp16" and hardware in ("x86", "arm"):
        out.append(Finding(q, f"fp16 needs target cuda, got {hardware} (on CPUs use dynamic or static)"))
    if quantize == "fp16" and hardware == "cuda" and _mapping(target).get("fp16") is False:
        out.append(Finding(q, "quantize fp16 contradicts target.fp16: false"))
    if quantize in ("static", "auto") and "calibration" not in opt:
        out.append(Finding(q, f"quantize {quantize} needs optimize.calibration "
                              "(an .npz with an array per request input)"))
    if "calibration" not in opt:
        for i, step in steps_needing_data(raw.get("preprocess")):
            out.append(Finding(("preprocess", i, step, "from"), f"{step} from: calibration needs "
                               "optimize.calibration (an .npz with an array per request input)"))
    if quantize == "auto" and "accuracy" not in budget:
        out.append(Finding(q, "quantize auto needs budget.accuracy to choose between candidates"))

    accuracy = budget.get("accuracy")
    if budgets.written(accuracy):
        if "validation" not in opt:
            out.append(Finding(("budget", "accuracy"), "an accuracy budget needs optimize.validation "
                                                       "(an .npz with an array per request input)"))
        out += budgets.static_findings(accuracy)

    latency = _mapping(budget.get("latency_ms"))
    given = [(p, latency[p]) for p in ("p50", "p95", "p99") if _number(latency.get(p))]
    for (p, low), (q_, high) in itertools.pairwise(given):
        if high < low:
            out.append(Finding(("budget", "latency_ms", q_), f"{q_} ({high}) is below {p} ({low})"))

    inputs = raw.get("inputs")
    seen: dict[str, int] = {}
    for i, t in enumerate(inputs if isinstance(inputs, list) else []):
        tensor_name = _mapping(t).get("name")
        if isinstance(tensor_name, str) and tensor_name in seen:
            out.append(Finding(("inputs", i, "name"),
                               f"duplicate input name {tensor_name!r} (also inputs[{seen[tensor_name]}])"))
        elif isinstance(tensor_name, str):
            seen[tensor_name] = i
    return out


def _target_checks(target: dict[str, Any], hardware: Any) -> list[Finding]:
    """`isa` must be one of the hardware's, `fp16` is for cuda."""
    if not isinstance(hardware, str) or hardware not in ISAS:
        return []  # the schema reports it
    out: list[Finding] = []
    isa, fp16 = target.get("isa"), target.get("fp16")
    owner = next((h for h, isas in ISAS.items() if isa in isas), None)
    here: KeyPath = ("target", "isa")
    if hardware == "cuda" and isinstance(isa, str):
        out.append(Finding(here, "a cuda target takes no isa (it names a CPU instruction set; "
                                 "fp16 chooses the GPU's precision)"))
    elif isa == NATIVE and host_hardware() != hardware:
        out.append(Finding(here, f"isa native means the build host's, but the build host is {host_hardware()} "
                                 f"and the target {hardware}: name the isa ({', '.join(ISAS[hardware])})"))
    elif owner is not None and owner != hardware:  # an isa that is no isa at all: the schema reports it
        out.append(Finding(here, f"isa {isa} is for {owner}, not {hardware}: {hardware} takes "
                                 f"{', '.join(ISAS[hardware])} or native"))
    if hardware != "cuda" and isinstance(fp16, bool):
        out.append(Finding(("target", "fp16"), f"fp16 is a cuda setting; an {hardware} target runs fp32 "
                                               "(or int8 with optimize.quantize)", at_key=True))
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
            else {k: _canonical(v or {}, registry.params_schema(k)) for k, v in item.items()}
            for item in items]


def _steps(file: Path, items: list[Any], section: str) -> tuple[Step, ...]:
    """The steps of a validated step list; file parameters made absolute (`data` keeps them as written)."""
    def with_paths(name: str, params: dict[str, Any]) -> dict[str, Any]:
        files = registry.get(name).files
        return {k: str(Path(os.path.abspath(file.parent / v))) if k in files else v for k, v in params.items()}

    return tuple(Step(name, MappingProxyType(with_paths(name, params)), (section, i))
                 for i, item in enumerate(_canonical_steps(items)) for name, params in item.items())


def _serving_config(s: dict[str, Any]) -> ServingConfig:
    """The `serving` section with each value in its field's type (YAML's 2 for 2.0 and the like)."""
    kinds: dict[str, Any] = {f.name: type(f.default) for f in dataclasses.fields(ServingConfig)}
    return ServingConfig(**{k: kinds[k](v) for k, v in s.items() if k in kinds})


def _build(file: Path, data: dict[str, Any], marks: dict[KeyPath, Mark],
           inputs: Sequence[TensorSpec], raw: dict[str, Any]) -> Spec:
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
        preprocess=_steps(file, data["preprocess"], "preprocess"),
        postprocess=_steps(file, data["postprocess"], "postprocess"),
        serving=ServingConfig(**data["serving"]),
        data=data,
        marks=MappingProxyType(marks),
        serving_pinned=frozenset(raw["serving"]) if isinstance(raw.get("serving"), dict) else frozenset(),
    )
