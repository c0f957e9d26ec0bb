"""install.sh's check of the interpreter it found: each difference from the bundle's platform, with its exit code."""

from __future__ import annotations

import subprocess
import sys

import pytest

from infc_runtime import platform_check
from infc_runtime.platform_check import PLATFORM_MISMATCH, PYTHON_MISMATCH, check, facts

LINUX = {"python": "3.11", "implementation": "CPython", "system": "Linux", "machine": "x86_64", "glibc": "2.36"}


def test_a_matching_interpreter_passes() -> None:
    assert check(LINUX, "3.11", "x86_64", "2.28") == []
    assert check({**LINUX, "glibc": "2.28"}, "3.11", "x86_64", "2.28") == []
    assert check({**LINUX, "glibc": ""}, "3.11", "x86_64") == []  # no wheels: no glibc needed


@pytest.mark.parametrize("found, code, message", [
    ({"python": "3.12"}, PYTHON_MISMATCH, "this bundle needs CPython 3.11;"),
    ({"implementation": "PyPy"}, PYTHON_MISMATCH, "is PyPy 3.11"),
    ({"system": "Darwin", "machine": "arm64"}, PLATFORM_MISMATCH, "this bundle is for Linux x86_64; this is Darwin"),
    ({"machine": "aarch64"}, PLATFORM_MISMATCH, "this Python runs on aarch64 (build the bundle with target arm"),
    ({"machine": "i686"}, PLATFORM_MISMATCH, "this Python runs on i686"),
    ({"glibc": "2.27"}, PLATFORM_MISMATCH, "need glibc 2.28 or newer; this Linux has glibc 2.27"),
    ({"glibc": "2.9"}, PLATFORM_MISMATCH, "glibc 2.9"),  # compared as numbers, not text
    ({"glibc": ""}, PLATFORM_MISMATCH, "this Linux has no glibc (musl"),
])
def test_each_difference_is_refused_with_its_exit_code(found: dict[str, str], code: int, message: str) -> None:
    (problem,) = check({**LINUX, **found}, "3.11", "x86_64", "2.28")
    assert problem[0] == code and message in problem[1]


def test_this_interpreter_passes_its_own_check_as_a_script() -> None:
    here = facts()
    assert here["python"] == f"{sys.version_info[0]}.{sys.version_info[1]}"
    script = platform_check.__file__
    ok = subprocess.run([sys.executable, "-I", script, here["python"], here["machine"]], capture_output=True,
                        text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    other = "aarch64" if here["machine"] == "x86_64" else "x86_64"
    refused = subprocess.run([sys.executable, "-I", script, "3.0", other], capture_output=True, text=True,
                             timeout=60)
    assert refused.returncode == PYTHON_MISMATCH
    assert refused.stderr.splitlines()[0].startswith("install.sh: error: this bundle needs CPython 3.0;")
    assert f"this bundle is for Linux {other}" in refused.stderr
