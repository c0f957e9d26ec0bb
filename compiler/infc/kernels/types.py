"""What the kernel catalogue, the dataflow resolver and the code generator share."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib.resources import files
from typing import Any

import jinja2

from infc_runtime.types import TensorSpec

__all__ = ["StepIssue", "ResolvedStep", "Dataflow", "ModuleText", "FuseState", "render", "literal",
           "NUMERIC", "INTEGER", "FLOAT", "check_axis", "require_numeric"]

NUMERIC = frozenset({"bool", "uint8", "int8", "uint16", "int16", "uint32", "int32", "uint64", "int64",
                     "float16", "float32", "float64"})
INTEGER = frozenset({"uint8", "int8", "uint16", "int16", "uint32", "int32", "uint64", "int64"})
FLOAT = frozenset({"float16", "float32", "float64"})


class StepIssue(Exception):
    """A problem with one step; `key` is the parameter it concerns (if any)."""

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


def check_axis(axis: int, rank: int) -> int:
    """`axis` made non-negative, or a StepIssue about the `axis` parameter."""
    if not -rank <= axis < rank:
        raise StepIssue(f"axis {axis} is out of range for a tensor of rank {rank}", "axis")
    return axis % rank


def require_numeric(t: TensorSpec) -> None:
    if t.dtype not in NUMERIC:
        raise StepIssue(f"expected a numeric tensor, got {t.dtype} tensor {t.name!r}")


@dataclass(frozen=True)
class ResolvedStep:
    """A step with its tensors: what it reads, what it writes, its parameters."""

    index: int
    name: str
    params: Mapping[str, Any]
    input: TensorSpec
    outputs: tuple[TensorSpec, ...]
    keep: bool = False
    extra: Mapping[str, Any] = field(default_factory=dict)
    """Facts inferred for codegen, e.g. the normalized channel axis."""


@dataclass(frozen=True)
class Dataflow:
    """The resolved steps of one stage and the tensors it ends with."""

    steps: tuple[ResolvedStep, ...]
    start: tuple[TensorSpec, ...]
    end: tuple[TensorSpec, ...]


@dataclass
class ModuleText:
    """The pieces of a generated module before they are joined."""

    imports: list[str] = field(default_factory=list)
    """Extra import lines (e.g. a runtime helper that a non-Numba step calls)."""
    constants: list[str] = field(default_factory=list)
    functions: list[str] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)
    step_lines: list[str] = field(default_factory=list)
    examples: dict[str, bytes] = field(default_factory=dict)
    """One valid element per BYTES request input, for warm-up (the module's `EXAMPLES`)."""


@dataclass
class FuseState:
    """One fused per-element loop being built: the value flows through `body`, written at `axes`."""

    group: int
    axes: list[str]
    """Index expression of each current axis (loop variables, or "0" for an added axis)."""
    src_axes: list[int | None]
    """The input axis behind each current axis (None: an added size-1 axis)."""
    body: list[str] = field(default_factory=list)
    args: list[str] = field(default_factory=list)
    constants: list[str] = field(default_factory=list)


@cache
def _env() -> jinja2.Environment:
    root = files("infc.templates").joinpath("kernels")
    return jinja2.Environment(loader=jinja2.FileSystemLoader(str(root)), trim_blocks=True, lstrip_blocks=True,
                              keep_trailing_newline=False, undefined=jinja2.StrictUndefined, autoescape=False)


def render(template: str, **values: Any) -> str:
    """Render one of templates/kernels/."""
    return _env().get_template(template).render(**values).rstrip("\n")


def literal(x: float) -> str:
    """A float literal that round-trips exactly."""
    return repr(float(x))
