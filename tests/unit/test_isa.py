"""infc.isa: the host's instruction set from /proc/cpuinfo, and a target's isa resolved."""

from __future__ import annotations

import pytest

import infc.isa
from infc.isa import DEFAULT_ISA, ISAS, host_hardware, host_isa, resolve_isa
from infc.spec import Target

X86 = "processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu sse2 avx {extra}\nbogomips\t: 4890\n"
ARM = "processor\t: 0\nFeatures\t: fp asimd evtstrm {extra} cpuid\nCPU implementer\t: 0x41\n"


@pytest.mark.parametrize(("extra", "isa"), [
    ("avx2 fma", "avx2"),
    ("", "avx2"),
    ("avx2 avx512f avx512bw", "avx512"),
    ("avx2 avx512f avx512_vnni", "avx512_vnni"),
    ("avx2 avx512f avx512vnni", "avx512_vnni"),
    ("avx2 avx512f avx512_vnni amx_bf16 amx_tile amx_int8", "amx"),
])
def test_x86_host_isa_from_flags(extra: str, isa: str) -> None:
    assert host_isa(cpuinfo=X86.format(extra=extra), machine="x86_64") == isa


@pytest.mark.parametrize(("extra", "isa"), [("asimdrdm", "arm64"), ("asimdrdm asimddp sve", "arm64_dotprod")])
def test_arm_host_isa_from_features(extra: str, isa: str) -> None:
    assert host_isa(cpuinfo=ARM.format(extra=extra), machine="aarch64") == isa


def test_no_cpuinfo_means_the_baseline() -> None:
    assert host_isa(cpuinfo="", machine="x86_64") == "avx2"
    assert host_isa(cpuinfo="", machine="arm64") == "arm64"


def test_host_hardware_names() -> None:
    assert [host_hardware(m) for m in ("x86_64", "AMD64", "aarch64", "arm64")] == ["x86", "x86", "arm", "arm"]


def test_this_host_has_an_isa_of_its_hardware() -> None:
    assert host_isa() in ISAS[host_hardware()]


def test_resolve_isa() -> None:
    assert resolve_isa(Target("x86")) == DEFAULT_ISA["x86"] == "avx2"
    assert resolve_isa(Target("arm")) == "arm64"
    assert resolve_isa(Target("x86", isa="avx512_vnni")) == "avx512_vnni"
    assert resolve_isa(Target("cuda", fp16=True)) == "cuda"
    assert resolve_isa(Target(host_hardware(), isa="native")) == host_isa()


def test_native_on_other_hardware_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(infc.isa, "host_hardware", lambda machine=None: "arm")
    with pytest.raises(ValueError, match="isa native: the build host is arm, the target x86"):
        resolve_isa(Target("x86", isa="native"))
