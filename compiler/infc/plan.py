"""From a spec and its target, decide the passes and the run-time settings.

`infc plan SPEC` prints this without building. The plan is recorded in the
bundle's manifest, so a reader can see exactly what was done and why.
"""

from __future__ import annotations

import os
import platform
from dataclasses import asdict, dataclass, field
from typing import Any

import onnxruntime as ort

from .spec import Spec

__all__ = ["Candidate", "Plan", "make_plan", "host_hardware"]

_PROVIDERS = {"x86": "CPUExecutionProvider", "arm": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


def host_hardware() -> str:
    """What this machine is, in the spec's terms: x86, arm (or cuda when a GPU provider is usable)."""
    machine = platform.machine().lower()
    return "arm" if machine in ("aarch64", "arm64") else "x86"


def _host_matches(target: str) -> bool:
    if target == "cuda":
        return "CUDAExecutionProvider" in ort.get_available_providers()
    return host_hardware() == target


PassList = tuple[tuple[str, dict[str, Any]], ...]


@dataclass(frozen=True)
class Candidate:
    """One way to optimize the model: a name and its passes, in order."""

    name: str
    passes: PassList


@dataclass(frozen=True)
class Plan:
    """The candidate pass lists (one, unless `quantize: auto`) and the session settings to ship."""

    target: str
    host: str
    host_matches_target: bool
    provider: str
    candidates: tuple[Candidate, ...]
    session: dict[str, Any] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    @property
    def passes(self) -> PassList:
        """The passes of the first (for a fixed `quantize`, the only) candidate."""
        return self.candidates[0].passes

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["candidates"] = [{"name": c.name, "passes": [{"name": n, "params": p} for n, p in c.passes]}
                           for c in self.candidates]
        d["passes"] = d["candidates"][0]["passes"]
        return d


# quantize mode -> the passes it adds between normalize and fuse_graph
_QUANTIZE: dict[str, PassList] = {
    "none": (),
    "dynamic": (("quantize_dynamic", {"per_channel": True, "weight_type": "int8"}),),
    "static": (("quantize_static", {"method": "minmax", "per_channel": True}),),
    "fp16": (("convert_fp16", {}),),
}


def _candidate_modes(quantize: str, target: str) -> list[str]:
    if quantize != "auto":
        return [quantize]
    # fp32 first: it is the baseline every other candidate must beat
    return ["none", "fp16"] if target == "cuda" else ["none", "dynamic", "static"]


def make_plan(spec: Spec) -> Plan:
    """The plan for `spec` on its target (see ARCHITECTURE.md, step 2)."""
    target = spec.target.hardware
    provider = _PROVIDERS[target]
    matches = _host_matches(target)
    notes: list[str] = []
    fuse: PassList = ()
    if spec.optimize.fuse:
        # provider-specific fusions only where the build host can run that provider
        level = "extended" if matches else "basic"
        fuse = (("fuse_graph", {"level": level, "provider": provider if matches else "CPUExecutionProvider"}),)
        if not matches:
            notes.append(f"build host is {host_hardware()}, target is {target}: portable graph optimizations only")
    candidates = tuple(Candidate("fp32" if mode == "none" else mode, (("normalize", {}), *_QUANTIZE[mode], *fuse))
                       for mode in _candidate_modes(spec.optimize.quantize, target))
    threads = spec.target.threads or (os.cpu_count() or 1)
    session = {
        "providers": [provider] + (["CPUExecutionProvider"] if provider != "CPUExecutionProvider" else []),
        "graph_optimization_level": "all",
        "intra_op_num_threads": threads,
        "inter_op_num_threads": 1,
    }
    if not matches:
        notes.append("latency cannot be measured for this target on this host: latency budget not enforced")
    return Plan(target=target, host=host_hardware(), host_matches_target=matches, provider=provider,
                candidates=candidates, session=session, notes=tuple(notes))
