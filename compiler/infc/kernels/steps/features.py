"""Tabular requests into vectors: features (JSON rows -> named float32 columns) and one_hot.

`features` reads a BYTES tensor with one JSON object per row (request shape
[N]) and selects and orders the named fields into a float32 vector; how each
JSON value becomes a number, and which values fail the request (HTTP 400
naming the row and the field), is `infc_runtime.rows`. It also names the
columns of a numeric tensor [F] (a request that is already a matrix), so
later steps can refer to them by name. JSON parsing is plain Python, not Numba.

`one_hot` replaces a column of category codes (from a `category` field or a
`categorical` step) with one column per category; an unknown or missing
value gives all zeros, or a 1 in an extra last slot with `unknown: slot`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from infc_runtime.rows import KINDS, Field, parse_row
from infc_runtime.types import TensorSpec

from ..columns import Columns, columns_of, field_ref, require_rows, select
from ..registry import StepDef, register
from ..types import NUMERIC, EmitContext, ModuleText, ResolvedStep, StepIssue

Array = npt.NDArray[Any]
Out = tuple[tuple[TensorSpec, ...], dict[str, Any]]

_field = {
    "oneOf": [
        {"type": "string", "minLength": 1, "description": "a float32 field, required"},
        {"type": "object", "required": ["name"], "additionalProperties": False, "properties": {
            "name": {"type": "string", "minLength": 1},
            "dtype": {"enum": list(KINDS), "description": "how the JSON value is read (default float32)"},
            "required": {"type": "boolean", "description": "missing -> 400 (true) or NaN (false)"},
            "categories": {"type": "array", "minItems": 1, "items": {"type": ["string", "integer"]},
                           "description": "dtype category: the mapping table, value -> its index"},
            "unknown": {"enum": ["code", "error"],
                        "description": "dtype category: an unknown value is code -1 (default) or a 400"},
        }},
    ],
}


# -- features -----------------------------------------------------------------
def _fields(p: Mapping[str, Any]) -> list[Field]:
    """The spec's field list as runtime `Field`s; StepIssues for inconsistent declarations."""
    default_required = bool(p.get("required", True))
    out: list[Field] = []
    seen: set[str] = set()
    for item in p["fields"]:
        d = {"name": item} if isinstance(item, str) else dict(item)
        name = d["name"]
        if name in seen:
            raise StepIssue(f"field {name!r} is listed twice", "fields")
        seen.add(name)
        cats = d.get("categories")
        kind = d.get("dtype", "category" if cats is not None else "float32")
        if kind == "category":
            if cats is None:
                raise StepIssue(f"field {name!r} is a category: give its `categories` (the mapping table)",
                                "fields")
            if len({type(c) for c in cats}) > 1:
                raise StepIssue(f"field {name!r}: categories must be all strings or all integers, "
                                f"got {cats}", "fields")
            if len(set(cats)) != len(cats):
                raise StepIssue(f"field {name!r}: categories must be distinct, got {cats}", "fields")
        elif cats is not None or "unknown" in d:
            raise StepIssue(f"field {name!r} is {kind}: `categories` and `unknown` belong to dtype category",
                            "fields")
        out.append(Field(name, kind, bool(d.get("required", default_required)), tuple(cats or ()),
                         d.get("unknown") == "error"))
    return out


def _features_infer(t: TensorSpec, p: Mapping[str, Any], out: str, others: Mapping[str, TensorSpec]) -> Out:
    fields = _fields(p)
    names = tuple(f.name for f in fields)
    tables = tuple(f.categories for f in fields)
    if t.dtype == "bytes":
        if t.shape:
            raise StepIssue(f"features reads one JSON object per row: input {t.name!r} must have shape [] "
                            f"(request shape [N]), got {list(t.shape)}")
        return (Columns(out, "float32", (len(fields),), names, tables),), {"json": True, "source": t.name}
    if t.dtype not in NUMERIC or len(t.shape) != 1:
        raise StepIssue(f"features reads JSON rows (a bytes tensor) or names the columns of a numeric "
                        f"vector; got {t.dtype} tensor {t.name!r} of shape {list(t.shape)}")
    if t.shape[0] >= 0 and t.shape[0] != len(fields):
        raise StepIssue(f"tensor {t.name!r} has {t.shape[0]} columns, but {len(fields)} fields are listed",
                        "fields")
    if any(f.kind == "category" for f in fields):
        raise StepIssue("category fields are read from JSON rows; map numeric codes with `categorical`", "fields")
    return (Columns(out, "float32", (len(fields),), names),), {"json": False}


def _features_ref(x: Array, p: Mapping[str, Any]) -> tuple[Array, ...]:
    """Each row parsed on its own, each field converted on its own (the kernel batches this)."""
    fields = _fields(p)
    if x.dtype != object:
        return (x.astype(np.float32),)
    source = p.get("source", "rows")
    out = np.empty((len(x), len(fields)), np.float32)
    for i, raw in enumerate(x.reshape(-1)):
        row = parse_row(raw, f"{source}[{i}]")
        for j, f in enumerate(fields):
            with np.errstate(over="ignore"):
                out[i, j] = f.convert(row.get(f.name), f"{source}[{i}]")  # absent and null: missing
    return (out,)


def _example(fields: list[Field]) -> bytes:
    """A row every field accepts: 0 / false / the first category."""
    values = {f.name: (f.categories[0] if f.kind == "category" else False if f.kind == "bool" else 0)
              for f in fields}
    return json.dumps(values, separators=(",", ":")).encode()


def _field_code(f: Field) -> str:
    args = [repr(f.name)]
    if f.kind != "float32" or not f.required or f.categories:
        args += [repr(f.kind), repr(f.required)]
    if f.categories:
        args.append(repr(f.categories))
    if f.unknown_error:
        args.append("unknown_error=True")
    return f"Field({', '.join(args)})"


def _features_emit(text: ModuleText, step: ResolvedStep, ctx: EmitContext) -> None:
    dst = step.outputs[0].name
    if not step.extra["json"]:
        text.call(ctx, "as_float32", outputs=[dst])
        return
    fields = _fields(step.params)
    lines = "".join(f"\n    {_field_code(f)}," for f in fields)
    text.imports.append("from infc_runtime.rows import Field")
    const = text.constant(f"FIELDS_{ctx.group}", f"({lines}\n)")
    text.examples[ctx.src] = _example(fields)
    text.call(ctx, "decode_rows", const, repr(ctx.src), outputs=[dst], module="infc_runtime.rows")


register(StepDef("features", ("pre",), "JSON rows (one object per row) -> a float32 vector of the named fields",
                 _features_infer, _features_ref, emit=_features_emit, default_output="features",
                 params={"fields": {"type": "array", "items": _field, "minItems": 1,
                                    "description": "the fields, in vector order: a name, or "
                                                   "{name, dtype, required, categories, unknown}"},
                         "required": {"type": "boolean",
                                      "description": "default for fields that do not say (default true)"}},
                 required=("fields",)))


# -- one_hot ------------------------------------------------------------------
def _one_hot_infer(t: TensorSpec, p: Mapping[str, Any], out: str, others: Mapping[str, TensorSpec]) -> Out:
    require_rows(t, "one_hot")
    if len(t.shape) != 1 or t.shape[0] < 0:
        raise StepIssue(f"one_hot needs a vector of a fixed number of fields, got shape {list(t.shape)} "
                        f"for {t.name!r}")
    (col,) = select(t, [p["field"]], "field")
    table = t.table(col) if isinstance(t, Columns) else ()
    if not table:
        raise StepIssue(f"field {p['field']!r} holds no category codes: declare it `dtype: category` in "
                        "`features`, or map it with `categorical` first", "field")
    slot = p.get("unknown", "zeros") == "slot"
    spec = columns_of(t)
    label = spec.fields[col] if spec.fields else str(col)
    width = len(table) + slot
    names = [f"{label}={c}" for c in table] + ([f"{label}=<unknown>"] if slot else [])
    fields = (*spec.fields[:col], *names, *spec.fields[col + 1:]) if spec.fields else ()
    cats = list(spec.categories) or [()] * t.shape[0]
    cats[col:col + 1] = [()] * width
    shape = (t.shape[0] - 1 + width,)
    return (Columns(out, "float32", shape, fields, tuple(cats)),), {"column": col, "k": len(table), "slot": slot}


def _one_hot_ref(x: Array, p: Mapping[str, Any]) -> tuple[Array, ...]:
    col, k, slot = int(p["column"]), int(p["k"]), bool(p["slot"])
    x = x.astype(np.float32)
    code = x[:, col]
    known = (code >= 0) & (code < k) & (code == np.floor(code))
    hot = np.zeros((len(x), k + slot), np.float32)
    rows = np.arange(len(x))
    hot[rows[known], code[known].astype(np.int64)] = 1.0
    if slot:
        hot[~known, k] = 1.0
    return (np.concatenate([x[:, :col], hot, x[:, col + 1:]], axis=1),)


def _one_hot_emit(text: ModuleText, step: ResolvedStep, ctx: EmitContext) -> None:
    e = step.extra
    text.call(ctx, "one_hot", str(int(e["column"])), str(int(e["k"])), repr(bool(e["slot"])),
              outputs=[step.outputs[0].name])


register(StepDef("one_hot", ("pre",), "a field of category codes -> one column per category",
                 _one_hot_infer, _one_hot_ref, emit=_one_hot_emit, required=("field",),
                 params={"field": field_ref,
                         "unknown": {"enum": ["zeros", "slot"],
                                     "description": "unknown or missing: all zeros (default), or an extra slot"}}))
