"""The spec: one YAML file naming a model, its target, budgets and pre/post steps.

`load_spec` is the only reader of spec files. It either returns a `CheckedSpec`
(the typed, immutable `Spec`, defaults applied, paths absolute, request inputs
known; and the model, its signature, the pre/post dataflows and the data it was
checked against) or raises `SpecErrors` listing every problem it found, each
located as `file:line:col key.path: message`. Later stages locate their own
findings with `Spec.error(path, message)`; nothing downstream re-reads YAML,
the model or the arrays.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from infc_runtime.types import TensorSpec, numpy_dtype

from ..bounded import TooLarge, read_bounded
from ..errors import PathPart, SpecError, SpecErrors
from ..modelio import Signature, read_signature
from . import budgets
from .dataflow import Pipeline, broken, check_pipeline
from .defaults import canonical, resolve, steps, to_spec
from .files import Arrays, check_arrays, compare_inputs, load_model, shown
from .model import CheckedSpec, RequestData, Step, located, nearest
from .rules import cross_checks, mapping
from .schema import DTYPES, STEP_SECTIONS, schema
from .validate import Finding, suggest, validate
from .yaml import Document, KeyPath, Mark, parse

__all__ = ["load_spec", "MAX_SPEC_BYTES"]


def load_spec(path: str | Path) -> CheckedSpec:
    """Read, validate and resolve the spec at `path`; raise `SpecErrors` with every problem.

    One run finds every problem that can be known before building. Only a file that
    cannot be read or is not a YAML mapping stops at once; a wrong value leaves out just
    the checks that read it (a wrong budget does not hide a missing model file, a broken
    step does not hide one of the other stage), and a check that needs the model runs
    when it loads.
    """
    check = _Checks(Path(os.path.abspath(path)))  # read and parsed, keeping every key's and value's line and column
    # 1. the schema, then the rules that tie fields together
    check.schema_and_rules()
    # 2. the model, and the request inputs: as written, or the model's
    check.model_and_inputs()
    # 3. the calibration and validation arrays, as data for those inputs
    check.data()
    # 4. the pre/post steps against the model, then the tensors the accuracy budgets compare
    check.pipeline()
    # 5. every problem at once; else the spec, defaults applied, with what it was checked against
    return check.result()


@dataclass(frozen=True)
class _Stages:
    """What the pipeline check reads (`dataflow.Stages`), assembled from the usable parts of a
    spec before, or without, a whole `Spec`."""

    file: Path
    marks: dict[KeyPath, Mark]
    inputs: tuple[TensorSpec, ...]
    preprocess: tuple[Step, ...]
    postprocess: tuple[Step, ...]

    def error(self, path: Sequence[PathPart], message: str) -> SpecError:
        return located(self.file, self.marks, path, message)


class _Checks:
    """The checks of one spec file, run in order; each records its problems (located) and what it
    found, and runs as far as what it reads is usable (nothing at, inside or around it is wrong)."""

    def __init__(self, file: Path) -> None:
        self.file, self.name = file, shown(file)
        self.errors: list[SpecError] = []
        self.wrong: list[KeyPath] = []  # what is wrong is not read again
        self.raw: dict[str, Any] | None = None  # the data, once it is known to be a mapping
        self.doc = Document()
        self.marks: dict[KeyPath, Mark] = {}
        self.inputs: list[TensorSpec] | None = None  # the request inputs (None: unknown)
        self.complete = False  # whether `inputs` are all the request inputs
        self.model: onnx.ModelProto | None = None
        self.signature: Signature | None = None
        self.arrays: dict[str, Arrays] = {}
        self.flows: Pipeline | None = None
        raw = _read(file, self.name)
        if isinstance(raw, SpecError):
            self.errors.append(raw)
            return
        self.doc = parse(raw)
        self.errors += [SpecError(self.name, line, col, p, message) for p, (line, col), message in self.doc.problems]
        self.wrong += [p for p, _, _ in self.doc.problems]
        if self.doc.data is None and not self.doc.problems:
            self.errors.append(SpecError(self.name, 1, 1, (), "the spec is empty: expected a mapping with at least "
                                         "name, version, model and target"))
        self.marks = dict(self.doc.marks)

    def usable(self, at: KeyPath) -> bool:
        """Whether the value at `at` can be read: nothing at, inside or around it is wrong."""
        return not any(p[:len(at)] == at or at[:len(p)] == p for p in self.wrong)

    def add(self, findings: Iterable[Finding]) -> None:
        """Record `findings`, each located at its value (or key) or the nearest written parent."""
        for f in findings:
            at = f.path if f.at is None else f.at
            marks = self.doc.key_marks if f.at_key and at in self.doc.key_marks else self.doc.marks
            line, col = nearest(marks, at)
            self.errors.append(SpecError(self.name, line, col, f.path, f.message))

    def schema_and_rules(self) -> None:
        if self.doc.data is None:
            return
        wrong = [f for f in validate(self.doc.data, schema()) if f.path not in self.doc.unusable]
        self.add(wrong)
        self.wrong += [f.path for f in wrong]
        if not isinstance(self.doc.data, dict):
            return  # nothing more can be read
        self.raw = self.doc.data
        cross = cross_checks(self.raw)
        self.add(cross)
        # a duplicate input name leaves the request tensors unknown
        self.wrong += [f.path for f in cross if f.path[:1] == ("inputs",)]

    def _data_keys(self) -> list[str]:
        opt = mapping(self.raw.get("optimize")) if self.raw is not None else {}
        return [k for k in ("calibration", "validation") if k in opt and self.usable(("optimize", k))]

    def _no_pre(self) -> bool:
        return self.usable(("preprocess",)) and not (self.raw or {}).get("preprocess")

    def model_and_inputs(self) -> None:
        if self.raw is None:
            return
        raw, data_keys = self.raw, self._data_keys()
        if self.usable(("model",)):
            loaded = load_model(self.file.parent / raw["model"])
            if isinstance(loaded, str):
                self.add([Finding(("model",), loaded + _unchecked_note(raw, data_keys))])
            else:
                self.model, self.signature = loaded, read_signature(loaded, DTYPES)
        elif "inputs" not in raw and data_keys:  # the model's own problem is reported already
            self.add([Finding(("model",), _unchecked_note(raw, data_keys).removeprefix("; "))])
        self.complete = "inputs" in raw
        if "inputs" in raw and self.usable(("inputs",)):
            self.inputs = [TensorSpec.from_dict(t) for t in canonical(raw["inputs"], schema()["properties"]["inputs"])]
        if self.signature is None:
            return
        signature, no_pre = self.signature, self._no_pre()
        self.add(_monitor_findings(mapping(raw.get("monitor")), [t.name for t in signature.inputs],
                                   self.usable(("monitor", "inputs"))))
        if "inputs" not in raw or no_pre:
            self.add(Finding(("model",), p) for p in signature.problems.values())
        if "inputs" not in raw:
            self.inputs, self.complete = signature.request_inputs, not signature.problems
            self.marks[("inputs",)] = self.doc.marks[("model",)]  # errors about them point at the model
        elif self.inputs is not None and no_pre:
            self.add(Finding(p, m) for p, m in compare_inputs(self.inputs, signature.request_inputs))

    def data(self) -> None:
        """Calibration and validation data (only as archives while the inputs are unknown)."""
        if self.raw is None:
            return
        opt, accuracy = mapping(self.raw.get("optimize")), mapping(self.raw.get("budget")).get("accuracy")
        for key in self._data_keys():
            npz = self.file.parent / opt[key]
            messages, summary = check_arrays(npz, self.inputs or [])
            at: KeyPath = ("optimize", key)
            self.add(Finding(at, m) for m in messages)
            if summary is not None and not messages:
                self.arrays[key] = summary
            if key == "validation" and summary is not None and not messages and self.usable(("budget", "accuracy")):
                self.add(budgets.data_findings(accuracy, summary.labels, summary.samples, shown(npz), at))

    def pipeline(self) -> None:
        if self.raw is None or self.signature is None:
            return
        raw = self.raw
        skip = {s for s in STEP_SECTIONS if not self.usable((s,))}
        if self.inputs is None or not self.complete or ("inputs" in raw and self._no_pre()):
            skip.add("preprocess")  # request inputs unknown; or none to run, and compare_inputs checked them
        pre, post = (() if s in skip else steps(self.file, raw.get(s) or [], s) for s in ("preprocess", "postprocess"))
        stages = _Stages(self.file, self.marks, tuple(self.inputs or ()), pre, post)
        self.flows = check_pipeline(stages, self.signature, skip)
        self.errors += self.flows.errors
        accuracy = mapping(raw.get("budget")).get("accuracy")
        if self.usable(("budget", "accuracy")) and budgets.written(accuracy):
            known = "postprocess" not in skip and not broken(self.flows.errors, "postprocess")
            self.add(budgets.output_findings(accuracy, self.signature.outputs, list(self.flows.post.end),
                                             complete=known))

    def result(self) -> CheckedSpec:
        """The checked spec; or every problem, raised at once."""
        if (self.errors or self.raw is None or self.model is None or self.signature is None or self.flows is None
                or self.inputs is None):
            raise SpecErrors(self.errors)  # no errors: the model, its dataflows and the inputs are known
        data = resolve(self.raw)
        data["inputs"] = [t.to_dict() for t in self.inputs]
        spec = to_spec(self.file, data, self.marks, self.inputs, self.raw)
        calibration, validation = (None if path is None else _requests(path, self.arrays[key], spec.inputs)
                                   for key, path in (("calibration", spec.optimize.calibration),
                                                     ("validation", spec.optimize.validation)))
        return CheckedSpec(spec, self.model, self.signature, self.flows.pre, self.flows.post, calibration, validation)


def _monitor_findings(monitor: dict[str, Any], names: Sequence[str], usable: bool) -> list[Finding]:
    """Each name in `monitor.inputs` must be one of the model's inputs."""
    watched = monitor.get("inputs")
    if not usable or not isinstance(watched, list):
        return []
    return [Finding(("monitor", "inputs", i), f"the model has no input {name!r}"
                    + suggest(name, names, known="its inputs"))
            for i, name in enumerate(watched) if isinstance(name, str) and name not in names]


def _requests(path: Path, found: Arrays, inputs: Sequence[TensorSpec]) -> RequestData:
    """The checked arrays of an .npz as requests: each input's array cast to its declared dtype."""
    tensors = {t.name: np.ascontiguousarray(found.arrays[t.name], dtype=numpy_dtype(t.dtype)) for t in inputs}
    labels = np.asarray(found.arrays["labels"]) if "labels" in found.arrays else None
    return RequestData(path, tensors, labels)


MAX_SPEC_BYTES = 1 << 20
"""The largest spec file read (1 MiB). A spec is a few kB; a list of 20,000 class names fits.
A pull request can hold any file: past this, nothing more is read."""


def _read(file: Path, name: str) -> bytes | SpecError:
    """The spec's bytes, never more than `MAX_SPEC_BYTES` + 1 of them read; or why they cannot be read."""
    try:
        return read_bounded(file, MAX_SPEC_BYTES)
    except TooLarge as e:
        said = f"{e.size:,} bytes" if e.size > MAX_SPEC_BYTES else f"more than {MAX_SPEC_BYTES:,} bytes"  # a pipe
        return SpecError(name, 1, 1, (), f"the spec is {said}; a spec may be at most {MAX_SPEC_BYTES:,} bytes (1 MiB)")
    except (OSError, ValueError) as e:  # ValueError: a NUL in the path
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        return SpecError(name, 1, 1, (), f"cannot read the spec: {reason}")


def _unchecked_note(raw: dict[str, Any], data_keys: Sequence[str]) -> str:
    """What a model that cannot be read leaves unchecked, when the request inputs are its own."""
    if "inputs" in raw or not data_keys:
        return ""
    return (f"; the spec lists no `inputs`, so the request inputs are the model's: the arrays in "
            f"{' and '.join(f'optimize.{k}' for k in data_keys)} are checked against them once it loads")


