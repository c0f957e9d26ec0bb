"""Instruction sets a CPU target may name, and what the build host has.

A spec's `target.isa` says which CPU features the bundle may rely on; the plan
picks quantization formats and optimization levels from it. `native` means "the
build host's", resolved here from /proc/cpuinfo.
"""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Protocol

__all__ = ["ISAS", "DEFAULT_ISA", "NATIVE", "host_cpu", "host_hardware", "host_isa", "resolve_isa"]

ISAS: dict[str, tuple[str, ...]] = {
    "x86": ("avx2", "avx512", "avx512_vnni", "amx"),
    "arm": ("arm64", "arm64_dotprod"),
    "cuda": (),
}
"""The instruction sets each hardware kind may name, weakest first."""

DEFAULT_ISA: dict[str, str] = {"x86": "avx2", "arm": "arm64"}
"""What a CPU target assumes when the spec names no isa: what every such machine has."""

NATIVE = "native"
"""`isa: native`: whatever the build host has."""

_CPUINFO = Path("/proc/cpuinfo")


class _Target(Protocol):
    @property
    def hardware(self) -> str: ...

    @property
    def isa(self) -> str | None: ...


def host_hardware(machine: str | None = None) -> str:
    """What this machine is, in the spec's terms: `x86` or `arm`."""
    machine = (machine if machine is not None else platform.machine()).lower()
    return "arm" if machine in ("aarch64", "arm64") or machine.startswith("armv8") else "x86"


def host_cpu() -> str:
    """The build host's CPU model, for people (`AMD EPYC 7B13`); the machine name when unknown."""
    try:
        cpuinfo = _CPUINFO.read_text(errors="replace")
    except OSError:
        cpuinfo = ""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("model name", "cpu model") and value.strip():
            return value.strip()
    return platform.processor() or platform.machine()


def _flags(cpuinfo: str) -> set[str]:
    """The CPU feature flags in /proc/cpuinfo text (`flags` on x86, `Features` on arm)."""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            return set(value.split())
    return set()


def host_isa(*, cpuinfo: str | None = None, machine: str | None = None) -> str:
    """The build host's instruction set, in the spec's terms.

    x86: `amx` (amx_tile), `avx512_vnni`, `avx512` (avx512f), else `avx2`.
    arm: `arm64_dotprod` (asimddp), else `arm64`. Without /proc/cpuinfo (not
    Linux) the hardware's baseline. `cpuinfo` and `machine` stand in for the
    host's in tests.
    """
    hardware = host_hardware(machine)
    if cpuinfo is None:
        try:
            cpuinfo = _CPUINFO.read_text(errors="replace")
        except OSError:
            cpuinfo = ""
    flags = _flags(cpuinfo)
    if hardware == "arm":
        return "arm64_dotprod" if "asimddp" in flags else "arm64"
    if "amx_tile" in flags:
        return "amx"
    if flags & {"avx512_vnni", "avx512vnni"}:
        return "avx512_vnni"
    return "avx512" if "avx512f" in flags else "avx2"


def resolve_isa(target: _Target) -> str:
    """The instruction set a target builds for: its `isa`, the default for its hardware,
    or with `native` the build host's. CUDA targets have no CPU isa: `cuda`.

    Raises ValueError for `native` when the build host is other hardware than the
    target (the spec loader reports that as a located error first).
    """
    if target.hardware == "cuda":
        return "cuda"
    if target.isa is None:
        return DEFAULT_ISA[target.hardware]
    if target.isa == NATIVE:
        if host_hardware() != target.hardware:
            raise ValueError(f"isa native: the build host is {host_hardware()}, the target {target.hardware}")
        return host_isa()
    return target.isa
