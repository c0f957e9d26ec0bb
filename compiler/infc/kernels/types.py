"""What the kernel catalogue, the dataflow resolver and the code generator share."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from infc_runtime.types import TensorSpec

from ..templating import environment

__all__ = ["StepIssue", "ResolvedStep", "Dataflow", "ModuleText", "EmitContext", "FuseState", "Ix", "Line", "Stage",
           "Inner", "OPS", "render", "literal", "NUMERIC", "INTEGER", "FLOAT", "check_axis", "require_numeric"]

NUMERIC = frozenset({"bool", "uint8", "int8", "uint16", "int16", "uint32", "int32", "uint64", "int64",
                     "float16", "float32", "float64"})
OPS = "infc_runtime.ops"
"""The runtime's library of fixed kernels, which generated modules call by name."""


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
    assets: dict[str, bytes] = field(default_factory=dict)
    """Files the module reads at run time, by path relative to it (`assets/...`): shipped beside it."""

    def call(self, ctx: EmitContext, op: str, *args: str, outputs: Sequence[str | None],
             module: str = OPS, first: str | None = None) -> None:
        """One call of `op` (imported by name from `module`, the runtime's ops library by default) on the
        step's input and `args` (expressions; `first` goes before the input); its results go to
        `outputs` (None: a result not kept)."""
        self.imports.append(f"from {module} import {op}")
        targets = ", ".join("_" if o is None else f"t[{o!r}]" for o in outputs)
        values = [*([first] if first is not None else []), ctx.source, *args]
        self.calls += [f"    # {ctx.doc}", f"    {targets} = {op}({', '.join(values)})"]

    def constant(self, name: str, expr: str) -> str:
        """A module constant `name = expr` (once); its name."""
        line = f"{name} = {expr}"
        if line not in self.constants:
            self.constants.append(line)
        return name

    def asset(self, name: str, data: bytes) -> str:
        """Ship `data` as `assets/<name>` beside the module; the expression of its path in the module.

        The module finds it relative to its own file, so the bundle can be copied anywhere.
        """
        if not name or "/" in name or name.startswith("."):
            raise ValueError(f"asset names are plain file names, got {name!r}")
        if not self.assets:
            self.imports.append("from pathlib import Path")
            self.constants.insert(0, 'ASSETS = Path(__file__).resolve().parent / "assets"  # shipped beside this file')
        self.assets[f"assets/{name}"] = data
        return f"ASSETS / {name!r}"


@dataclass(frozen=True)
class Ix:
    """An index expression inside a fused loop, and the loop variables it depends on."""

    text: str
    deps: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Line:
    """One statement of a fused loop. It is placed in the outermost loop where all of `deps`
    are defined (so a table lookup per output row runs once per row); `deps` None: the
    innermost loop (every per-element value statement)."""

    text: str
    deps: frozenset[str] | None = None


Inner = Callable[[list[Ix]], list[Line]]
"""Statements that leave in `v` the value of the previous stage at the given index."""
Stage = Callable[[list[Ix], Inner], list[Line]]
"""(index of this stage's output, the previous stage) -> statements leaving this stage's value in `v`."""


@dataclass(frozen=True)
class EmitContext:
    """Where a non-fused step's code goes: what codegen tells the step's `emit`."""

    fn: str
    """A name for the step's own module-level function or constant, unique in the module."""
    doc: str
    """The step and its place in the spec, for the comment above its call."""
    src: str
    """The tensor it reads."""
    keep: bool
    """Whether that tensor stays for later steps (else the call takes it out of the dict)."""
    group: int
    """The step's position among the module's kernels (names module constants)."""
    reader: tuple[ResolvedStep, ...] = ()
    """The fused group that reads the step's result next, if one does (see codegen's `_reader`)."""

    @property
    def source(self) -> str:
        """The expression of the input tensor in `run`."""
        return f"t.{'get' if self.keep else 'pop'}({self.src!r})"


@dataclass
class FuseState:
    """One fused loop being built, step by step; the loop runs over the group's OUTPUT indices.

    Code is generated backward: for each output element the last stage says which
    element(s) of its input it needs (a layout permutes the index, a crop offsets it,
    a bilinear resize needs four source elements), and so on back to the group's
    input array; the values then flow forward through every stage and are written
    once. Per-element steps add value statements with `values` (a function of the
    index of each current axis when they need it, e.g. the channel for a per-channel
    mean); steps that move or resample elements add a `stage` (or `reindex`) and
    set `sizes` for their output. See `kernels/fusion.py` for how the loop is laid out.
    """

    group: int
    sizes: list[str]
    """Size of each current axis: an integer literal, `x.shape[i]` or a size variable."""
    order: list[float | None]
    """Loop-nesting key of each current axis (the group input's axis it comes from; None: an added
    size-1 axis, which gets no loop). Loops nest in the input's axis order, so reads stay local."""
    stages: list[Stage] = field(default_factory=list)
    tables: dict[str, str] = field(default_factory=dict)
    """Constant arrays the loop reads: argument name (lower case) -> the expression of the module
    constant (its upper-case name)."""
    size_lines: list[str] = field(default_factory=list)
    """Python statements of the group's driver, before the loop runs: size variables and checks of
    the request's data (which raise RequestError)."""
    size_args: list[str] = field(default_factory=list)
    """Size variables the loop takes as arguments."""
    prologue: list[str] = field(default_factory=list)
    """Statements of the loop function before its loops (e.g. the sampling tables of a resize)."""
    imports: set[str] = field(default_factory=set)
    """Ops the loop calls (e.g. `linear_taps`), imported by name from the runtime's ops library."""
    gathers: bool = False
    """Whether the loop reads its input at positions it looks up (a resize's tables): such a loop
    vectorizes only as a prange loop (see kernels/fusion.py, `parallel`)."""
    counter: int = 0

    def fresh(self, prefix: str) -> str:
        """A variable name not used elsewhere in this group."""
        self.counter += 1
        return f"{prefix}_{self.counter}"

    def table(self, name: str, expr: str) -> str:
        """A constant array the loop reads as `name` (the module constant `NAME = expr`); its name."""
        self.tables[name] = expr
        return name

    def stage(self, stage: Stage) -> None:
        """Add a stage that computes its output from its input (see `Stage`)."""
        self.stages.append(stage)

    def reindex(self, index: Callable[[list[Ix]], list[Ix]]) -> None:
        """Add a stage that only moves elements: its input index, from its output index."""
        self.stage(lambda idx, inner: inner(index(idx)))

    def values(self, lines: Sequence[str] | Callable[[list[str]], Sequence[str]]) -> None:
        """Add value statements (they read and replace `v`, innermost loop): fixed lines, or a function
        of the index expression of each current axis that returns them."""
        make = lines if callable(lines) else (lambda axes: lines)

        def stage(idx: list[Ix], inner: Inner) -> list[Line]:
            return [*inner(idx), *(Line(line) for line in make([ix.text for ix in idx]))]

        self.stage(stage)

    def size_var(self, prefix: str, expr: str) -> str:
        """A size computed by the driver from the input's shape, passed to the loop."""
        name = self.fresh(prefix)
        self.size_lines.append(f"{name} = {expr}")
        self.size_args.append(name)
        return name

    def check(self, failed: str, message: str) -> None:
        """Driver check of the request's data: when `failed` holds, raise RequestError(f`message`)."""
        self.size_lines += [f"if {failed}:", f"    raise RequestError(f{message!r})"]


def render(template: str, **values: Any) -> str:
    """Render one of templates/kernels/ (the module, a fused loop) without its trailing newlines."""
    return environment("kernels").get_template(template).render(**values).rstrip("\n")


def literal(x: float) -> str:
    """A float literal that round-trips exactly."""
    return repr(float(x))
