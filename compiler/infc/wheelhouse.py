"""A bundle's wheelhouse: every run-time wheel, for the target's platform, so it installs offline.

`fetch_wheelhouse(pins, target, roots)` runs pip's cross-platform download
(`sys.executable -m pip download --platform ... --python-version X.Y
--implementation cp --only-binary=:all:`) of the runtime's direct requirements
(`roots`) with every pin of `infc.pins` as a constraint: pip resolves the
closure for the target (its dependencies may differ from the build host's: a
host-only dependency is not fetched, a target-only one is, at the index's newest
version), at the versions the build measured with; `Wheelhouse.requirements`
then lists exactly the wheels it fetched,
each `name==version --hash=sha256:...`, so that `install.sh` installs them with
`pip install --no-index --find-links wheels/ --require-hashes`.

Platforms: `x86` and `cuda` are Linux x86_64, `arm` is Linux aarch64; the
manylinux tags pip may take run from glibc 2.17 (manylinux2014) to 2.28, and the
bundle states the newest glibc its wheels need (`Wheelhouse.glibc`). pip
evaluates environment markers other than the Python version against the build
host, not the target (a pip limitation): a dependency behind a
`platform_machine` marker is not resolved for the target.

A fetch that fails raises `WheelhouseError` (exit code 5): the index is
unreachable, or a pinned distribution has no wheel for the platform.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename

from .errors import WheelhouseError
from .pins import FAST_REQUIREMENTS, RUNTIME_REQUIREMENTS

__all__ = ["DOWNLOAD_TIMEOUT_S", "WHEELS", "Wheelhouse", "archive_platform", "fetch_wheelhouse", "platform_record",
           "platform_tags", "python_version", "roots", "target_machine"]

WHEELS = "wheels"
"""The bundle folder that holds the wheels."""
DOWNLOAD_TIMEOUT_S = 1800
"""The whole download (the aarch64 closure is ~100 MB; cuda's onnxruntime-gpu ~300 MB); pip's own socket timeout
is 30 s with 2 retries."""
_MACHINES = {"x86": "x86_64", "cuda": "x86_64", "arm": "aarch64"}
_GLIBC_MINORS = range(28, 16, -1)
"""manylinux_2_28 down to manylinux_2_17 (= manylinux2014): pip does not expand a `--platform` to older tags."""
_MANYLINUX = re.compile(r"manylinux_(\d+)_(\d+)_\w+|manylinux(2014|2010|1)_\w+")
_LEGACY_GLIBC = {"2014": (2, 17), "2010": (2, 12), "1": (2, 5)}


def target_machine(target: str) -> str:
    """The machine (`platform.machine()` on Linux) a target runs on: x86_64 or aarch64."""
    return _MACHINES[target]


def archive_platform(target: str) -> str:
    """The PLATFORM part of an archive's name: `linux_x86_64`, `linux_aarch64`."""
    return f"linux_{target_machine(target)}"


def python_version() -> str:
    """The build's Python, major.minor: the version the bundle's wheels and pins are for."""
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def platform_tags(target: str) -> list[str]:
    """The platform tags pip downloads wheels for, newest first."""
    machine = target_machine(target)
    return [*(f"manylinux_2_{minor}_{machine}" for minor in _GLIBC_MINORS), f"manylinux2014_{machine}"]


@dataclass(frozen=True)
class Wheelhouse:
    """Fetched wheels (bundle path `wheels/FILE` -> bytes) and the requirements.txt that pins them by hash."""

    wheels: Mapping[str, bytes]
    requirements: str
    glibc: str | None = None
    """The newest glibc (major.minor) one of the wheels needs; None when none is a manylinux wheel."""
    pinned: Mapping[str, str] = field(default_factory=dict)
    """Distribution (canonical name) -> version, as fetched."""

    def size(self) -> int:
        return sum(len(data) for data in self.wheels.values())


def platform_record(target: str, wheelhouse: Wheelhouse | None) -> dict[str, Any]:
    """The manifest's `platform`: the Python and platform the bundle's pins (and wheels) are for."""
    return {"python": python_version(), "implementation": "cp", "system": "Linux", "machine": target_machine(target),
            "tags": platform_tags(target), "glibc": wheelhouse.glibc if wheelhouse else None,
            "wheelhouse": wheelhouse is not None}


def roots(target: str, extra: Sequence[str] = ()) -> list[str]:
    """The distributions the runtime (and the bundle's steps, `extra`) import directly, as pinned for `target`."""
    names = [*RUNTIME_REQUIREMENTS, *FAST_REQUIREMENTS, *extra]
    return sorted({"onnxruntime-gpu" if n == "onnxruntime" and target == "cuda" else canonicalize_name(n)
                   for n in names})


def fetch_wheelhouse(pins: str, target: str, roots: Sequence[str] | None = None, *,
                     timeout: float = DOWNLOAD_TIMEOUT_S) -> Wheelhouse:
    """Download the wheels the pinned `roots` need on `target`'s platform, every pin in `pins` (requirements.txt
    text) a constraint (None: every pin is a root); WheelhouseError when the index cannot be reached or a wheel
    does not exist for the platform."""
    where = f"{archive_platform(target)}, Python {python_version()}"
    with tempfile.TemporaryDirectory(prefix="infc-wheels-") as tmp:
        folder = Path(tmp) / "wheels"
        requirements, constraints = Path(tmp) / "requirements.txt", Path(tmp) / "constraints.txt"
        constraints.write_text(pins)
        wanted = None if roots is None else {canonicalize_name(r) for r in roots}
        requirements.write_text("".join(line + "\n" for line in pins.splitlines()
                                        if line.strip() and not line.startswith("#")
                                        and (wanted is None or _name(line) in wanted)))
        command = [sys.executable, "-m", "pip", "download", "--dest", str(folder), "--only-binary=:all:",
                   "--implementation", "cp", "--python-version", python_version(),
                   *(arg for tag in platform_tags(target) for arg in ("--platform", tag)),
                   "--disable-pip-version-check", "--no-input", "--progress-bar", "off", "--timeout", "30",
                   "--retries", "2", "--log", str(Path(tmp) / "pip.log"),
                   *(["-c", str(constraints)] if roots is not None else []), "-r", str(requirements)]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            raise WheelhouseError(f"wheelhouse ({where}): pip download did not finish in {timeout:g} s "
                                  "(is the package index reachable?)") from None
        if done.returncode != 0:
            raise WheelhouseError(f"wheelhouse ({where}): {_pip_failure(done.stdout + done.stderr, Path(tmp))}")
        return _collect(folder, where)


def _name(line: str) -> str:
    """The canonical distribution name of a pin line (`name==version[; marker]`)."""
    return canonicalize_name(re.split(r"[=<>!~;\s\[]", line.strip(), maxsplit=1)[0])


def _unreachable(log: Path) -> str | None:
    """The index URL pip could not connect to, from its debug log (it says so at debug level only)."""
    try:
        with log.open(errors="replace") as lines:
            for line in lines:
                found = re.search(r"Could not fetch URL (\S+): connection error", line)
                if found:
                    return found[1]
    except OSError:
        pass
    return None


def _pip_failure(output: str, tmp: Path) -> str:
    """pip's reason, in one line: an unreachable index, no wheel for the platform, or pip's last error line."""
    url = _unreachable(tmp / "pip.log")
    if url is not None:
        return (f"the package index is unreachable (pip could not connect to {url.rstrip(':')}; see pip's "
                "configuration: PIP_INDEX_URL, pip.conf)")
    missing = re.search(r"No matching distribution found for (\S+)", output)
    if missing:
        return (f"no wheel of {missing[1]} for this platform on the package index (pip download "
                "--only-binary=:all:); pin a version that has one, or build without --wheelhouse")
    if "ResolutionImpossible" in output:  # with the pins as constraints, a missing wheel reads as a conflict
        causes = re.search(r"The conflict is caused by:\n((?:[ \t]+\S.*\n?)+)", output)
        why = "; ".join(line.strip() for line in causes[1].splitlines()) if causes else "no resolution"
        return (f"no set of wheels for this platform at the pinned versions (pip: {why[:300]}); pin versions "
                "that have wheels for it, or build without --wheelhouse")
    errors = [line.strip() for line in output.splitlines() if line.strip().startswith("ERROR")]
    last = errors[-1] if errors else (output.strip().splitlines() or ["pip download failed"])[-1]
    return f"pip download failed: {last[:300]}"


def _collect(folder: Path, where: str) -> Wheelhouse:
    wheels: dict[str, bytes] = {}
    pinned: dict[str, str] = {}
    lines = []
    glibc: tuple[int, int] | None = None
    for path in sorted(folder.iterdir()) if folder.is_dir() else []:
        try:
            name, version, _, tags = parse_wheel_filename(path.name)
        except InvalidWheelFilename:
            raise WheelhouseError(f"wheelhouse ({where}): pip downloaded {path.name}, not a wheel") from None
        data = path.read_bytes()
        wheels[f"{WHEELS}/{path.name}"] = data
        pinned[name] = str(version)
        lines.append(f"{name}=={version} --hash=sha256:{hashlib.sha256(data).hexdigest()}")
        needs = _glibc({t.platform for t in tags})
        if needs is not None and (glibc is None or needs > glibc):
            glibc = needs
    if not wheels:
        raise WheelhouseError(f"wheelhouse ({where}): pip downloaded no wheel")
    header = ("# run-time requirements: exactly the wheels in wheels/, pinned by sha256\n"
              "# (install.sh: pip install --no-index --find-links wheels/ --require-hashes -r requirements.txt)\n")
    return Wheelhouse(wheels, header + "\n".join(sorted(lines)) + "\n",
                      None if glibc is None else f"{glibc[0]}.{glibc[1]}", dict(sorted(pinned.items())))


def _glibc(platforms: set[str]) -> tuple[int, int] | None:
    """The oldest glibc a wheel's platform tags accept (None: not a manylinux wheel, e.g. `any`)."""
    versions = []
    for tag in platforms:
        found = _MANYLINUX.fullmatch(tag)
        if found and found[1]:
            versions.append((int(found[1]), int(found[2])))
        elif found:
            versions.append(_LEGACY_GLIBC[found[3]])
    return min(versions) if versions else None
