"""Can this interpreter run the bundle? The check `install.sh` runs before it makes a venv.

    python -I infc_runtime/platform_check.py PYTHON MACHINE [GLIBC]

compares the running interpreter with what the bundle's pins (and wheels) are
for (the manifest's `platform`, written into install.sh at build time): its
Python major.minor and implementation (CPython), the system (Linux), the machine
as the interpreter sees it (`sysconfig.get_platform()`: a 32-bit Python on a
64-bit kernel is not x86_64) and glibc (at least the newest the wheels need).
Exit 0 when it matches; else one line per difference on stderr and exit 4 (the
Python differs) or 5 (the platform differs). Standard library only; run with
`-I`, so nothing beside this file is imported.
"""

from __future__ import annotations

import os
import platform
import sys
import sysconfig

__all__ = ["PYTHON_MISMATCH", "PLATFORM_MISMATCH", "facts", "check", "main"]

PYTHON_MISMATCH = 4
PLATFORM_MISMATCH = 5


def facts() -> dict[str, str]:
    """This interpreter: python (major.minor), implementation, system, machine, glibc ('' when not glibc)."""
    plat = sysconfig.get_platform()  # e.g. linux-x86_64, linux-aarch64, macosx-14.0-arm64, linux-i686
    try:
        libc = os.confstr("CS_GNU_LIBC_VERSION") or ""  # "glibc 2.36"
    except (AttributeError, ValueError, OSError):
        libc = ""
    return {"python": f"{sys.version_info[0]}.{sys.version_info[1]}",
            "implementation": platform.python_implementation(), "system": platform.system(),
            "machine": plat.rsplit("-", 1)[-1], "glibc": libc.split()[-1] if libc.startswith("glibc ") else ""}


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(".")[:2] if part.isdigit())


def check(found: dict[str, str], python: str, machine: str, glibc: str = "") -> list[tuple[int, str]]:
    """The differences between `found` (`facts()`) and what the bundle needs: (exit code, message) each."""
    out = []
    if found["python"] != python or found["implementation"] != "CPython":
        out.append((PYTHON_MISMATCH, f"this bundle needs CPython {python}; {sys.executable} is "
                                     f"{found['implementation']} {found['python']} "
                                     f"(set PYTHON=/path/to/python{python})"))
    if found["system"] != "Linux":
        out.append((PLATFORM_MISMATCH, f"this bundle is for Linux {machine}; this is {found['system']} "
                                       f"{found['machine']}"))
    elif found["machine"] != machine:
        out.append((PLATFORM_MISMATCH, f"this bundle is for Linux {machine}; this Python runs on {found['machine']} "
                                       f"(build the bundle with target {'arm' if machine == 'x86_64' else 'x86'} "
                                       "for this machine)"))
    elif glibc and not found["glibc"]:
        out.append((PLATFORM_MISMATCH, f"this bundle's wheels need glibc {glibc} or newer; this Linux has no glibc "
                                       "(musl, e.g. Alpine?)"))
    elif glibc and _version(found["glibc"]) < _version(glibc):
        out.append((PLATFORM_MISMATCH, f"this bundle's wheels need glibc {glibc} or newer; this Linux has glibc "
                                       f"{found['glibc']}"))
    return out


def main(argv: list[str]) -> int:
    if len(argv) not in (2, 3):
        print("usage: platform_check.py PYTHON MACHINE [GLIBC]", file=sys.stderr)
        return 2
    problems = check(facts(), *argv)
    for _, message in problems:
        print(f"install.sh: error: {message}", file=sys.stderr)
    return problems[0][0] if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
