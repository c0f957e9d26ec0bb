"""infc.spec: the example loads typed and defaulted; every malformed spec is one located error."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

import infc.spec.loader
import infc.spec.rules
from infc.errors import SpecError, SpecErrors, format_path
from infc.kernels import registry
from infc.kernels.types import Dataflow
from infc.spec import (
    MAX_SPEC_BYTES,
    AccuracyBudget,
    Budget,
    CheckedSpec,
    Deploy,
    LatencyBudget,
    Monitor,
    Optimize,
    Spec,
    Step,
    Target,
    load_spec,
    schema,
)
from infc.spec.dataflow import Pipeline
from infc_runtime.types import CacheConfig, ServingConfig, TensorSpec

ROOT = Path(__file__).resolve().parents[3]
DIGITS = ROOT / "specs" / "digits"

# The example, restated with lines numbered here so that tests can name exact positions.
BASE = """\
name: digits
version: 1.0.0
model: digits.onnx
target: x86
inputs:
  - {name: image, dtype: uint8, shape: [8, 8]}
budget:
  latency_ms: {p95: 5, p99: 10}
  accuracy: {metric: top1_agreement, min: 0.99}
optimize:
  quantize: static
  calibration: calib.npz
  validation: val.npz
preprocess:
  - to_float: {scale: 0.00392156862745098}
  - normalize: {mean: [0.5], std: [0.5]}
  - layout: {from: HW, to: CHW}
postprocess:
  - softmax: {output: probabilities}
  - topk: {k: 3}
  - labels: {names: [zero, one, two, three, four, five, six, seven, eight, nine]}
serving:
  max_batch_size: 16
"""
MINIMAL = "name: digits\nversion: 1.0.0\nmodel: digits.onnx\ntarget: x86\n"


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A folder holding the digits model and data, ready for a spec."""
    for name in ("digits.onnx", "calib.npz", "val.npz"):
        shutil.copy(DIGITS / name, tmp_path / name)
    return tmp_path


def write(folder: Path, text: str, *edits: tuple[str, str]) -> Path:
    """Write `text` as spec.yaml with each `(old, new)` of `edits` applied once."""
    for old, new in edits:
        assert old in text, old
        text = text.replace(old, new, 1)
    path = folder / "spec.yaml"
    path.write_text(text)
    return path


def errors_of(path: Path) -> list[SpecError]:
    with pytest.raises(SpecErrors) as info:
        load_spec(path)
    return info.value.errors


def where(e: SpecError) -> tuple[str, str]:
    return f"{e.line}:{e.col}", format_path(e.path)


def line_of(path: Path, start: str) -> int:
    """The 1-based number of the first line of `path` that starts with `start` (after indentation)."""
    lines = path.read_text().splitlines()
    return next(i for i, line in enumerate(lines, 1) if line.lstrip().startswith(start))


def uint8_images(n: int, *shape: int) -> np.ndarray:
    return np.zeros((n, *shape), np.uint8)


# ---------------------------------------------------------------- the example


def test_example_loads_typed_with_defaults() -> None:
    spec = load_spec(DIGITS / "digits.yaml").spec
    assert isinstance(spec, Spec)
    assert spec.file == DIGITS / "digits.yaml" and spec.model == DIGITS / "digits.onnx"
    assert (spec.name, spec.version) == ("digits", "1.0.0")
    assert spec.target == Target("x86", None, "native", False)
    assert spec.inputs == (TensorSpec("image", "uint8", (8, 8)),)
    assert spec.budget == Budget(LatencyBudget(None, 5.0, 10.0), (AccuracyBudget("top1_agreement", 0.99, None),))
    assert spec.budget.accuracy[0].path == ("budget", "accuracy") and spec.budget.accuracy[0].output is None
    assert spec.optimize == Optimize("auto", True, DIGITS / "calib.npz", DIGITS / "val.npz")
    assert [s.name for s in spec.preprocess] == ["to_float", "normalize", "layout"]
    assert spec.preprocess[1] == Step("normalize", {"mean": [0.5], "std": [0.5]}, ("preprocess", 1))
    assert spec.postprocess[1].params == {"k": 3} and spec.postprocess[1].path == ("postprocess", 1)
    assert spec.serving == ServingConfig(32, 2.0, 512, 1000.0)
    assert spec.serving_pinned == {"max_queue", "timeout_ms"}
    assert spec.data["target"] == {"hardware": "x86", "isa": "native"}
    assert spec.data["budget"]["accuracy"] == [{"metric": "top1_agreement", "min": 0.99}]
    assert spec.data["postprocess"][0] == {"softmax": {"output": "probabilities"}}
    assert spec.marks[("postprocess", 1, "topk", "k")] == (line_of(DIGITS / "digits.yaml", "- topk:"), 15)


def test_the_checked_spec_carries_what_loading_checked() -> None:
    checked = load_spec(DIGITS / "digits.yaml")
    assert isinstance(checked, CheckedSpec)
    assert [i.name for i in checked.model.graph.input] == ["image"]  # the model, read once
    assert checked.signature.inputs == (TensorSpec("image", "float32", (1, 8, 8)),)
    assert checked.signature.request_inputs == list(checked.signature.inputs) and not checked.signature.problems
    assert [s.name for s in checked.pre.steps] == ["to_float", "normalize", "layout"]
    assert checked.pre.start == checked.spec.inputs and checked.pre.end == checked.signature.inputs
    assert checked.post.start == checked.signature.outputs
    assert [t.name for t in checked.post.end] == ["scores", "labels"]
    assert checked.calibration is not None and checked.validation is not None
    assert checked.calibration.path == DIGITS / "calib.npz" and checked.validation.path == DIGITS / "val.npz"
    with np.load(DIGITS / "val.npz") as val:
        np.testing.assert_array_equal(checked.validation.requests["image"], val["image"])
        np.testing.assert_array_equal(checked.validation.labels, val["labels"])
        assert checked.validation.samples == len(val["image"])
    assert checked.validation.requests["image"].dtype == np.uint8  # the declared dtype


def test_minimal_spec_gets_defaults_and_the_model_inputs(workdir: Path) -> None:
    spec = load_spec(write(workdir, MINIMAL)).spec
    assert spec.inputs == (TensorSpec("image", "float32", (1, 8, 8)),)  # batch dim dropped
    assert spec.budget == Budget(None, ())
    assert spec.optimize == Optimize("none", True, None, None)
    assert spec.preprocess == () and spec.postprocess == ()
    assert spec.serving == ServingConfig() and spec.serving_pinned == frozenset()
    assert spec.data["inputs"] == [{"name": "image", "dtype": "float32", "shape": [1, 8, 8]}]
    assert spec.data["serving"] == ServingConfig().to_dict()
    assert list(spec.data) == list(schema()["properties"])  # canonical order, every section present
    # an error about the inputs taken from the model points at `model`
    assert spec.error(("inputs", 0, "shape"), "x").line == 3


def test_long_forms_and_bare_step_names(workdir: Path) -> None:
    text = MINIMAL.replace("target: x86", "target: {hardware: cuda, threads: 2}") + (
        "optimize: {quantize: fp16}\npostprocess:\n  - softmax\n  - topk: {k: 2.0}\n")
    spec = load_spec(write(workdir, text)).spec
    assert spec.target == Target("cuda", 2, None, True)
    assert spec.data["target"] == {"hardware": "cuda", "threads": 2, "fp16": True}
    assert spec.postprocess[0] == Step("softmax", {}, ("postprocess", 0))
    assert spec.postprocess[1].params == {"k": 2} and isinstance(spec.postprocess[1].params["k"], int)
    assert spec.data["postprocess"] == [{"softmax": {}}, {"topk": {"k": 2}}]


def test_schema_is_valid_and_documents_the_registry() -> None:
    s = schema()
    Draft202012Validator.check_schema(s)
    assert set(s["required"]) >= {"name", "version", "model", "target"}
    assert all("description" in p or "title" in p for p in s["properties"].values())
    stages: tuple[tuple[registry.Stage, str], ...] = (("pre", "preprocess"), ("post", "postprocess"))
    for stage, section in stages:
        mapping_form = s["properties"][section]["items"]["oneOf"][1]
        assert sorted(mapping_form["properties"]) == registry.names(stage)


def test_example_and_resolved_data_validate_against_the_schema(workdir: Path) -> None:
    validator = Draft202012Validator(schema())
    raw = yaml.safe_load((DIGITS / "digits.yaml").read_text())
    assert list(validator.iter_errors(raw)) == []
    assert list(validator.iter_errors(dict(load_spec(DIGITS / "digits.yaml").spec.data))) == []
    assert list(validator.iter_errors(dict(load_spec(write(workdir, MINIMAL)).spec.data))) == []


def test_spec_error_locates_at_the_nearest_written_ancestor() -> None:
    spec = load_spec(DIGITS / "digits.yaml").spec
    normalize, serving = (line_of(DIGITS / "digits.yaml", key) for key in ("- normalize:", "serving:"))
    e = spec.error(("preprocess", 1, "normalize", "std"), "too small")
    assert (e.line, e.col, e.path) == (normalize, 35, ("preprocess", 1, "normalize", "std"))
    assert spec.error(("preprocess", 1, "normalize", "axis"), "x").line == normalize  # not written: its step
    assert str(spec.error(("serving", "nope"), "m")).endswith(f":{serving + 1}:3 serving.nope: m")
    # the document itself: where its first key is
    assert spec.error(("nowhere",), "m").line == line_of(DIGITS / "digits.yaml", "name:")


# ---------------------------------------------------------------- one located error each

CASES: list[tuple[str, list[tuple[str, str]], str, str, str]] = [
    # id, edits, line:col, key path, message fragment
    ("yaml-syntax", [("  - topk: {k: 3}", "  - topk: {k: 3")], "21:11", "",
     "invalid YAML: expected ',' or '}', but got ':' (while parsing a flow mapping at line 20, column 11)"),
    ("yaml-tab", [("  max_batch_size: 16", "\tmax_batch_size: 16")], "23:1", "",
     "found character '\\t' that cannot start any token"),
    ("unknown-top-key", [("serving:", "servng:")], "22:1", "servng",
     "unknown key 'servng' (did you mean 'serving'?)"),
    ("unknown-nested-key", [("latency_ms:", "laytency_ms:")], "8:3", "budget.laytency_ms",
     "unknown key 'laytency_ms' (did you mean 'latency_ms'?)"),
    ("name-pattern", [("name: digits", "name: Digits_2")], "1:7", "name",
     "expected lowercase letters, digits and dashes, starting with a letter, got 'Digits_2'"),
    ("semver", [("version: 1.0.0", "version: v1.0")], "2:10", "version",
     "expected a semantic version such as 1.0.0, got 'v1.0'"),
    ("version-number", [("version: 1.0.0", "version: 1.0")], "2:10", "version",
     "expected a string, got 1.0 (put it in quotes"),
    ("target-short", [("target: x86", "target: x68")], "4:9", "target",
     "expected one of x86, arm, cuda, got 'x68' (did you mean 'x86'?)"),
    ("target-long", [("target: x86", "target: {hardware: x68, threads: 2}")], "4:20",
     "target.hardware", "expected one of x86, arm, cuda, got 'x68'"),
    ("target-type", [("target: x86", "target: [x86]")], "4:9", "target",
     "expected x86, arm or cuda, or a mapping {hardware, threads, isa, fp16}, got a list"),
    ("unknown-step", [("  - normalize:", "  - normalise:")], "16:5", "preprocess[1].normalise",
     "unknown preprocess step 'normalise' (did you mean 'normalize'?)"),
    ("unknown-bare-step", [("  - softmax: {output: probabilities}", "  - sofmax")], "19:5",
     "postprocess[0]", "unknown postprocess step 'sofmax' (did you mean 'softmax'?)"),
    ("step-wrong-stage", [("  - layout: {from: HW, to: CHW}", "  - softmax")], "17:5",
     "preprocess[2]", "step 'softmax' belongs in postprocess, not preprocess"),
    ("bare-step-needs-params", [("  - topk: {k: 3}", "  - topk")], "20:5", "postprocess[1]",
     "step 'topk' needs parameters: k"),
    ("step-two-keys", [("  - topk: {k: 3}", "  - {topk: {k: 3}, softmax: {}}")], "20:5",
     "postprocess[1]", "a step is a mapping with one key, the step name; got 2 keys"),
    ("step-param-std", [("std: [0.5]", "std: [0]")], "16:36", "preprocess[1].normalize.std[0]",
     "expected a number > 0, got 0"),
    ("step-param-k", [("{k: 3}", "{k: 0}")], "20:15", "postprocess[1].topk.k",
     "expected an integer >= 1, got 0"),
    ("step-param-unknown", [("{k: 3}", "{k: 3, kk: 1}")], "20:18", "postprocess[1].topk.kk",
     "unknown key 'kk' (did you mean 'k'?)"),
    ("step-param-missing", [("{mean: [0.5], std: [0.5]}", "{mean: [0.5]}")], "16:16",
     "preprocess[1].normalize.std", "missing required key"),
    ("missing-required", [("model: digits.onnx\n", "")], "1:1", "model", "missing required key"),
    ("missing-in-nested", [("{metric: top1_agreement, min: 0.99}", "{min: 0.99}")], "9:13",
     "budget.accuracy.metric", "missing required key"),
    ("wrong-type", [("max_batch_size: 16", "max_batch_size: lots")], "23:19",
     "serving.max_batch_size", "expected an integer, got 'lots'"),
    ("wrong-type-section", [("  max_batch_size: 16\n", ""), ("serving:", "serving: 5")],
     "22:10", "serving", "expected a mapping, got 5"),
    ("null-section", [("  max_batch_size: 16\n", "")], "22:9", "serving",
     "expected a mapping, got null"),
    ("duplicate-key", [("  max_batch_size: 16\n", "  max_batch_size: 16\n  max_batch_size: 8\n")],
     "24:3", "serving.max_batch_size", "duplicate key 'max_batch_size' (first written on line 23)"),
    ("serving-range", [("max_batch_size: 16", "max_batch_size: 0")], "23:19",
     "serving.max_batch_size", "expected an integer >= 1, got 0"),
    ("latency-order", [("{p95: 5, p99: 10}", "{p95: 5, p99: 1}")], "8:29", "budget.latency_ms.p99",
     "p99 (1) is below p95 (5)"),
    ("latency-empty", [("{p95: 5, p99: 10}", "{}")], "8:15", "budget.latency_ms",
     "expected at least one of p50, p95, p99"),
    ("not-finite", [("{p95: 5, p99: 10}", "{p95: .inf}")], "8:21", "budget.latency_ms.p95",
     "expected a finite number, got .inf"),
    ("accuracy-range", [("min: 0.99", "min: 1.5")], "9:43", "budget.accuracy.min",
     "expected a number in [0, 1] for top1_agreement, got 1.5"),
    ("max-abs-error-takes-max", [("metric: top1_agreement, min: 0.99", "metric: max_abs_error, max: 0.1, min: 0")],
     "9:52", "budget.accuracy.min", "metric max_abs_error takes `max`, not `min`"),
    ("accuracy-needs-validation", [("  validation: val.npz\n", "")], "9:13", "budget.accuracy",
     "an accuracy budget needs optimize.validation"),
    ("static-needs-calibration", [("  calibration: calib.npz\n", "")], "11:13", "optimize.quantize",
     "quantize static needs optimize.calibration"),
    ("fp16-on-x86", [("quantize: static", "quantize: fp16")], "11:13", "optimize.quantize",
     "fp16 needs target cuda, got x86"),
    ("auto-needs-accuracy", [("quantize: static", "quantize: auto"),
                             ("  accuracy: {metric: top1_agreement, min: 0.99}\n", "")],
     "10:13", "optimize.quantize", "quantize auto needs budget.accuracy"),
    ("dtype-enum", [("dtype: uint8", "dtype: unit8")], "6:26", "inputs[0].dtype",
     "got 'unit8' (did you mean 'uint8'?)"),
    ("duplicate-input", [("  - {name: image, dtype: uint8, shape: [8, 8]}\n",
                               "  - {name: image, dtype: uint8, shape: [8, 8]}\n"
                               "  - {name: image, dtype: uint8, shape: [8, 8]}\n")],
     "7:12", "inputs[1].name", "duplicate input name 'image' (also inputs[0])"),
    ("merge-key", [("serving:\n", "serving:\n  <<: {max_queue: 3}\n")], "23:3", "serving",
     "YAML merge keys (<<) are not supported"),
    ("python-tag", [("name: digits", "name: !!python/name:os.system digits")], "1:7", "name",
     "unsupported YAML value"),
    # files, checked once the spec itself is right
    ("model-missing", [("model: digits.onnx", "model: digitz.onnx")], "3:8", "model",
     "file not found: "),
    ("model-not-onnx", [("model: digits.onnx", "model: calib.npz")], "3:8", "model",
     "not a valid ONNX model"),
    ("npz-missing", [("calibration: calib.npz", "calibration: nope.npz")], "12:16",
     "optimize.calibration", "file not found: "),
    ("npz-not-npz", [("calibration: calib.npz", "calibration: digits.onnx")], "12:16",
     "optimize.calibration", "is not an .npz archive"),
    ("npz-missing-array", [("calibration: calib.npz", "calibration: renamed.npz")], "12:16",
     "optimize.calibration", "has no array 'image' (did you mean 'img'?)"),
    ("npz-wrong-shape", [("calibration: calib.npz", "calibration: shape.npz")], "12:16",
     "optimize.calibration", "array 'image' has shape (4, 8, 9), expected (N, 8, 8)"),
    ("npz-unsafe-dtype", [("calibration: calib.npz", "calibration: float.npz")], "12:16",
     "optimize.calibration", "array 'image' has dtype float64, which does not cast safely"),
    ("npz-pickled", [("calibration: calib.npz", "calibration: objects.npz")], "12:16",
     "optimize.calibration", "holds Python objects"),
    ("labels-length", [("validation: val.npz", "validation: labels3.npz")], "13:15",
     "optimize.validation", "`labels` has 3 entries, expected N = 4"),
    ("labels-dtype", [("validation: val.npz", "validation: labelsf.npz")], "13:15",
     "optimize.validation", "`labels` has dtype float32, expected integers"),
    ("accuracy-without-labels", [("metric: top1_agreement", "metric: accuracy"),
                                 ("validation: val.npz", "validation: calib.npz")],
     "13:15", "optimize.validation", "calib.npz has no `labels` array, which metric accuracy needs"),
    # targets: isa and fp16
    ("isa-wrong-hardware", [("target: x86", "target: {hardware: arm, isa: avx2}")], "4:30", "target.isa",
     "isa avx2 is for x86, not arm: arm takes arm64, arm64_dotprod or native"),
    ("isa-unknown", [("target: x86", "target: {hardware: x86, isa: avx3}")], "4:30", "target.isa",
     "got 'avx3' (did you mean 'avx2'?)"),
    ("isa-on-cuda", [("target: x86", "target: {hardware: cuda, isa: avx2}")], "4:31", "target.isa",
     "a cuda target takes no isa"),
    ("fp16-on-cpu-target", [("target: x86", "target: {hardware: x86, fp16: true}")], "4:25", "target.fp16",
     "fp16 is a cuda setting; an x86 target runs fp32"),
    ("quantize-fp16-vs-target", [("target: x86", "target: {hardware: cuda, fp16: false}"),
                                 ("quantize: static", "quantize: fp16")],
     "11:13", "optimize.quantize", "quantize fp16 contradicts target.fp16: false"),
    # accuracy budgets: metrics, bounds, parameters, lists
    ("unknown-metric", [("metric: top1_agreement", "metric: top1_agreemnt")], "9:22", "budget.accuracy.metric",
     "got 'top1_agreemnt' (did you mean 'top1_agreement'?)"),
    ("list-bad-entry", [("{metric: top1_agreement, min: 0.99}",
                         "[{metric: top1_agreement, min: 0.99}, {metric: cosine, min: 2}]")],
     "9:73", "budget.accuracy[1].min", "expected a number in [-1, 1] for cosine, got 2"),
    ("list-entry-typo", [("{metric: top1_agreement, min: 0.99}",
                          "[{metric: top1_agreement, min: 0.99}, "
                          "{metric: decision_agreement, min: 0.9, treshold: 0.7}]")],
     "9:90", "budget.accuracy[1].treshold", "unknown key 'treshold' (did you mean 'threshold'?)"),
    ("list-empty", [("{metric: top1_agreement, min: 0.99}", "[]")], "9:13", "budget.accuracy",
     "expected at least 1 item, got 0"),
    ("param-not-taken", [("min: 0.99}", "min: 0.99, k: 3}")], "9:49", "budget.accuracy.k",
     "metric top1_agreement takes no `k` (neighbour_agreement, recall_at_k do)"),
    ("max-abs-error-needs-max", [("metric: top1_agreement, min: 0.99", "metric: max_abs_error")], "9:13",
     "budget.accuracy.max", "missing required key for metric max_abs_error: the highest acceptable value"),
    ("cosine-min-range", [("metric: top1_agreement, min: 0.99", "metric: cosine_min, min: -1.5")], "9:39",
     "budget.accuracy.min", "expected a number in [-1, 1] for cosine_min, got -1.5"),
    ("threshold-type", [("metric: top1_agreement", "metric: decision_agreement, column: 1, threshold: high")],
     "9:64", "budget.accuracy.threshold", "expected a number, got 'high'"),
    ("k-zero", [("metric: top1_agreement", "metric: neighbour_agreement, k: 0")], "9:46", "budget.accuracy.k",
     "expected an integer >= 1, got 0"),
    # ... against the validation data
    ("auc-without-labels", [("metric: top1_agreement", "metric: auc, column: 1"),
                            ("validation: val.npz", "validation: calib.npz")],
     "13:15", "optimize.validation", "calib.npz has no `labels` array, which metric auc needs"),
    ("auc-labels-not-binary", [("metric: top1_agreement", "metric: auc, column: 1")], "9:22",
     "budget.accuracy.metric", "val.npz has labels 0, 1, 2, 3, 4, 5, ... (10 classes)"),
    ("auc-one-class", [("metric: top1_agreement", "metric: auc, column: 1"),
                       ("validation: val.npz", "validation: ones.npz")],
     "9:22", "budget.accuracy.metric", "ones.npz has only label 1"),
    ("neighbour-k-too-large", [("metric: top1_agreement", "metric: neighbour_agreement, k: 450")], "9:46",
     "budget.accuracy.k", "val.npz has 450"),
    ("recall-k-too-large", [("metric: top1_agreement", "metric: recall_at_k, k: 450")], "9:38",
     "budget.accuracy.k", "k = 450 needs more than 450 validation samples"),
    # ... against the model's outputs and the response
    ("output-unknown", [("min: 0.99}", "min: 0.99, output: logit}")], "9:57", "budget.accuracy.output",
     "no model output or response tensor 'logit' (did you mean 'logits'?)"),
    ("output-index", [("min: 0.99}", "min: 0.99, output: 1}")], "9:57", "budget.accuracy.output",
     "the model has 1 output, so output is 0..0, got 1"),
    ("output-strings", [("min: 0.99}", "min: 0.99, output: labels}")], "9:57", "budget.accuracy.output",
     "output 'labels' holds strings; top1_agreement compares numbers"),
    ("decision-needs-column", [("metric: top1_agreement", "metric: decision_agreement")], "9:22",
     "budget.accuracy.metric", "the model's first output 'logits' has 10 values per sample: name the "
                               "positive-class score with `column`"),
    ("column-range", [("metric: top1_agreement", "metric: decision_agreement, output: scores, column: 3")],
     "9:66", "budget.accuracy.column", "output 'scores' has 3 values per sample, so column is -3..2, got 3"),
]


def make_data_files(folder: Path) -> None:
    np.savez(folder / "renamed.npz", img=uint8_images(4, 8, 8))
    np.savez(folder / "shape.npz", image=uint8_images(4, 8, 9))
    np.savez(folder / "float.npz", image=np.zeros((4, 8, 8)))
    np.savez(folder / "objects.npz", image=np.array([[1], ["a"]], dtype=object))
    np.savez(folder / "labels3.npz", image=uint8_images(4, 8, 8), labels=np.arange(3))
    np.savez(folder / "labelsf.npz", image=uint8_images(4, 8, 8), labels=np.zeros(4, np.float32))
    np.savez(folder / "ones.npz", image=uint8_images(4, 8, 8), labels=np.ones(4, np.int64))


@pytest.mark.parametrize(("edits", "at", "key", "fragment"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_malformed_spec_is_one_located_error(
    workdir: Path, edits: list[tuple[str, str]], at: str, key: str, fragment: str
) -> None:
    make_data_files(workdir)
    path = write(workdir, BASE, *edits)
    errors = errors_of(path)
    assert len(errors) == 1, [str(e) for e in errors]
    (e,) = errors
    assert e.file == str(path)
    assert where(e) == (at, key)
    assert fragment in e.message
    assert str(e).startswith(f"{path}:{at} {key + ': ' if key else ''}")


def test_several_errors_are_reported_together_sorted_by_line(workdir: Path) -> None:
    path = write(workdir, BASE,
                 ("serving:", "servng:"),
                 ("target: x86", "target: x68"),
                 ("{k: 3}", "{k: 0}"),
                 ("name: digits", "name: Digits"),
                 ("  - normalize:", "  - normalise:"))
    errors = errors_of(path)
    assert [where(e) for e in errors] == [
        ("1:7", "name"), ("4:9", "target"), ("16:5", "preprocess[1].normalise"),
        ("20:15", "postprocess[1].topk.k"), ("22:1", "servng"),
    ]
    with pytest.raises(SpecErrors) as info:
        load_spec(path)
    assert str(info.value).splitlines() == [str(e) for e in errors]


# ---------------------------------------------------------------- every stage's problems in one run

BAD_MEAN = ("  - normalize: {mean: [0.5], std: [0.5]}", "  - normalize: {mean: [0.5, 0.5, 0.5], std: [0.5], axis: 0}")
MEAN_ERROR = ("16:23", "preprocess[1].normalize.mean",
              "expected 1 value or one per channel (axis 0 is of size 8), got 3")


def test_a_missing_model_does_not_hide_a_missing_calibration_file(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(workdir)
    errors = errors_of(write(workdir, BASE, ("model: digits.onnx", "model: digitz.onnx"),
                             ("calibration: calib.npz", "calibration: nope.npz")))
    assert [(*where(e), e.message) for e in errors] == [
        ("3:8", "model", "file not found: digitz.onnx"),
        ("12:16", "optimize.calibration", "file not found: nope.npz"),
    ]


def test_a_wrong_budget_does_not_hide_a_missing_model(workdir: Path) -> None:
    make_data_files(workdir)
    errors = errors_of(write(workdir, BASE, ("model: digits.onnx", "model: digitz.onnx"), ("min: 0.99", "min: 1.5"),
                             ("validation: val.npz", "validation: labels3.npz")))
    assert [where(e) for e in errors] == [("3:8", "model"), ("9:43", "budget.accuracy.min"),
                                          ("13:15", "optimize.validation")]
    assert "`labels` has 3 entries" in errors[2].message  # checked against the written inputs


def test_inputs_of_an_unusable_model_are_said_unknown_once(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(workdir)
    text = MINIMAL.replace("digits.onnx", "digitz.onnx") + "optimize: {calibration: digits.onnx, validation: val.npz}\n"
    errors = errors_of(write(workdir, text))
    assert [(*where(e), e.message) for e in errors] == [
        ("3:8", "model", "file not found: digitz.onnx; the spec lists no `inputs`, so the request inputs are the "
                         "model's: the arrays in optimize.calibration and optimize.validation are checked against "
                         "them once it loads"),
        ("5:25", "optimize.calibration", "digits.onnx is not an .npz archive (np.savez)"),
    ]
    # the model key itself wrong: said once, beside the schema's complaint
    errors = errors_of(write(workdir, text.replace("model: digitz.onnx", "model: [digits.onnx]")))
    assert [where(e) for e in errors] == [("3:8", "model"), ("3:8", "model"), ("5:25", "optimize.calibration")]
    assert sum("checked against them once it loads" in e.message for e in errors) == 1


def test_three_step_mistakes_in_one_run(workdir: Path) -> None:
    keep = ("  - softmax: {output: probabilities}", "  - softmax: {output: probabilities, keep: true}")
    errors = errors_of(write(workdir, BASE, BAD_MEAN, keep,
                             ("{k: 3}", "{k: 20}"),
                             ("serving:", "  - threshold: {input: logits, column: 12}\nserving:")))
    # labels (line 21) reads what the broken topk would have made: skipped, not reported
    assert [(*where(e), e.message) for e in errors] == [
        (*MEAN_ERROR,),
        ("20:15", "postprocess[1].topk.k", "k=20 is larger than the 10 classes of 'probabilities'"),
        ("22:40", "postprocess[3].threshold.column", "column 12 is out of range for the 10 columns of 'logits'"),
    ]


def test_a_broken_step_hides_only_what_depends_on_it(workdir: Path) -> None:
    # the layout after the broken normalize, and the model input it should make, are not reported
    (e,) = errors_of(write(workdir, BASE, BAD_MEAN, ("to: CHW}", "to: HWC}")))
    assert where(e) + (e.message,) == MEAN_ERROR
    (e,) = errors_of(write(workdir, BASE, ("{k: 3}", "{k: 3, input: scores}")))
    assert (*where(e), e.message) == ("20:25", "postprocess[1].topk.input",
                                      "no tensor named 'scores' here (have: probabilities)")


def test_a_bad_budget_output_and_a_bad_step_in_one_run(workdir: Path) -> None:
    errors = errors_of(write(workdir, BASE, ("metric: top1_agreement", "metric: decision_agreement"),
                             ("{k: 3}", "{k: 20}")))
    assert [(*where(e), e.message) for e in errors] == [
        ("9:22", "budget.accuracy.metric", "the model's first output 'logits' has 10 values per sample: name the "
                                           "positive-class score with `column`"),
        ("20:15", "postprocess[1].topk.k", "k=20 is larger than the 10 classes of 'probabilities'"),
    ]
    errors = errors_of(write(workdir, BASE, ("min: 0.99}", "min: 0.99, output: socres}"), BAD_MEAN))
    assert [(*where(e), e.message) for e in errors] == [
        ("9:57", "budget.accuracy.output", "no model output or response tensor 'socres' (did you mean 'scores'?)"),
        (*MEAN_ERROR,),
    ]


# ---------------------------------------------------------------- targets, budgets, serving

BUDGETS = """\
  accuracy:
    - {metric: top1_agreement, min: 0.99}
    - {metric: neighbour_agreement, min: 0.9}
    - {metric: decision_agreement, min: 0.95, output: scores, column: 0}
    - {metric: max_abs_error, max: 0.5, output: 0}
    - metric: cosine_min
      min: 0.9
"""


def test_several_accuracy_budgets_load_typed_with_defaults(workdir: Path) -> None:
    spec = load_spec(write(workdir, BASE, ("  accuracy: {metric: top1_agreement, min: 0.99}\n", BUDGETS))).spec
    top1, neighbour, decision, error, cos = spec.budget.accuracy
    assert top1 == AccuracyBudget("top1_agreement", 0.99, None)
    assert neighbour == AccuracyBudget("neighbour_agreement", 0.9, None, {"k": 1})
    assert decision == AccuracyBudget("decision_agreement", 0.95, None,
                                      {"output": "scores", "threshold": 0.5, "column": 0})
    assert (error.max, error.bound, error.output, error.params) == (0.5, 0.5, 0, {"output": 0})
    assert (cos.metric, cos.min, cos.output) == ("cosine_min", 0.9, None)
    assert [b.path for b in spec.budget.accuracy] == [("budget", "accuracy", i) for i in range(5)]
    assert spec.error((*decision.path, "column"), "x").line == 12  # later stages can point at a budget
    assert spec.data["budget"]["accuracy"][2] == {"metric": "decision_agreement", "min": 0.95,
                                                  "output": "scores", "threshold": 0.5, "column": 0}
    # the resolved data is a spec that loads to the same thing
    again = load_spec(write(workdir, yaml.safe_dump(dict(spec.data), sort_keys=False))).spec
    assert (again.budget, again.target, again.serving) == (spec.budget, spec.target, spec.serving)
    assert again.data == spec.data


def test_recall_at_k_defaults_to_ten_neighbours(workdir: Path) -> None:
    budgets = ("  accuracy:\n    - {metric: recall_at_k, min: 0.95}\n    - {metric: recall_at_k, k: 3, min: 0.9}\n"
               "    - {metric: spearman, min: 0.98}\n")
    spec = load_spec(write(workdir, BASE, ("  accuracy: {metric: top1_agreement, min: 0.99}\n", budgets))).spec
    ten, three, rank = spec.budget.accuracy
    assert ten == AccuracyBudget("recall_at_k", 0.95, None, {"k": 10})
    assert three == AccuracyBudget("recall_at_k", 0.9, None, {"k": 3})
    assert rank == AccuracyBudget("spearman", 0.98, None)


def test_several_budget_mistakes_are_reported_together(workdir: Path) -> None:
    text = BUDGETS.replace("min: 0.9}", "min: 0.9, k: 0, threshold: 1}").replace("max: 0.5", "min: 0.5")
    assert [(*where(e), e.message) for e in errors_of(write(workdir, BASE, (
        "  accuracy: {metric: top1_agreement, min: 0.99}\n", text)))] == [
        ("11:50", "budget.accuracy[1].k", "expected an integer >= 1, got 0"),
        ("11:53", "budget.accuracy[1].threshold", "metric neighbour_agreement takes no `threshold` "
                                                  "(decision_agreement does)"),
        ("13:7", "budget.accuracy[3].max", "missing required key for metric max_abs_error: the highest "
                                           "acceptable value"),
        ("13:36", "budget.accuracy[3].min", "metric max_abs_error takes `max`, not `min`"),
    ]


@pytest.mark.parametrize(("target", "expected"), [
    ("x86", Target("x86", None, "avx2", False)),
    ("arm", Target("arm", None, "arm64", False)),
    ("cuda", Target("cuda", None, None, True)),
    ("{hardware: x86, isa: avx512_vnni, threads: 4}", Target("x86", 4, "avx512_vnni", False)),
    ("{hardware: arm, isa: arm64_dotprod}", Target("arm", None, "arm64_dotprod", False)),
    ("{hardware: cuda, fp16: false}", Target("cuda", None, None, False)),
])
def test_targets_get_their_isa_and_precision(workdir: Path, target: str, expected: Target) -> None:
    spec = load_spec(write(workdir, MINIMAL.replace("target: x86", f"target: {target}"))).spec
    assert spec.target == expected


def test_isa_native_is_the_build_host(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    host = infc.spec.rules.host_hardware()
    native = MINIMAL.replace("target: x86", f"target: {{hardware: {host}, isa: native}}")
    spec = load_spec(write(workdir, native)).spec
    assert spec.target.isa == "native" and spec.data["target"]["isa"] == "native"
    other = "arm" if host == "x86" else "x86"
    monkeypatch.setattr(infc.spec.rules, "host_hardware", lambda: other)
    (e,) = errors_of(write(workdir, MINIMAL.replace("target: x86", f"target: {{hardware: {host}, isa: native}}")))
    assert where(e) == (f"4:{27 + len(host)}", "target.isa")
    assert e.message.startswith(f"isa native means the build host's, but the build host is {other} "
                                f"and the target {host}: name the isa")


def test_serving_pinned_is_what_the_spec_wrote(workdir: Path) -> None:
    spec = load_spec(write(workdir, MINIMAL + "serving: {max_queue: 64, timeout_ms: 500}\n")).spec
    assert spec.serving_pinned == {"max_queue", "timeout_ms"}
    assert spec.serving == ServingConfig(max_queue=64, timeout_ms=500.0)  # the rest: defaults


def test_inputs_must_match_the_model_without_preprocess(workdir: Path) -> None:
    text = MINIMAL + "inputs:\n  - {name: imag, dtype: float32, shape: [1, 8, 8]}\n"
    assert [(*where(e), e.message) for e in errors_of(write(workdir, text))] == [
        ("6:3", "inputs", "model input 'image' not listed; without preprocess every model input "
                          "is a request input"),
        ("6:12", "inputs[0].name", "the model has no input 'imag' (did you mean 'image'?); "
                                   "without preprocess, request inputs are the model's"),
    ]
    text = MINIMAL + "inputs:\n  - {name: image, dtype: uint8, shape: [8, 8]}\n"
    assert [where(e) + (e.message,) for e in errors_of(write(workdir, text))] == [
        ("6:26", "inputs[0].dtype", "the model takes float32 for 'image', got uint8 "
                                    "(without preprocess, requests go to the model as they are)"),
        ("6:40", "inputs[0].shape", "the model takes 'image' with shape (1, 8, 8) "
                                    "(batch dimension left out), got (8, 8)"),
    ]
    assert load_spec(write(workdir, MINIMAL + "inputs:\n  - {name: image, dtype: float32, shape: [1, 8, 8]}\n"))


@pytest.mark.parametrize(("content", "fragment", "at"), [
    (b"", "the spec is empty", "1:1"),
    (b"- name: digits\n", "expected a mapping, got a list", "1:1"),
    (b"# only a comment\n", "the spec is empty", "1:1"),
    (b"name: digits\nversion: \xff\n", "not UTF-8 text: byte 0xff", "2:10"),
    (b"name: \x07\n", "invalid YAML: special characters are not allowed", "1:7"),
    (b"a: 1\n---\nb: 2\n", "invalid YAML: expected a single document in the stream, but found another document", "2:1"),
    (b"a: &x [*x]\n", "an alias refers to a value that contains it", "1:4"),
])
def test_unparseable_files_are_located(workdir: Path, content: bytes, fragment: str, at: str) -> None:
    path = workdir / "spec.yaml"
    path.write_bytes(content)
    errors = errors_of(path)
    assert any(fragment in e.message and f"{e.line}:{e.col}" == at for e in errors), [str(e) for e in errors]


def test_unreadable_spec(tmp_path: Path) -> None:
    (e,) = errors_of(tmp_path / "absent.yaml")
    assert str(e) == f"{tmp_path / 'absent.yaml'}:1:1 cannot read the spec: No such file or directory"
    (e,) = errors_of(tmp_path)
    assert "cannot read the spec: Is a directory" in str(e)


def test_error_file_is_relative_under_the_working_directory(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(workdir, MINIMAL.replace("x86", "x68"))
    monkeypatch.chdir(workdir.parent)
    (e,) = errors_of(Path(workdir.name) / "spec.yaml")
    assert str(e).startswith(f"{workdir.name}/spec.yaml:4:9 target: ")


def test_pipeline_check_runs_whenever_the_model_loads(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[set[str]] = []

    def check(spec: Spec, signature: Any, skip: set[str]) -> Pipeline:
        calls.append(set(skip))
        empty = Dataflow((), (), ())
        return Pipeline(empty, empty, [spec.error(("preprocess", 2, "layout", "to"), "the model takes 1x8x8")])

    monkeypatch.setattr(infc.spec.loader, "check_pipeline", check)
    (e,) = errors_of(write(workdir, BASE))
    assert where(e) == ("17:28", "preprocess[2].layout.to") and calls == [set()]
    # a mistake elsewhere does not hide it
    errors = errors_of(write(workdir, BASE, ("target: x86", "target: x68")))
    assert [where(e) for e in errors] == [("4:9", "target"), ("17:28", "preprocess[2].layout.to")]
    # a step list the schema rejects is not checked again; the other stage is
    errors_of(write(workdir, BASE, ("{k: 3}", "{k: 0}")))
    assert calls[-1] == {"postprocess"}
    # without a model there is nothing to check the steps against
    errors_of(write(workdir, BASE, ("model: digits.onnx", "model: nope.onnx")))
    assert len(calls) == 3


# ---------------------------------------------------------------- a classifier's label output

TREE_SPEC = """\
name: tree
version: 0.1.0
model: tree.onnx
target: x86
budget:
  accuracy: {metric: top1_agreement, min: 0.95}
optimize: {validation: val.npz}
"""


def test_top1_agreement_on_an_integer_label_output_loads(tmp_path: Path) -> None:
    # skl2onnx's classifier: `label` (int64, one per sample) first, `probabilities` second
    shutil.copy(ROOT / "tests" / "models" / "tree.onnx", tmp_path / "tree.onnx")
    np.savez(tmp_path / "val.npz", X=np.zeros((8, 30), np.float32), labels=np.zeros(8, np.int64))
    spec = load_spec(write(tmp_path, TREE_SPEC)).spec
    assert spec.budget.accuracy == (AccuracyBudget("top1_agreement", 0.95, None),)
    assert load_spec(write(tmp_path, TREE_SPEC, ("min: 0.95}", "min: 0.95, output: label}")))
    assert load_spec(write(tmp_path, TREE_SPEC, ("metric: top1_agreement", "metric: accuracy")))


def test_top1_agreement_on_a_float_value_per_sample_is_refused(tmp_path: Path) -> None:
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["n", 1])
    y = onnx.helper.make_tensor_value_info("score", onnx.TensorProto.FLOAT, ["n", 1])
    graph = onnx.helper.make_graph([onnx.helper.make_node("Identity", ["x"], ["score"])], "g", [x], [y])
    onnx.save(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)]),
              tmp_path / "tree.onnx")
    np.savez(tmp_path / "val.npz", x=np.zeros((8, 1), np.float32))
    (e,) = errors_of(write(tmp_path, TREE_SPEC))
    assert where(e) == ("6:22", "budget.accuracy.metric")
    assert e.message == ("the model's first output 'score' has one float32 value per sample; top1_agreement "
                         "compares the highest-scoring class (for a single score use decision_agreement or auc); "
                         "name another with `output`")


# ---------------------------------------------------------------- no user mistake escapes as a traceback

@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("fuzz")
    for name in ("digits.onnx", "calib.npz", "val.npz"):
        shutil.copy(DIGITS / name, folder / name)
    return folder


def _outcome(path: Path) -> None:
    try:
        load_spec(path)
    except SpecErrors as e:
        assert e.errors and all(err.line >= 1 and err.col >= 1 and err.message for err in e.errors)


@settings(max_examples=60, deadline=None, database=None)
@given(st.data())
def test_mutated_text_only_ever_raises_spec_errors(fuzz_dir: Path, data: st.DataObject) -> None:
    text = BASE
    for _ in range(data.draw(st.integers(1, 3))):
        i = data.draw(st.integers(0, len(text) - 1))
        cut = data.draw(st.integers(0, 3))
        insert = data.draw(st.sampled_from(["", ":", "-", " ", "\n", "[", "{", "0", "x", "'", "&a", "*a", "!!"]))
        text = text[:i] + insert + text[i + cut:]
    path = fuzz_dir / "spec.yaml"
    path.write_text(text)
    _outcome(path)


_json = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 100) | st.floats(allow_nan=False, width=32)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)


def _paths(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [path]
    if isinstance(value, dict):
        out += [p for k, v in value.items() for p in _paths(v, (*path, k))]
    elif isinstance(value, list):
        out += [p for i, v in enumerate(value) for p in _paths(v, (*path, i))]
    return out


@settings(max_examples=80, deadline=None, database=None)
@given(st.data())
def test_any_value_anywhere_only_ever_raises_spec_errors(fuzz_dir: Path, data: st.DataObject) -> None:
    spec = yaml.safe_load(BASE)
    path = data.draw(st.sampled_from(_paths(spec)[1:]))
    parent = spec
    for part in path[:-1]:
        parent = parent[part]
    parent[path[-1]] = data.draw(_json)
    file = fuzz_dir / "spec.yaml"
    file.write_text(yaml.safe_dump(spec))
    _outcome(file)


# ---------------------------------------------------------------- hostile files: bounded, located, never a traceback

def _validate(path: Path) -> Any:
    import subprocess
    import sys
    return subprocess.run([sys.executable, "-m", "infc", "validate", str(path)], capture_output=True, text=True,
                          timeout=120)


def _bomb(levels: int) -> str:
    lines = [MINIMAL.rstrip("\n"), 'a0: &a0 ["lol"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, levels + 1)]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("levels", [7, 9])
def test_billion_laughs_is_one_located_error(workdir: Path, levels: int) -> None:
    path = write(workdir, _bomb(levels))
    (e,) = errors_of(path)
    assert str(e) == (f"{path}:7:10 a4[3][1][0][0]: alias *a1: aliases may expand to 10000 values in all, "
                      "these expand to more; write the values out")
    if levels == 9:
        done = _validate(path)
        assert done.returncode == 2 and done.stderr.strip().splitlines()[1:] == [str(e)], done.stderr


@pytest.mark.parametrize(("opened", "closed"), [("{a: ", "}"), ("[", "]")], ids=["mapping", "list"])
def test_nesting_10000_deep_is_one_located_error(workdir: Path, opened: str, closed: str) -> None:
    path = write(workdir, MINIMAL + "serving: " + opened * 10_000 + "1" + closed * 10_000 + "\n")
    (e,) = errors_of(path)
    assert (e.line, e.col, len(e.path), e.path[0]) == (5, 10 + len(opened) * 100, 101, "serving")
    assert e.message == "nested more than 100 levels deep (a spec nests about 6)"
    done = _validate(path)
    assert done.returncode == 2, done.stderr
    assert str(e) in done.stderr and "Traceback" not in done.stderr and "internal error" not in done.stderr


def test_a_spec_over_the_size_cap_is_refused_naming_its_size(workdir: Path) -> None:
    path = write(workdir, BASE + "#" * (MAX_SPEC_BYTES - len(BASE)) + "\n")
    (e,) = errors_of(path)
    assert str(e) == f"{path}:1:1 the spec is 1,048,577 bytes; a spec may be at most 1,048,576 bytes (1 MiB)"
    path.write_text(BASE + "#" * (MAX_SPEC_BYTES - len(BASE) - 1) + "\n")  # at the cap: read
    assert load_spec(path).spec.name == "digits"


def test_a_spec_reusing_a_step_s_parameters_through_an_alias_loads(workdir: Path) -> None:
    spec = load_spec(write(workdir, BASE, ("  - normalize: {mean: [0.5], std: [0.5]}\n",
                                           "  - normalize: &unit {mean: [0.5], std: [0.5]}\n"
                                           "  - normalize: *unit\n"))).spec
    assert [s.name for s in spec.preprocess] == ["to_float", "normalize", "normalize", "layout"]
    assert spec.preprocess[1].params == spec.preprocess[2].params and spec.preprocess[2].params["std"] == [0.5]
    assert spec.error(("preprocess", 2, "normalize", "std"), "m").line == line_of(workdir / "spec.yaml", "- normalize:")


def test_each_wrong_item_of_a_long_list_is_located(workdir: Path) -> None:
    names = [f"class{i}" for i in range(3000)]
    names[7], names[2500] = "7", "true"
    text = BASE.replace("  - labels: {names: [zero, one, two, three, four, five, six, seven, eight, nine]}\n",
                        "  - labels:\n      names:\n" + "".join(f"        - {n}\n" for n in names))
    errors = errors_of(write(workdir, text))
    label = line_of(workdir / "spec.yaml", "- labels:")
    assert [where(e) for e in errors[:2]] == [(f"{label + 9}:11", "postprocess[2].labels.names[7]"),
                                              (f"{label + 2502}:11", "postprocess[2].labels.names[2500]")]
    assert errors[0].message == "expected a string, got 7 (put it in quotes to make it a string)"


def test_problems_past_a_thousand_are_cut(workdir: Path) -> None:
    errors = errors_of(write(workdir, BASE, ("[zero, one, two, three, four, five, six, seven, eight, nine]",
                                             "[" + ", ".join(map(str, range(1500))) + "]")))
    assert len(errors) == 1001 and where(errors[0]) == ("1:1", "")
    assert errors[0].message == "more problems than the 1000 listed: the list stops here"


@pytest.mark.parametrize("kind", ["list", "mapping"])
def test_values_nested_to_the_limit_only_raise_spec_errors(fuzz_dir: Path, kind: str) -> None:
    """100 levels (the deepest read) in each section of the example: every reader of the data (schema,
    defaults, cross-checks, steps) gets through it without RecursionError."""
    for path in [("target",), ("inputs", 0, "shape"), ("budget", "accuracy"), ("optimize", "calibration"),
                 ("preprocess", 0), ("preprocess", 1, "normalize", "mean"), ("postprocess", 2, "labels", "names"),
                 ("serving", "max_batch_size")]:
        deep: Any = 1
        for _ in range(100 - len(path)):
            deep = [deep] if kind == "list" else {"a": deep}
        data = yaml.safe_load(BASE)
        parent = data
        for part in path[:-1]:
            parent = parent[part]
        parent[path[-1]] = deep
        file = fuzz_dir / "spec.yaml"
        file.write_text(yaml.safe_dump(data, default_flow_style=True, width=10_000))
        with pytest.raises(SpecErrors) as info:
            load_spec(file)
        assert not any("nested more than" in e.message for e in info.value.errors), path
        _outcome(file)


def test_deploy_loads_typed_with_defaults(workdir: Path) -> None:
    assert load_spec(write(workdir, MINIMAL)).spec.deploy == Deploy()
    digest = "python:3.11-slim@sha256:" + "ab" * 32
    text = MINIMAL + f"deploy: {{wheelhouse: true, base_image: '{digest}', replicas: {{min: 2, max: 8}}}}\n"
    spec = load_spec(write(workdir, text)).spec
    assert spec.deploy == Deploy(wheelhouse=True, base_image=digest, min_replicas=2, max_replicas=8)


def test_a_price_and_a_response_cache_load_typed(workdir: Path) -> None:
    spec = load_spec(write(workdir, MINIMAL + "deploy: {usd_per_hour: 0.34, vcpus: 8}\n"
                                    "serving: {cache: {max_entries: 100, ttl_s: 5}}\n")).spec
    assert (spec.deploy.usd_per_hour, spec.deploy.vcpus, spec.deploy.instance) == (0.34, 8, None)
    assert spec.serving.cache == CacheConfig(max_entries=100, ttl_s=5.0)
    assert spec.data["serving"]["cache"] == {"max_entries": 100, "ttl_s": 5, "max_bytes": 64 << 20,
                                             "max_entry_bytes": 1 << 20}
    plain = load_spec(write(workdir, MINIMAL + "deploy: {instance: n2-standard-4}\n")).spec
    assert plain.deploy.instance == "n2-standard-4" and plain.serving.cache is None
    assert "cache" not in plain.data["serving"]  # off by default: absent, as before the key existed


@pytest.mark.parametrize(("serving", "at", "message"), [
    ("{cache: {max_entries: 0}}", "serving.cache.max_entries", "1"),
    ("{cache: {ttl_s: -1}}", "serving.cache.ttl_s", "0"),
    ("{cache: {max_entry_bytes: 4096, max_bytes: 2048}}", "serving.cache.max_entry_bytes", "above max_bytes"),
    ("{cache: {max_entrys: 3}}", "serving.cache.max_entrys", "did you mean 'max_entries'?"),
    ("{cache: true}", "serving.cache", "mapping"),
])
def test_cache_mistakes_are_located(workdir: Path, serving: str, at: str, message: str) -> None:
    path = write(workdir, MINIMAL + f"serving: {serving}\n")
    (e,) = errors_of(path)
    assert where(e)[1] == at and where(e)[0].startswith(f"{line_of(path, 'serving:')}:")
    assert message in e.message


@pytest.mark.parametrize(("deploy", "at", "message"), [
    ("{base_image: 'python:3.11-slim'}", "deploy.base_image", "an image pinned by digest"),
    ("{memory: lots}", "deploy.memory", "a Kubernetes quantity"),
    ("{replicas: {min: 3, max: 2}}", "deploy.replicas.max", "replicas max (2) is below min (3)"),
    ("{wheelhous: true}", "deploy.wheelhous", "did you mean 'wheelhouse'?"),
    ("{usd_per_hour: 0.085, instance: c6i.large}", "deploy.instance", "not both"),
    ("{instance: c6i.large, vcpus: 4}", "deploy.vcpus", "vcpus goes with usd_per_hour"),
    ("{usd_per_hour: 0}", "deploy.usd_per_hour", "0"),
    ("{usd_per_hour: cheap}", "deploy.usd_per_hour", "number"),
    ("{instance: c9.huge}", "deploy.instance", "c6i.large"),
])
def test_deploy_mistakes_are_located(workdir: Path, deploy: str, at: str, message: str) -> None:
    path = write(workdir, MINIMAL + f"deploy: {deploy}\n")
    (e,) = errors_of(path)
    assert where(e)[1] == at and where(e)[0].startswith(f"{line_of(path, 'deploy:')}:")
    assert message in e.message


def test_monitor_loads_typed_with_defaults_and_stays_out_of_the_lock(workdir: Path) -> None:
    from infc.lock import current_inputs

    plain = load_spec(write(workdir, BASE)).spec
    assert plain.monitor == Monitor()
    text = BASE + "monitor: {inputs: [image], window: 500, sample_rate: 1, bins: 5, psi_warn: 0.2, psi_alert: 0.5}\n"
    spec = load_spec(write(workdir, text)).spec
    assert spec.monitor == Monitor(True, ("image",), 500, 1.0, 5, 0.2, 0.5)
    target = {"hardware": "x86", "isa": "avx2"}
    assert current_inputs(spec, target).spec == current_inputs(plain, target).spec


@pytest.mark.parametrize(("monitor", "at", "message"), [
    ("{sample_rate: 0}", "monitor.sample_rate", "expected a number > 0, got 0"),
    ("{sample_rate: 1.5}", "monitor.sample_rate", "expected a number <= 1, got 1.5"),
    ("{window: 10}", "monitor.window", "expected an integer >= 100, got 10"),
    ("{psi_warn: 0.3, psi_alert: 0.2}", "monitor.psi_alert", "psi_alert (0.2) must be above psi_warn (0.3)"),
    ("{inputs: [imgae]}", "monitor.inputs[0]", "the model has no input 'imgae' (did you mean 'image'?)"),
    ("{inputs: [image, image]}", "monitor.inputs[1]", "model input 'image' is listed twice"),
    ("{enabeld: false}", "monitor.enabeld", "did you mean 'enabled'?"),
])
def test_monitor_mistakes_are_located(workdir: Path, monitor: str, at: str, message: str) -> None:
    path = write(workdir, BASE + f"monitor: {monitor}\n")
    (e,) = errors_of(path)
    assert where(e)[1] == at and where(e)[0].startswith(f"{line_of(path, 'monitor:')}:")
    assert message in e.message


def test_a_monitor_asked_for_needs_data(workdir: Path) -> None:
    path = write(workdir, MINIMAL + "monitor: {window: 1000}\n")
    (e,) = errors_of(path)
    assert where(e) == (f"{line_of(path, 'monitor:')}:10", "monitor") and "optimize.calibration" in e.message
    assert load_spec(write(workdir, MINIMAL + "monitor: {enabled: false}\n")).spec.monitor.enabled is False
