"""Named columns of tabular tensors: which field each column of a row vector holds.

`features` names the columns of the vector it makes; later tabular steps refer
to them by name (or by index, for a tensor that arrived without names), and
`one_hot` needs to know which columns hold category codes and how many
categories each has. This travels through the dataflow as a `Columns` tensor
spec, so a wrong name is a located error at `infc validate` time.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from infc_runtime.types import TensorSpec

from .types import NUMERIC, StepIssue

__all__ = ["Columns", "columns_of", "field_ref", "require_rows", "select"]

field_ref: dict[str, Any] = {"type": ["string", "integer"], "description": "a field name, or a column index"}


@dataclass(frozen=True)
class Columns(TensorSpec):
    """A tensor whose last axis holds named fields; `categories[i]` is column i's table (() if none)."""

    fields: tuple[str, ...] = ()
    categories: tuple[tuple[Any, ...], ...] = ()

    def table(self, column: int) -> tuple[Any, ...]:
        return self.categories[column] if self.categories else ()


def columns_of(t: TensorSpec, out: str | None = None, dtype: str = "float32") -> Columns:
    """`t` as a `Columns` spec (unnamed columns when it has none), renamed to `out`, as `dtype`."""
    name = t.name if out is None else out
    if isinstance(t, Columns):
        return Columns(name, dtype, t.shape, t.fields, t.categories)
    return Columns(name, dtype, t.shape)


def require_rows(t: TensorSpec, step: str) -> None:
    """A numeric tensor with a column axis (its last)."""
    if t.dtype not in NUMERIC:
        raise StepIssue(f"{step} needs a numeric tensor (e.g. from `features`), got {t.dtype} tensor {t.name!r}")
    if not t.shape:
        raise StepIssue(f"tensor {t.name!r} is a scalar per row; {step} needs a vector of fields")


def select(t: TensorSpec, refs: Sequence[str | int], key: str) -> list[int]:
    """Column indices of field names or indices; a StepIssue about `key` for an unknown one."""
    cols = t.shape[-1]
    names = t.fields if isinstance(t, Columns) else ()
    out: list[int] = []
    for ref in refs:
        if isinstance(ref, int):
            if cols < 0:
                raise StepIssue(f"column {ref}: tensor {t.name!r} has a column axis of any size; "
                                "name fields only when their count is fixed", key)
            if not -cols <= ref < cols:
                raise StepIssue(f"column {ref} is out of range for the {cols} columns of {t.name!r}", key)
            index = ref % cols
        elif not names:
            raise StepIssue(f"field {ref!r}: tensor {t.name!r} has no named fields (name them with a "
                            "`features` step, or refer to columns by index)", key)
        elif ref not in names:
            close = difflib.get_close_matches(ref, names, n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise StepIssue(f"unknown field {ref!r}; {t.name!r} has {len(names)} fields{hint}", key)
        else:
            index = names.index(ref)
        if index in out:
            raise StepIssue(f"field {ref!r} is named twice", key)
        out.append(index)
    return out
