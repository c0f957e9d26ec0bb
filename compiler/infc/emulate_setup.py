"""Set up the user-mode emulators a build uses to reproduce another CPU's numerics.

`python -m infc.emulate setup` makes, into the emulator folder (`INFC_EMULATOR_DIR`, default
`~/.cache/infc/emulators/`), and only what is missing:

- `bin/qemu-aarch64`, `bin/qemu-x86_64`: from Debian 13 (trixie) `qemu-user` (qemu 10; Debian 12's qemu 7.2
  passes the host's /proc/cpuinfo through and onnxruntime's CPU detection then crashes on import);
- `arm64-bookworm/`: an arm64 Debian 12 sysroot with python3.11, extracted only (no maintainer scripts, no
  binfmt), its standard library byte-compiled by the host's python3.11 (same magic; compiling under
  emulation is slow).

Both come from the Debian mirrors through `mmdebstrap` (installed with apt-get when missing; needs root).
Each step records its time and download size in `setup.json`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["SETUP_RECORD", "setup"]

SETUP_RECORD = "setup.json"
_TRIXIE = "deb http://deb.debian.org/debian trixie main"
_BOOKWORM = ("deb http://deb.debian.org/debian bookworm main",
             "deb http://deb.debian.org/debian-security bookworm-security main",
             "deb http://deb.debian.org/debian bookworm-updates main")
SYSROOT_PACKAGES = ("python3.11", "libstdc++6", "libgcc-s1", "libgomp1", "libffi8", "libssl3", "zlib1g")
"""What the bundle's server needs in the arm64 sysroot: the interpreter and the C/C++ run-time libraries that
the aarch64 wheels of onnxruntime, numpy, numba and cryptography link against."""


def _run(cmd: list[str], log: Callable[[str], None]) -> None:
    log("$ " + " ".join(cmd))
    subprocess.run(cmd, check=True)


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


def _debs(root: Path) -> tuple[int, int]:
    """(count, bytes) of the .deb files mmdebstrap downloaded into `root`; then removes them."""
    archives = root / "var/cache/apt/archives"
    debs = list(archives.glob("*.deb")) if archives.is_dir() else []
    total = sum(p.stat().st_size for p in debs)
    for p in debs:
        p.unlink()
    return len(debs), total


def _mmdebstrap(log: Callable[[str], None]) -> str:
    found = shutil.which("mmdebstrap")
    if found:
        return found
    if os.geteuid() != 0:
        raise RuntimeError("mmdebstrap is not installed and this is not root: `sudo apt-get install mmdebstrap`, "
                           "then run `python -m infc.emulate setup` again")
    _run(["apt-get", "update", "-qq"], log)
    _run(["apt-get", "install", "-y", "-q", "mmdebstrap"], log)
    return shutil.which("mmdebstrap") or "mmdebstrap"


def _extract(mmdebstrap: str, arch: str, suite: str, packages: tuple[str, ...], sources: tuple[str, ...],
             into: Path, log: Callable[[str], None]) -> tuple[int, int]:
    """Extract `packages` (and their dependencies) of Debian `suite` for `arch` into `into`: (debs, bytes)."""
    _run([mmdebstrap, "-q", "--mode=root", f"--arch={arch}", "--variant=extract",
          # keep the downloaded .debs until they are counted (_debs removes them)
          "--skip=download/empty", "--skip=cleanup/apt/cache", f"--include={','.join(packages)}",
          suite, str(into), *sources], log)
    return _debs(into)


def _qemu(root: Path, mmdebstrap: str, log: Callable[[str], None]) -> dict[str, Any]:
    bin_dir = root / "bin"
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        tree = Path(tmp) / "q"
        debs, size = _extract(mmdebstrap, "amd64", "trixie", ("qemu-user",), (_TRIXIE,), tree, log)
        bin_dir.mkdir(exist_ok=True)
        for name in ("qemu-aarch64", "qemu-x86_64"):
            shutil.copyfile(tree / "usr/bin" / name, bin_dir / (name + ".part"))
            (bin_dir / (name + ".part")).chmod(0o755)
            (bin_dir / (name + ".part")).replace(bin_dir / name)
    version = subprocess.run([str(bin_dir / "qemu-aarch64"), "--version"], capture_output=True, text=True,
                             check=True).stdout.splitlines()[0]
    return {"debs": debs, "download_bytes": size, "version": version}


def _sysroot(root: Path, mmdebstrap: str, log: Callable[[str], None]) -> dict[str, Any]:
    final = root / "arm64-bookworm"
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        tree = Path(tmp) / "sysroot"
        debs, size = _extract(mmdebstrap, "arm64", "bookworm", SYSROOT_PACKAGES, _BOOKWORM, tree, log)
        # the host's python3.11 writes the same .pyc files, many times faster than the emulated one
        host_python = shutil.which("python3.11")
        if host_python:
            subprocess.run([host_python, "-m", "compileall", "-q", "-j0", str(tree / "usr/lib/python3.11")],
                           check=False, stdout=subprocess.DEVNULL)
        tree.replace(final)
    return {"debs": debs, "download_bytes": size, "installed_bytes": _size(final)}


def setup(root: Path, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Make what is missing in the emulator folder `root`; returns (and writes) the set-up record:
    per step, its seconds, .deb count and download bytes (absent for steps already done)."""
    root.mkdir(parents=True, exist_ok=True)
    record_path = root / SETUP_RECORD
    record: dict[str, Any] = json.loads(record_path.read_text()) if record_path.is_file() else {}
    steps: list[tuple[str, Callable[[Path, str, Callable[[str], None]], dict[str, Any]], bool]] = [
        ("qemu", _qemu, all((root / "bin" / n).is_file() for n in ("qemu-aarch64", "qemu-x86_64"))),
        ("sysroot_arm64", _sysroot, (root / "arm64-bookworm/usr/bin/python3.11").exists()),
    ]
    mmdebstrap: str | None = None
    for name, step, done in steps:
        if done:
            log(f"{name}: already set up")
            continue
        mmdebstrap = mmdebstrap or _mmdebstrap(log)
        start = time.perf_counter()
        result = step(root, mmdebstrap, log)
        result["seconds"] = round(time.perf_counter() - start, 1)
        record[name] = result
        log(f"{name}: {json.dumps(result)}")
        record_path.write_text(json.dumps(record, indent=2) + "\n")
    return record
