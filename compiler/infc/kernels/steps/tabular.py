"""Per-element tabular steps: fill_missing, standardize, clip, log1p, categorical.

Each acts on the columns (the last axis) of a numeric tensor, usually the
float32 vector `features` makes, and casts to float32 first; `fields` (names
or column indices) limits a step to some columns. They fuse with each other
into one njit loop. NaN and inf are handled explicitly:

- `fill_missing` replaces NaN (a missing field), and +-inf too with `infinite: true`;
- `standardize` and `log1p` carry NaN and inf through (log1p(-1) = -inf, log1p(x < -1) = NaN);
- `clip` keeps NaN and clips +-inf to its bounds;
- `categorical` keeps NaN (missing) and maps a value outside its table to -1 (unknown).

`standardize: {from: calibration}` computes mean and std at build time from
the step's input over the calibration data (its `prepare` hook).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from infc_runtime.types import TensorSpec

from ..columns import Columns, columns_of, field_ref, require_rows, select
from ..registry import StepDef, register
from ..types import FuseState, ResolvedStep, StepIssue

Array = npt.NDArray[Any]
Out = tuple[tuple[TensorSpec, ...], dict[str, Any]]

_fields = {"type": "array", "items": field_ref, "minItems": 1,
           "description": "the fields (names, or column indices) the step applies to; default: all"}
_numbers = {"type": "array", "items": {"type": "number"}, "minItems": 1,
            "description": "one value for every field, or one per field"}
_bound = {"oneOf": [{"type": "number"}, _numbers]}


# -- shared parts -------------------------------------------------------------
def _selected(t: TensorSpec, p: Mapping[str, Any], step: str) -> tuple[list[int] | None, int]:
    """The columns a step applies to (None: all) and how many there are (-1: any number)."""
    require_rows(t, step)
    if "fields" not in p:
        return None, t.shape[-1]
    cols = select(t, p["fields"], "fields")
    return cols, len(cols)


def _values(p: Mapping[str, Any], key: str, count: int, *, finite: bool = True) -> list[float]:
    """Parameter `key` as a list: one value for every selected column, or one each."""
    values = _list(p, key)
    if len(values) != 1 and len(values) != count:
        what = "any number of columns" if count < 0 else f"{count} columns"
        raise StepIssue(f"expected 1 value or one per column ({what}), got {len(values)}", key)
    if finite and not all(math.isfinite(v) for v in values):
        raise StepIssue(f"expected finite numbers, got {p[key]}", key)
    return values


def _num(v: float) -> str:
    """A number for generated code (inf and NaN spelled as numpy names)."""
    if math.isnan(v):
        return "np.nan"
    if math.isinf(v):
        return "-np.inf" if v < 0 else "np.inf"
    return repr(float(v))


def _list(p: Mapping[str, Any], key: str) -> list[float]:
    raw = p[key]
    return [float(v) for v in (raw if isinstance(raw, list) else [raw])]


Code = Callable[[str], str]
"""Code for a value that may differ per column, from the expression of the column index."""
Lines = Callable[[str], list[str]]
"""A step's value statements, from the expression of the column index."""


def _per_column(state: FuseState, step: ResolvedStep, key: str, values: Sequence[float], filler: float) -> Code:
    """This column's value of `key`: a literal when there is one value, else a constant array read at the column."""
    if len(values) == 1:
        one = f"np.float32({_num(values[0])})"
        return lambda col: one
    cols = step.extra["columns"] or range(len(values))
    full = [filler] * step.input.shape[-1]
    for c, v in zip(cols, values, strict=True):
        full[c] = v
    items = ", ".join(_num(v) for v in full)
    name = state.table(f"{key}_{state.group}_{step.index}", f"np.array([{items}], dtype=np.float32)")
    return lambda col: f"{name}[{col}]"


def _emit(state: FuseState, step: ResolvedStep, lines: Lines) -> None:
    """Add a step's lines to the loop, under a column test when it applies to some columns only."""
    cast = ["v = np.float32(v)"] if step.input.dtype != "float32" else []
    cols: list[int] | None = step.extra["columns"]
    width = step.input.shape[-1]
    if cols is None or sorted(cols) == list(range(width)):
        state.values(lambda axes: [*cast, *lines(axes[-1])])
        return
    if len(cols) == 1:
        test: Code = lambda col: f"if {col} == {cols[0]}:"  # noqa: E731
    else:
        mask = [c in cols for c in range(width)]
        name = state.table(f"sel_{state.group}_{step.index}", f"np.array({mask!r}, dtype=np.bool_)")
        test = lambda col: f"if {name}[{col}]:"  # noqa: E731
    state.values(lambda axes: [*cast, test(axes[-1]), *(f"    {line}" for line in lines(axes[-1]))])


def _apply(x: Array, p: Mapping[str, Any], fn: Callable[[Array], Array]) -> tuple[Array, ...]:
    """Reference: float32 `x` with `fn` applied to the selected columns."""
    y = x.astype(np.float32)
    cols = p.get("columns")
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        if cols is None:
            return (np.asarray(fn(y), np.float32),)
        y[..., cols] = fn(y[..., cols])
    return (y,)


def _column(values: Sequence[float]) -> Array:
    return np.asarray(values, np.float32)


# -- fill_missing ---------------------------------------------------------------
def _fill_infer(t: TensorSpec, p: Mapping[str, Any], out: str, others: Mapping[str, TensorSpec]) -> Out:
    cols, count = _selected(t, p, "fill_missing")
    _values(p, "value", count)
    return (columns_of(t, out),), {"columns": cols}


def _fill_ref(x: Array, p: Mapping[str, Any]) -> tuple[Array, ...]:
    value = _column(_list(p, "value"))
    missing: Callable[[Array], Array] = (lambda v: ~np.isfinite(v)) if p.get("infinite") else np.isnan
    return _apply(x, p, lambda v: np.where(missing(v), value, v))


def _fill_fuse(state: FuseState, step: ResolvedStep) -> None:
    value = _per_column(state, step, "fill", _list(step.params, "value"), math.nan)
    missing = "not np.isfinite(v)" if step.params.get("infinite") else "np.isnan(v)"
    _emit(state, step, lambda col: [f"if {missing}:", f"    v = {value(col)}"])


register(StepDef("fill_missing", ("pre",), "replace NaN (a missing field) by `value`; +-inf too with `infinite`",
                 _fill_infer, _fill_ref, fuse=_fill_fuse, required=("value",),
                 params={"value": _bound, "infinite": {"type": "boolean", "description": "also replace +-inf"},
                         "fields": _fields}))


# -- standardize --------------------------------------------------------------
def _standardize_infer(t: TensorSpec, p: Mapping[str, Any], out: str, others: Mapping[str, TensorSpec]) -> Out:
    cols, count = _selected(t, p, "standardize")
    given = [k for k in ("mean", "std") if k in p]
    if "from" in p and given:
        raise StepIssue(f"give mean and std, or `from: calibration`, not both ({given[0]} is given)", given[0])
    if "from" not in p:
        if len(given) < 2:
            missing = "std" if given == ["mean"] else "mean"
            raise StepIssue(f"expected mean and std (or `from: calibration`); {missing} is missing")
        _values(p, "mean", count)
        if any(v <= 0 for v in _values(p, "std", count)):
            raise StepIssue(f"expected standard deviations > 0, got {p['std']}", "std")
    return (columns_of(t, out),), {"columns": cols}


def _standardize_ref(x: Array, p: Mapping[str, Any]) -> tuple[Array, ...]:
    mean, std = _column(p["mean"]), _column(p["std"])
    return _apply(x, p, lambda v: (v - mean) / std)


def _standardize_fuse(state: FuseState, step: ResolvedStep) -> None:
    if "mean" not in step.params:
        raise ValueError("standardize from: calibration must be prepared (infc.spec.prepare) before codegen")
    mean = _per_column(state, step, "mean", step.params["mean"], 0.0)
    std = _per_column(state, step, "std", step.params["std"], 1.0)
    _emit(state, step, lambda col: [f"v = (v - {mean(col)}) / {std(col)}"])


def _standardize_prepare(p: Mapping[str, Any], x: Array) -> dict[str, Any]:
    """mean and std of each selected column over the finite calibration values.

    A column with no finite value gets mean 0, std 1; a constant column std 1
    (it is centred, not scaled: dividing by 0 would make inf).
    """
    values = np.asarray(x, np.float64).reshape(-1, x.shape[-1])
    cols = p.get("columns")
    if cols is not None:
        values = values[:, cols]
    finite = np.isfinite(values)
    count = finite.sum(axis=0)
    safe = np.where(finite, values, 0.0)
    mean = np.where(count > 0, safe.sum(axis=0) / np.maximum(count, 1), 0.0)
    var = np.where(finite, (values - mean) ** 2, 0.0).sum(axis=0) / np.maximum(count, 1)
    std = np.sqrt(var)
    std = np.where((count > 0) & (std > 0) & np.isfinite(std), std, 1.0)
    return {**p, "mean": [float(f"{m:.9g}") for m in mean], "std": [float(f"{s:.9g}") for s in std]}


register(StepDef("standardize", ("pre",), "(x - mean) / std per field; mean/std given, or `from: calibration`",
                 _standardize_infer, _standardize_ref, fuse=_standardize_fuse, prepare=_standardize_prepare,
                 params={"mean": _numbers, "std": {**_numbers, "items": {"type": "number", "exclusiveMinimum": 0}},
                         "from": {"enum": ["calibration"],
                                  "description": "compute mean and std from optimize.calibration at build time"},
                         "fields": _fields}))


# -- clip ---------------------------------------------------------------------
def _clip_infer(t: TensorSpec, p: Mapping[str, Any], out: str, others: Mapping[str, TensorSpec]) -> Out:
    cols, count = _selected(t, p, "clip")
    if "min" not in p and "max" not in p:
        raise StepIssue("expected min, max or both")
    low = _values(p, "min", count, finite=False) if "min" in p else None
    high = _values(p, "max", count, finite=False) if "max" in p else None
    if low and high:
        n = max(len(low), len(high))
        pairs = zip(low * n if len(low) == 1 else low, high * n if len(high) == 1 else high, strict=True)
        if any(lo > hi for lo, hi in pairs):
            raise StepIssue(f"min {p['min']} is above max {p['max']}", "min")
    return (columns_of(t, out),), {"columns": cols}


def _clip_ref(x: Array, p: Mapping[str, Any]) -> tuple[Array, ...]:
    low = _column(_list(p, "min")) if "min" in p else None
    high = _column(_list(p, "max")) if "max" in p else None
    return _apply(x, p, lambda v: np.clip(v, low, high))


def _clip_fuse(state: FuseState, step: ResolvedStep) -> None:
    bounds = {key: _per_column(state, step, key, _list(step.params, key), fill)
              for key, fill in (("min", -math.inf), ("max", math.inf)) if key in step.params}
    low, high = bounds.get("min"), bounds.get("max")

    def lines(col: str) -> list[str]:
        out = [f"if v < {low(col)}:", f"    v = {low(col)}"] if low is not None else []
        if high is not None:
            out += [f"{'el' if low is not None else ''}if v > {high(col)}:", f"    v = {high(col)}"]
        return out

    _emit(state, step, lines)


register(StepDef("clip", ("pre",), "limit each field to [min, max] (NaN stays NaN, +-inf is clipped)",
                 _clip_infer, _clip_ref, fuse=_clip_fuse,
                 params={"min": _bound, "max": _bound, "fields": _fields}))


# -- log1p --------------------------------------------------------------------
def _log1p_infer(t: TensorSpec, p: Mapping[str, Any], out: str, others: Mapping[str, TensorSpec]) -> Out:
    cols, _ = _selected(t, p, "log1p")
    return (columns_of(t, out),), {"columns": cols}


def _log1p_ref(x: Array, p: Mapping[str, Any]) -> tuple[Array, ...]:
    return _apply(x, p, np.log1p)


def _log1p_fuse(state: FuseState, step: ResolvedStep) -> None:
    _emit(state, step, lambda col: ["v = np.log1p(v)"])


register(StepDef("log1p", ("pre",), "log(1 + x) per field (-1 gives -inf, below -1 NaN)",
                 _log1p_infer, _log1p_ref, fuse=_log1p_fuse, params={"fields": _fields}))


# -- categorical --------------------------------------------------------------
def _categorical_infer(t: TensorSpec, p: Mapping[str, Any], out: str, others: Mapping[str, TensorSpec]) -> Out:
    require_rows(t, "categorical")
    (col,) = select(t, [p["field"]], "field")
    table = [float(c) for c in p["categories"]]
    as_f32 = [float(np.float32(c)) for c in table]
    if len(set(as_f32)) != len(as_f32) or not all(math.isfinite(c) for c in table):
        raise StepIssue(f"expected distinct finite numbers (as float32), got {p['categories']}", "categories")
    if isinstance(t, Columns) and t.table(col):
        raise StepIssue(f"field {p['field']!r} already holds category codes (from `features`)", "field")
    spec = columns_of(t, out)
    width = t.shape[-1]
    cats = list(spec.categories) or [()] * width
    cats[col] = tuple(p["categories"])
    return (Columns(out, "float32", t.shape, spec.fields, tuple(cats)),), {"columns": [col]}


def _categorical_ref(x: Array, p: Mapping[str, Any]) -> tuple[Array, ...]:
    table = _column(p["categories"])

    def codes(v: Array) -> Array:
        hit = v[..., None] == table
        code = np.where(hit.any(axis=-1), hit.argmax(axis=-1), -1).astype(np.float32)
        return np.where(np.isnan(v), v, code)
    return _apply(x, p, codes)


def _categorical_fuse(state: FuseState, step: ResolvedStep) -> None:
    items = ", ".join(repr(float(c)) for c in step.params["categories"])
    table = state.table(f"table_{state.group}_{step.index}", f"np.array([{items}], dtype=np.float32)")
    _emit(state, step, lambda col: ["if not np.isnan(v):",
                                    "    code = np.float32(-1.0)",
                                    f"    for k in range({table}.shape[0]):",
                                    f"        if v == {table}[k]:",
                                    "            code = np.float32(k)",
                                    "            break",
                                    "    v = code"])


register(StepDef("categorical", ("pre",), "a numeric field's value -> its index in `categories` (-1: unknown)",
                 _categorical_infer, _categorical_ref, fuse=_categorical_fuse, required=("field", "categories"),
                 params={"field": field_ref,
                         "categories": {"type": "array", "items": {"type": "number"}, "minItems": 1,
                                        "description": "the mapping table: value -> its index"}}))
