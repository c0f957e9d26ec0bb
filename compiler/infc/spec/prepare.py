"""Build time: fill in step parameters computed from the calibration data.

A step whose definition has a `prepare` hook and whose parameters say
`from: calibration` (e.g. `standardize`) gets its values here, before code
generation: the steps before it run as their numpy references over the
calibration requests (read when the spec loaded), and the hook turns the
step's input into parameters (`{from: calibration}` -> `{mean: [...], std: [...]}`).
The returned checked spec holds the resolved parameters (so the bundle's
spec.yaml says what it uses) and the pre dataflow resolved with them; a record
per prepared step goes into the manifest.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from ..errors import SpecErrors
from ..kernels.graph import resolve
from ..kernels.reference import run_reference
from ..kernels.registry import get, needs_data, params_schema
from ..kernels.types import StepIssue

if TYPE_CHECKING:
    from .model import CheckedSpec

__all__ = ["prepare_spec", "steps_needing_data"]


def steps_needing_data(raw_steps: Any) -> list[tuple[int, str]]:
    """(index, step name) of the items of a raw spec step list that need calibration data."""
    found = []
    for i, item in enumerate(raw_steps if isinstance(raw_steps, list) else []):
        if isinstance(item, dict) and len(item) == 1:
            (name, params), = item.items()
            if isinstance(params, dict) and params.get("from") == "calibration":
                try:
                    if needs_data(name, params):
                        found.append((i, name))
                except KeyError:  # an unknown step: the schema reports it
                    pass
    return found


def prepare_spec(checked: CheckedSpec) -> tuple[CheckedSpec, list[dict[str, Any]]]:
    """`checked` with its `from: calibration` pre steps resolved (and its pre dataflow with them),
    and what was computed; `checked` itself when no step needs data.

    A request the references reject (a bad row in the data) is a located SpecError.
    """
    spec = checked.spec
    steps: list[tuple[str, Mapping[str, Any]]] = [(s.name, s.params) for s in spec.preprocess]
    todo = [i for i, (name, params) in enumerate(steps) if needs_data(name, params)]
    if not todo:
        return checked, []
    if checked.calibration is None:  # the spec's checks say so first; kept for direct callers
        i = todo[0]
        raise SpecErrors([spec.error((*spec.preprocess[i].path, steps[i][0], "from"),
                                     "from: calibration needs optimize.calibration")])
    data = checked.calibration.requests

    def fail(j: int, issue: StepIssue) -> None:
        raise SpecErrors([spec.error((*spec.preprocess[j].path, steps[j][0]), str(issue))])

    records: list[dict[str, Any]] = []
    for i in todo:
        name, params = steps[i]
        where = (*spec.preprocess[i].path, name, "from")
        flow = resolve(steps[:i + 1], list(spec.inputs), fail)
        step = flow.steps[-1]
        try:
            live = run_reference(steps[:i], dict(data))
            hook = get(name).prepare
            assert hook is not None
            computed = hook({**params, **step.extra}, live[step.input.name])
        except (ValueError, KeyError) as exc:
            raise SpecErrors([spec.error(where, f"cannot compute {name} from the calibration data: {exc}")]) \
                from None
        known = params_schema(name)["properties"]
        resolved = {k: v for k, v in computed.items() if k in known and k != "from"}
        steps[i] = (name, resolved)
        records.append({"step": f"preprocess[{i}]", "name": name, "from": "calibration",
                        "rows": checked.calibration.samples, "params": resolved})
    pre = tuple(dataclasses.replace(s, params=MappingProxyType(dict(p))) for s, (_, p) in
                zip(spec.preprocess, steps, strict=True))
    data_out = dict(spec.data)
    data_out["preprocess"] = [{name: dict(p)} for name, p in steps]
    prepared = dataclasses.replace(spec, preprocess=pre, data=data_out)
    # the one dataflow the filled-in parameters change
    flow = resolve([(s.name, s.params) for s in pre], list(spec.inputs), fail)
    return dataclasses.replace(checked, spec=prepared, pre=flow), records
