"""One error root for everything a user can get wrong, each with its exit code.

Exit codes of `infc` (documented in README.md):
  0  success
  1  internal error (a bug in infc: please report it)
  2  the spec (or a file it names) is wrong, or the command line is
  3  a compiler pass failed on this model
  4  the build missed a budget (accuracy or latency)
  5  the wheelhouse could not be fetched (package index unreachable, or no
     wheel of a pinned distribution for the target's platform)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["InfcError", "SpecError", "SpecErrors", "PassError", "BudgetError", "WheelhouseError", "format_path"]

PathPart = str | int


def format_path(path: Sequence[PathPart]) -> str:
    """`("preprocess", 1, "resize", "size")` -> `preprocess[1].resize.size`."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


class InfcError(Exception):
    """Root of every error infc reports to a user (never as a traceback)."""

    exit_code = 1


@dataclass
class SpecError(InfcError):
    """A located spec problem: `file:line:col key.path: message`."""

    file: str
    line: int
    col: int
    path: tuple[PathPart, ...]
    message: str

    exit_code = 2

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.col}"
        key = format_path(self.path)
        return f"{where} {key}: {self.message}" if key else f"{where} {self.message}"


class SpecErrors(InfcError):
    """Every problem found in one spec, reported together."""

    exit_code = 2

    def __init__(self, errors: Sequence[SpecError]) -> None:
        self.errors = sorted(errors, key=lambda e: (e.file, e.line, e.col, str(e)))
        super().__init__("\n".join(str(e) for e in self.errors))


class PassError(InfcError):
    """A compiler pass failed; names the pass and the passes that ran before it."""

    exit_code = 3

    def __init__(self, pass_name: str, ran_before: Sequence[str], cause: str) -> None:
        self.pass_name = pass_name
        self.ran_before = list(ran_before)
        before = ", ".join(self.ran_before) or "none"
        super().__init__(f"pass {pass_name} failed (after: {before}): {cause}")


class BudgetError(InfcError):
    """The build missed a budget; the message says which, by how much. `result` is the build's
    `BuildOutcome` (measurements, report), for `--json` and `infc diff`."""

    exit_code = 4

    def __init__(self, message: str, result: object = None) -> None:
        super().__init__(message)
        self.result = result


class WheelhouseError(InfcError):
    """`--wheelhouse`: pip could not fetch a run-time wheel for the target (`infc.wheelhouse`)."""

    exit_code = 5
