"""The catalogue of pre/post-processing steps a spec may name.

A step is registered once with everything about it: the JSON Schema of its
parameters (the spec schema is built from this registry, so an unknown step or
a bad parameter is rejected when the spec loads, with file:line:col), its
shape/dtype rule, its numpy reference and how code is generated for it (a
per-element snippet that codegen fuses with its neighbours, or one call into
the runtime's ops library, `infc_runtime.ops`), and its hooks. Registration
validates eagerly: a malformed step fails at import. Steps live in `kernels/steps/`, one module per family.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy.typing as npt

from infc_runtime.types import TensorSpec

from .types import EmitContext, FuseState, ModuleText, ResolvedStep

__all__ = ["StepDef", "COMMON_PARAMS", "register", "get", "names", "params_schema", "all_steps", "needs_data"]

Stage = Literal["pre", "post"]
Rule = Callable[[TensorSpec, Mapping[str, Any], str, Mapping[str, TensorSpec]],
                tuple[tuple[TensorSpec, ...], dict[str, Any]]]
Reference = Callable[..., tuple[npt.NDArray[Any], ...]]
Fuse = Callable[[FuseState, ResolvedStep], None]
Emit = Callable[[ModuleText, ResolvedStep, EmitContext], None]
CheckClasses = Callable[[int, Mapping[str, Any], str], None]
ExampleSize = Callable[[tuple[int, int], Mapping[str, Any]], "tuple[int, int] | None"]
Prepare = Callable[[Mapping[str, Any], npt.NDArray[Any]], dict[str, Any]]

COMMON_PARAMS: dict[str, Any] = {
    "input": {"type": "string", "minLength": 1, "description": "tensor to read (default: the previous step's result)"},
    "output": {"type": "string", "minLength": 1, "description": "name of the result (default: per step)"},
    "keep": {"type": "boolean", "description": "keep the input tensor as well"},
}


@dataclass(frozen=True)
class StepDef:
    """One step of the catalogue."""

    name: str
    stages: tuple[Stage, ...]
    summary: str
    infer: Rule
    """(input spec, params, output name, other readable tensors) -> (output specs, facts for codegen);
    raises StepIssue."""
    reference: Reference
    """numpy meaning: (input array, params[, side tensors by param name]) -> outputs."""
    fuse: Fuse | None = None
    """Per-element steps: add to a fused loop (they fuse with their neighbours)."""
    emit: Emit | None = None
    """Other steps: add their call into the runtime's ops library to the module (`ModuleText.call`)."""
    params: Mapping[str, Any] = field(default_factory=dict)
    required: tuple[str, ...] = ()
    default_output: str | None = None
    """Name of the (first) result; None: the input's own name."""
    side: tuple[str, ...] = ()
    """Parameters that name another tensor the step reads (e.g. `mask`)."""
    consumes: tuple[str, ...] = ()
    """Those of `side` whose tensor the step uses up, as it does its input (unless `keep`): e.g. the
    `scores` beside the boxes that `nms` reads. The others stay available to later steps."""
    requires: tuple[str, ...] = ()
    """Run-time distributions the generated code imports beyond the runtime's (from pins.STEP_REQUIREMENTS):
    pinned into the requirements of bundles that use the step."""
    files: tuple[str, ...] = ()
    """Parameters that name a file, relative to the spec (the spec makes them absolute when it loads;
    a step ships what the generated code needs at run time with `ModuleText.asset`)."""
    prepare: Prepare | None = None
    """Build time, for parameters computed from data (`from: calibration`): (params, the step's
    input computed over the calibration requests) -> params with those values filled in and
    `from` removed. Called by `infc.spec.prepare` before code generation."""
    check_classes: CheckClasses | None = None
    """For a step that reads class indices (`labels`): (how many classes the step that made its input
    reports, params, the input's name) -> None, or a StepIssue when the params do not cover them.
    Called by `graph.resolve`."""
    example_size: ExampleSize | None = None
    """For an image step a decoded image may reach: ([h, w] a warm-up image needs so far, params) -> the
    size it needs for this step too, or None when this step makes its own size (a resize: what follows
    asks nothing of the image). Called by `decode` to make its warm-up example fit the steps after it."""

    @property
    def elementwise(self) -> bool:
        return self.fuse is not None


_REGISTRY: dict[str, StepDef] = {}


def register(step: StepDef) -> StepDef:
    """Add a step; anything malformed is rejected now, naming the step."""
    if step.name in _REGISTRY:
        raise ValueError(f"step {step.name!r} is registered twice")
    if not step.stages or any(s not in ("pre", "post") for s in step.stages):
        raise ValueError(f"step {step.name!r}: stages must be 'pre' and/or 'post', got {step.stages}")
    clash = set(step.params) & set(COMMON_PARAMS)
    if clash:
        raise ValueError(f"step {step.name!r}: parameters {sorted(clash)} are common to every step")
    missing = (set(step.required) | set(step.side)) - set(step.params)
    if missing:
        raise ValueError(f"step {step.name!r}: parameters {sorted(missing)} are not declared")
    if step.prepare is not None and "from" not in step.params:
        raise ValueError(f"step {step.name!r}: a step with `prepare` needs a `from` parameter")
    loose = (set(step.consumes) - set(step.side)) | (set(step.files) - set(step.params))
    if loose:
        raise ValueError(f"step {step.name!r}: `consumes` must name `side` parameters and `files` declared ones, "
                         f"got {sorted(loose)}")
    if (step.fuse is None) == (step.emit is None):
        raise ValueError(f"step {step.name!r}: give exactly one of `fuse` (per-element) or `emit`")
    _REGISTRY[step.name] = step
    return step


def _load() -> None:
    from . import steps  # noqa: F401  (registration happens at import)


def get(name: str) -> StepDef:
    """The step called `name` (KeyError if none)."""
    _load()
    return _REGISTRY[name]


def needs_data(name: str, params: Mapping[str, Any]) -> bool:
    """Whether step `name` with `params` is computed from the calibration data at build time."""
    step = get(name)
    return step.prepare is not None and params.get("from") == "calibration"


def all_steps() -> dict[str, StepDef]:
    _load()
    return dict(_REGISTRY)


def names(stage: Stage) -> list[str]:
    """Names of the steps allowed in `stage`, sorted."""
    _load()
    return sorted(n for n, s in _REGISTRY.items() if stage in s.stages)


def params_schema(name: str) -> dict[str, Any]:
    """The JSON Schema of a step's parameter object (common parameters included)."""
    step = get(name)
    return {
        "type": "object",
        "description": step.summary,
        "properties": {**COMMON_PARAMS, **step.params},
        "required": list(step.required),
        "additionalProperties": False,
    }
