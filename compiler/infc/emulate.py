"""Run Python under a user-mode emulator, to reproduce another CPU's numerics on the build host.

An `Emulator` is the command that starts a python3.11 with the target's instruction set:

- `arm64(cpu)`: `qemu-aarch64 -cpu MODEL -L SYSROOT SYSROOT/usr/bin/python3.11`, importing the target's
  aarch64 wheels from a site folder (`target_site`);
- `x86_64(cpu)`: `qemu-x86_64 -cpu Haswell PYTHON`, the build's own interpreter and packages with an older
  x86-64's instruction set (AVX2, no AVX-512: TCG emulates no AVX-512 or VNNI).

Everything lives in the emulator folder (`INFC_EMULATOR_DIR`, default `~/.cache/infc/emulators/`), made by
`python -m infc.emulate setup` (see `infc.emulate_setup`). Latency under emulation says nothing about the
target: use it for numerics (accuracy, results), never for speed.

`python -m infc.emulate setup` | `site REQUIREMENTS` | `run [--cpu MODEL] SCRIPT ARGS...` (exit 2: not set up).
`run` uses the requirements.txt beside SCRIPT (a bundle's serve.py: the bundle's pins), else this build's pins.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .errors import InfcError
from .wheelhouse import platform_tags

__all__ = ["ARM64_PLATFORMS", "CPU_MODELS", "EMULATOR_DIR_ENV", "EmulationError", "Emulator", "EmulatorNotSetUp",
           "arm64", "download_wheels", "emulator_dir", "target_site", "x86_64"]

EMULATOR_DIR_ENV = "INFC_EMULATOR_DIR"
SETUP_COMMAND = "python -m infc.emulate setup"
CPU_MODELS = {"arm64": "cortex-a72", "arm64_dotprod": "neoverse-n1", "avx2": "Haswell"}
"""The qemu CPU model whose instruction set is a target ISA's: cortex-a72 has no dot-product extension,
neoverse-n1 has it (without i8mm); Haswell is AVX2 without AVX-512."""
ARM64_PLATFORMS = tuple(platform_tags("arm"))
"""The wheel platform tags an arm64 Debian 12 (glibc 2.36) python3.11 installs."""
PYTHON_VERSION = "3.11"


class EmulatorNotSetUp(InfcError):
    """The emulator folder lacks what a run needs; the message says how to set it up (exit 2)."""

    exit_code = 2


class EmulationError(InfcError):
    """A program under emulation failed or ran past its time; the message holds the end of its stderr."""

    exit_code = 1


def emulator_dir() -> Path:
    """The emulator folder: `$INFC_EMULATOR_DIR`, else `~/.cache/infc/emulators`."""
    configured = os.environ.get(EMULATOR_DIR_ENV)
    return Path(configured).expanduser() if configured else Path.home() / ".cache/infc/emulators"


def _need(path: Path, what: str) -> Path:
    if not path.exists():
        raise EmulatorNotSetUp(f"{what} not found: {path} (run `{SETUP_COMMAND}`, which makes it in "
                               f"${EMULATOR_DIR_ENV} or ~/.cache/infc/emulators)")
    return path


@dataclass(frozen=True)
class Emulator:
    """How to start python3.11 with a target's instruction set: `argv + [script, ...]`, with `env` added."""

    name: str
    """For people and reports: `qemu-aarch64 -cpu neoverse-n1`."""
    argv: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)

    def command(self, script: str | Path, args: Sequence[str] = ()) -> list[str]:
        return [*self.argv, str(script), *args]

    def environ(self) -> dict[str, str]:
        """The environment to run under: this one, without a QEMU_CPU or PYTHONPATH that would override ours."""
        base = {k: v for k, v in os.environ.items() if k not in ("QEMU_CPU", "PYTHONPATH", "PYTHONHOME")}
        return {**base, "PYTHONDONTWRITEBYTECODE": "1", **self.env}

    def run(self, script: str | Path, args: Sequence[str] = (), *, timeout: float, cwd: Path | None = None
            ) -> subprocess.CompletedProcess[str]:
        """Run `script` to its end; EmulationError (with its stderr's end) if it fails or runs past `timeout`."""
        try:
            done = subprocess.run(self.command(script, args), env=self.environ(), cwd=cwd, capture_output=True,
                                  text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            raise EmulationError(f"{self.name}: {script} ran past {timeout:g} s") from None
        if done.returncode != 0:
            raise EmulationError(f"{self.name}: {script} exited {done.returncode}: {done.stderr[-2000:].strip()}")
        return done


def arm64(cpu: str, site: Path | None, root: Path | None = None) -> Emulator:
    """python3.11 of the arm64 sysroot under `qemu-aarch64 -cpu CPU`, importing `site` (aarch64 wheels)."""
    root = root or emulator_dir()
    qemu = _need(root / "bin/qemu-aarch64", "qemu-aarch64")
    sysroot = root / "arm64-bookworm"
    _need(sysroot / "usr/bin/python3.11", "the arm64 sysroot's python3.11")
    env = {"PYTHONPATH": str(site)} if site is not None else {}
    return Emulator(f"qemu-aarch64 -cpu {cpu}",
                    (str(qemu), "-cpu", cpu, "-L", str(sysroot), str(sysroot / "usr/bin/python3.11")), env)


def x86_64(cpu: str = "Haswell", root: Path | None = None) -> Emulator:
    """This interpreter and its packages under `qemu-x86_64 -cpu CPU` (an older x86-64's instruction set)."""
    qemu = _need((root or emulator_dir()) / "bin/qemu-x86_64", "qemu-x86_64")
    # qemu runs the binary itself, not a venv's symlink to it: the venv's packages go on PYTHONPATH
    paths = [p for p in (sysconfig.get_path("purelib"), sysconfig.get_path("platlib"), *sys.path) if p]
    return Emulator(f"qemu-x86_64 -cpu {cpu}", (str(qemu), "-cpu", cpu, os.path.realpath(sys.executable)),
                    {"PYTHONPATH": os.pathsep.join(dict.fromkeys(paths))})


def _pip() -> list[str]:
    return [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]


def _platform_args(platforms: Sequence[str]) -> list[str]:
    return [a for p in platforms for a in ("--platform", p)] + [
        "--python-version", PYTHON_VERSION, "--implementation", "cp", "--only-binary=:all:", "--no-deps"]


def download_wheels(requirements: Path, platforms: Sequence[str], dest: Path) -> None:
    """Every pinned requirement's wheel for `platforms` (and python 3.11) into `dest`, by pip's cross-platform
    download: the pins are the whole closure (`infc.pins`), so no dependency is resolved here. The one place
    that fetches target wheels (a bundle's wheelhouse can stand in for it)."""
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [*_pip(), "download", *_platform_args(platforms), "-d", str(dest), "-r", str(requirements)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise EmulationError(f"pip download for {', '.join(platforms)} failed: {done.stderr[-2000:].strip()}")


def target_site(requirements: str, platforms: Sequence[str] = ARM64_PLATFORMS, root: Path | None = None,
                wheels: Path | None = None) -> Path:
    """A site folder holding `requirements` (pinned requirements.txt text) installed for `platforms`: made once
    per requirements text and platform (cached in the emulator folder under `sites/`), then reused. `wheels`: a
    bundle's wheelhouse (its requirements pin every wheel by hash), installed from with no download."""
    root = root or emulator_dir()
    key = hashlib.sha256("\n".join([*platforms, requirements]).encode()).hexdigest()[:16]
    site = root / "sites" / f"{platforms[0]}-{key}"
    if (site / ".complete").is_file():
        return site
    work = root / "sites" / f".{site.name}.part"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    req = work / "requirements.txt"
    req.write_text(requirements)
    if wheels is None:
        wheels = root / "wheels" / platforms[0]
        download_wheels(req, platforms, wheels)
    cmd = [*_pip(), "install", "--no-compile", "--no-index", "--find-links", str(wheels), *_platform_args(platforms),
           "--target", str(work / "site"), "-r", str(req)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise EmulationError(f"pip install --target for {platforms[0]} failed: {done.stderr[-2000:].strip()}")
    if sys.version_info[:2] == (3, 11):  # the same .pyc files the target's 3.11 writes, many times faster
        subprocess.run([sys.executable, "-m", "compileall", "-q", "-j0", str(work / "site")], check=False,
                       stdout=subprocess.DEVNULL)
    shutil.rmtree(site, ignore_errors=True)
    (work / "site").replace(site)
    (site / ".complete").write_text(requirements)
    shutil.rmtree(work)
    return site


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m infc.emulate setup | site REQUIREMENTS.txt | run [--cpu MODEL] SCRIPT [ARGS...]`."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        if args[:1] == ["setup"]:
            from .emulate_setup import setup

            setup(emulator_dir())
            return 0
        if args[:1] == ["site"] and len(args) == 2:
            print(target_site(Path(args[1]).read_text()))
            return 0
        if args[:1] == ["run"] and len(args) >= 2:
            cpu = CPU_MODELS["arm64"]
            if args[1] == "--cpu" and len(args) >= 4:
                cpu, args = args[2], args[2:]
            # a bundle's serve.py runs with the bundle's own pins; any other script with this build's
            beside = Path(args[1]).parent / "requirements.txt"
            if beside.is_file():
                requirements = beside.read_text()
            else:
                from .pins import pinned_requirements

                requirements = pinned_requirements("arm")
            arm64(cpu, None)  # set up? (before any wheel is downloaded)
            emulator = arm64(cpu, target_site(requirements))
            return subprocess.run(emulator.command(args[1], args[2:]), env=emulator.environ(), check=False).returncode
    except InfcError as e:
        print(f"infc.emulate: {e}", file=sys.stderr)
        return e.exit_code
    print(main.__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
