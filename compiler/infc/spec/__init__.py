"""The spec stage: read a spec file once, check it against everything it names, and return the result.

`load_spec(path)` -> `CheckedSpec` (the typed `Spec`, the model and its signature,
the pre/post dataflows, the calibration and validation data), or `SpecErrors`
with every located problem. The modules, in the order a spec meets them:
`yaml` (parse with marks), `schema` + `validate` (the JSON Schema and its
messages), `rules` (rules between fields), `files` (the model and the arrays),
`dataflow` (the steps against the model), `budgets` (accuracy budgets),
`defaults` (the one place defaults are applied), `model` (the typed values),
`prepare` (build time: parameters computed from the calibration data).
"""

from .loader import MAX_SPEC_BYTES, load_spec
from .model import (
    AccuracyBudget,
    Budget,
    CheckedSpec,
    Deploy,
    LatencyBudget,
    Monitor,
    Optimize,
    RequestData,
    Spec,
    Step,
    Target,
)
from .prepare import prepare_spec
from .schema import schema

__all__ = [
    "Target", "LatencyBudget", "AccuracyBudget", "Budget", "Deploy", "Monitor", "Optimize", "Step", "Spec",
    "RequestData", "CheckedSpec", "schema", "load_spec", "prepare_spec", "MAX_SPEC_BYTES",
]
