"""The rules that tie a spec's fields together, beyond what the JSON Schema can say.

Each returns `Finding`s; all are written to tolerate data the schema has rejected.
"""

from __future__ import annotations

import itertools
from typing import Any

from infc_runtime.types import CacheConfig

from ..isa import ISAS, NATIVE, host_hardware
from . import budgets
from .prepare import steps_needing_data
from .validate import Finding
from .yaml import KeyPath

__all__ = ["cross_checks", "mapping"]

_CACHE = CacheConfig()


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def mapping(v: Any) -> dict[str, Any]:
    """`v` when it is a mapping, else an empty one (for data the schema may have rejected)."""
    return v if isinstance(v, dict) else {}


def cross_checks(raw: dict[str, Any]) -> list[Finding]:
    """Rules between fields; written to tolerate data the schema has rejected."""
    out: list[Finding] = []
    opt, budget, target = mapping(raw.get("optimize")), mapping(raw.get("budget")), raw.get("target")
    hardware = mapping(target).get("hardware") if isinstance(target, dict) else target
    out += _target_checks(mapping(target), hardware)
    quantize = opt.get("quantize")
    q = ("optimize", "quantize")
    if quantize == "fp16" and hardware in ("x86", "arm"):
        out.append(Finding(q, f"fp16 needs target cuda, got {hardware} (on CPUs use dynamic or static)"))
    if quantize == "fp16" and hardware == "cuda" and mapping(target).get("fp16") is False:
        out.append(Finding(q, "quantize fp16 contradicts target.fp16: false"))
    if quantize in ("static", "auto") and "calibration" not in opt:
        out.append(Finding(q, f"quantize {quantize} needs optimize.calibration "
                              "(an .npz with an array per request input)"))
    if "calibration" not in opt:
        for i, step in steps_needing_data(raw.get("preprocess")):
            out.append(Finding(("preprocess", i, step, "from"), f"{step} from: calibration needs "
                               "optimize.calibration (an .npz with an array per request input)"))
    if quantize == "auto" and "accuracy" not in budget:
        out.append(Finding(q, "quantize auto needs budget.accuracy to choose between candidates"))

    deploy = mapping(raw.get("deploy"))
    if "usd_per_hour" in deploy and "instance" in deploy:
        out.append(Finding(("deploy", "instance"), "give a price as usd_per_hour or as an instance from infc's "
                                                   "table, not both", at_key=True))
    elif "vcpus" in deploy and "usd_per_hour" not in deploy:
        why = "the instance's come from infc's table" if "instance" in deploy else "it is the vCPUs usd_per_hour buys"
        out.append(Finding(("deploy", "vcpus"), f"vcpus goes with usd_per_hour ({why})", at_key=True))
    cache = mapping(mapping(raw.get("serving")).get("cache"))
    entry, total = cache.get("max_entry_bytes", _CACHE.max_entry_bytes), cache.get("max_bytes", _CACHE.max_bytes)
    if _number(entry) and _number(total) and entry > total:
        out.append(Finding(("serving", "cache", "max_entry_bytes" if "max_entry_bytes" in cache else "max_bytes"),
                           f"max_entry_bytes ({entry}) is above max_bytes ({total})"))

    replicas = mapping(deploy.get("replicas"))
    low, high = replicas.get("min", 1), replicas.get("max", 4)
    if _number(low) and _number(high) and low > high:
        out.append(Finding(("deploy", "replicas", "max" if "max" in replicas else "min"),
                           f"replicas max ({high}) is below min ({low})"))

    out += _monitor_checks(mapping(raw.get("monitor")), opt)

    accuracy = budget.get("accuracy")
    if budgets.written(accuracy):
        if "validation" not in opt:
            out.append(Finding(("budget", "accuracy"), "an accuracy budget needs optimize.validation "
                                                       "(an .npz with an array per request input)"))
        out += budgets.static_findings(accuracy)

    latency = mapping(budget.get("latency_ms"))
    given = [(p, latency[p]) for p in ("p50", "p95", "p99") if _number(latency.get(p))]
    for (p, low), (q_, high) in itertools.pairwise(given):
        if high < low:
            out.append(Finding(("budget", "latency_ms", q_), f"{q_} ({high}) is below {p} ({low})"))

    inputs = raw.get("inputs")
    seen: dict[str, int] = {}
    for i, t in enumerate(inputs if isinstance(inputs, list) else []):
        tensor_name = mapping(t).get("name")
        if isinstance(tensor_name, str) and tensor_name in seen:
            out.append(Finding(("inputs", i, "name"),
                               f"duplicate input name {tensor_name!r} (also inputs[{seen[tensor_name]}])"))
        elif isinstance(tensor_name, str):
            seen[tensor_name] = i
    return out


def _monitor_checks(monitor: dict[str, Any], opt: dict[str, Any]) -> list[Finding]:
    """psi_warn below psi_alert; a monitor asked for needs data to make its reference of; no input twice."""
    out: list[Finding] = []
    warn, alert = monitor.get("psi_warn", 0.1), monitor.get("psi_alert", 0.25)
    if _number(warn) and _number(alert) and warn >= alert:
        out.append(Finding(("monitor", "psi_alert" if "psi_alert" in monitor else "psi_warn"),
                           f"psi_alert ({alert}) must be above psi_warn ({warn})"))
    if monitor and monitor.get("enabled", True) is True and "calibration" not in opt and "validation" not in opt:
        out.append(Finding(("monitor",), "the drift indicators compare with a reference made of the spec's data: "
                                         "give optimize.calibration (or validation), or write `enabled: false`"))
    inputs = monitor.get("inputs")
    seen: set[Any] = set()
    for i, name in enumerate(inputs if isinstance(inputs, list) else []):
        if isinstance(name, str) and name in seen:
            out.append(Finding(("monitor", "inputs", i), f"model input {name!r} is listed twice"))
        seen.add(name if isinstance(name, str) else None)
    return out


def _target_checks(target: dict[str, Any], hardware: Any) -> list[Finding]:
    """`isa` must be one of the hardware's, `fp16` is for cuda."""
    if not isinstance(hardware, str) or hardware not in ISAS:
        return []  # the schema reports it
    out: list[Finding] = []
    isa, fp16 = target.get("isa"), target.get("fp16")
    owner = next((h for h, isas in ISAS.items() if isa in isas), None)
    here: KeyPath = ("target", "isa")
    if hardware == "cuda" and isinstance(isa, str):
        out.append(Finding(here, "a cuda target takes no isa (it names a CPU instruction set; "
                                 "fp16 chooses the GPU's precision)"))
    elif isa == NATIVE and host_hardware() != hardware:
        out.append(Finding(here, f"isa native means the build host's, but the build host is {host_hardware()} "
                                 f"and the target {hardware}: name the isa ({', '.join(ISAS[hardware])})"))
    elif owner is not None and owner != hardware:  # an isa that is no isa at all: the schema reports it
        out.append(Finding(here, f"isa {isa} is for {owner}, not {hardware}: {hardware} takes "
                                 f"{', '.join(ISAS[hardware])} or native"))
    if hardware != "cuda" and isinstance(fp16, bool):
        out.append(Finding(("target", "fp16"), f"fp16 is a cuda setting; an {hardware} target runs fp32 "
                                               "(or int8 with optimize.quantize)", at_key=True))
    return out
