"""The spec stage: read a spec file once, check it against everything it names, and return the result.

`load_spec(path)` returns the typed `Spec`, or raises `SpecErrors` with every
located problem. The modules, in the order a spec meets them: `yaml` (parse
with marks), `schema` + `validate` (the JSON Schema and its messages), `files`
(the model and the arrays), `budgets` (accuracy budgets), `loader` (the checks
in order, and defaults).
"""

from .loader import (
    MAX_SPEC_BYTES,
    AccuracyBudget,
    Budget,
    LatencyBudget,
    Optimize,
    Spec,
    Step,
    Target,
    load_spec,
)
from .schema import schema

__all__ = [
    "Target", "LatencyBudget", "AccuracyBudget", "Budget", "Optimize", "Step", "Spec",
    "schema", "load_spec", "MAX_SPEC_BYTES",
]
