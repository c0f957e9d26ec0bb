"""The catalogue of pre/post-processing steps a spec may name.

Every step is registered once, with the JSON Schema of its parameters; the spec
schema is built from this registry, so a spec that names an unknown step or a
bad parameter is rejected when it loads (with file:line:col), never later.
Registration validates eagerly: a malformed step definition fails at import.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["StepDef", "COMMON_PARAMS", "register", "get", "names", "params_schema"]

Stage = Literal["pre", "post"]

COMMON_PARAMS: dict[str, Any] = {
    "input": {"type": "string", "minLength": 1, "description": "tensor to read (default: the previous step's result)"},
    "output": {"type": "string", "minLength": 1, "description": "name of the result (default: per step)"},
    "keep": {"type": "boolean", "description": "keep the input tensor as well (post only)"},
}


@dataclass(frozen=True)
class StepDef:
    """One step of the catalogue: its name, where it may run, its parameters."""

    name: str
    stages: tuple[Stage, ...]
    summary: str
    params: Mapping[str, Any] = field(default_factory=dict)
    required: tuple[str, ...] = ()
    elementwise: bool = False
    """Per-element (or per-index) work that codegen may fuse with its neighbours."""


_REGISTRY: dict[str, StepDef] = {}


def register(step: StepDef) -> StepDef:
    """Add a step; a duplicate name, unknown stage or clash with common params is rejected now."""
    if step.name in _REGISTRY:
        raise ValueError(f"step {step.name!r} is registered twice")
    if not step.stages or any(s not in ("pre", "post") for s in step.stages):
        raise ValueError(f"step {step.name!r}: stages must be 'pre' and/or 'post', got {step.stages}")
    clash = set(step.params) & set(COMMON_PARAMS)
    if clash:
        raise ValueError(f"step {step.name!r}: parameters {sorted(clash)} are common to every step")
    missing = set(step.required) - set(step.params)
    if missing:
        raise ValueError(f"step {step.name!r}: required parameters {sorted(missing)} are not declared")
    _REGISTRY[step.name] = step
    return step


def get(name: str) -> StepDef:
    """The step called `name` (KeyError if none)."""
    return _REGISTRY[name]


def names(stage: Stage) -> list[str]:
    """Names of the steps allowed in `stage`, sorted."""
    return sorted(n for n, s in _REGISTRY.items() if stage in s.stages)


def params_schema(name: str) -> dict[str, Any]:
    """The JSON Schema of a step's parameter object (common parameters included)."""
    step = _REGISTRY[name]
    return {
        "type": "object",
        "description": step.summary,
        "properties": {**COMMON_PARAMS, **step.params},
        "required": list(step.required),
        "additionalProperties": False,
    }


_number_list = {"type": "array", "items": {"type": "number"}, "minItems": 1}
_positive_list = {"type": "array", "items": {"type": "number", "exclusiveMinimum": 0}, "minItems": 1}
_layout = {"type": "string", "pattern": "^[NCHWD]+$", "description": "axis letters, e.g. HWC"}

register(StepDef("to_float", ("pre",), "cast to float32 and multiply by `scale`",
                 {"scale": {"type": "number", "description": "factor, e.g. 0.00392156862745098 (1/255)"}},
                 elementwise=True))
register(StepDef("normalize", ("pre",), "(x - mean[c]) / std[c] along `axis` (the channel axis)",
                 {"mean": _number_list, "std": _positive_list,
                  "axis": {"type": "integer", "description": "channel axis of the request tensor, default -1"}},
                 required=("mean", "std"), elementwise=True))
register(StepDef("layout", ("pre",), "permute axes; letters in `to` but not in `from` become size-1 axes",
                 {"from": _layout, "to": _layout}, required=("from", "to"), elementwise=True))
register(StepDef("softmax", ("post",), "softmax over the last axis"))
register(StepDef("topk", ("post",), "the k largest values of the last axis: `scores` and `indices`",
                 {"k": {"type": "integer", "minimum": 1}}, required=("k",)))
register(StepDef("labels", ("post",), "map class indices to names (BYTES output)",
                 {"names": {"type": "array", "items": {"type": "string"}, "minItems": 1}},
                 required=("names",)))
register(StepDef("mean_pool", ("post",), "mean over the sequence axis (-2) of the rows where `mask` is non-zero",
                 {"mask": {"type": "string", "minLength": 1,
                           "description": "tensor of weights [.., S], e.g. the request's attention_mask"}},
                 required=("mask",)))
register(StepDef("l2_normalize", ("post",), "divide by the L2 norm of the last axis (zero rows stay zero)"))
