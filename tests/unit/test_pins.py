"""A bundle's requirements.txt: every line a pin pip reads, uvloop's skipped on Windows."""

from __future__ import annotations

from importlib import metadata

from packaging.markers import default_environment
from packaging.requirements import Requirement

from infc.pins import PLATFORM_MARKERS, pinned_requirements


def _requirements(target: str) -> dict[str, Requirement]:
    lines = [ln for ln in pinned_requirements(target).splitlines() if not ln.startswith("#")]
    reqs = [Requirement(ln) for ln in lines]  # what pip parses each line with
    return {r.name: r for r in reqs}


def test_every_line_is_an_exact_pin_and_only_uvloop_has_a_marker() -> None:
    reqs = _requirements("x86")
    assert "uvloop" in reqs  # installed in the test environment, so pinned (the server's fast path)
    for name, req in reqs.items():
        (spec,) = req.specifier
        assert spec.operator == "==" and spec.version == metadata.version(name)
        assert (str(req.marker) if req.marker else None) == PLATFORM_MARKERS.get(name), name


def test_uvloop_is_skipped_on_windows_only() -> None:
    uvloop = _requirements("x86")["uvloop"]
    assert uvloop.marker is not None
    here = {k: str(v) for k, v in default_environment().items()}
    assert not uvloop.marker.evaluate({**here, "sys_platform": "win32", "platform_system": "Windows"})
    for platform in ("linux", "darwin"):
        assert uvloop.marker.evaluate({**here, "sys_platform": platform})
    assert f"\nuvloop=={metadata.version('uvloop')}; sys_platform != \"win32\"\n" in pinned_requirements("x86")


def test_markers_name_canonical_distributions_and_parse() -> None:
    for name, marker in PLATFORM_MARKERS.items():
        req = Requirement(f"{name}==1; {marker}")
        assert req.name == name and str(req.marker) == marker
