"""Spec errors as data for machines: JSON objects, and GitHub Actions annotations.

`infc validate --format github` prints one workflow command per error, so that
GitHub shows each error on the line of the pull request's diff that caused it:

    ::error file=specs/digits.yaml,line=14,col=5,title=infc spec::preprocess[1].resize.size: expected ...

Escaping follows GitHub's workflow-command rules (as the Actions toolkit's
`escapeData` / `escapeProperty` do): in the message `%`, CR and LF become
`%25`, `%0D`, `%0A`; property values escape `:` and `,` as well (`%3A`, `%2C`),
since those separate the properties from each other and from the message.
"""

from __future__ import annotations

from typing import Any

from .errors import SpecError, format_path

__all__ = ["LEVELS", "TITLE", "error_dict", "github_annotation", "escape_data", "escape_property"]

LEVELS = ("error", "warning", "notice")
"""The annotation commands GitHub knows."""

TITLE = "infc spec"
"""The title GitHub shows above each annotation."""


def error_dict(e: SpecError) -> dict[str, Any]:
    """`e` as a JSON object: file (as the error shows it), line, col (1-based), path (the
    dotted key path, `""` for the document itself) and message."""
    return {"file": e.file, "line": e.line, "col": e.col, "path": format_path(e.path), "message": e.message}


def escape_data(text: str) -> str:
    """`text` safe as a workflow command's message."""
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(text: str) -> str:
    """`text` safe as a workflow command's property value."""
    return escape_data(text).replace(":", "%3A").replace(",", "%2C")


def github_annotation(e: SpecError, level: str = "error") -> str:
    """`e` as one GitHub Actions workflow command line (no newline at the end):
    `::error file=F,line=L,col=C,title=infc spec::key.path: message`.

    `file` is the path as the error shows it (relative to the working directory when the
    spec is under it: run `infc validate` from the repository root so that GitHub finds it).
    """
    if level not in LEVELS:
        raise ValueError(f"annotation level {level!r}: expected one of {', '.join(LEVELS)}")
    key = format_path(e.path)
    message = f"{key}: {e.message}" if key else e.message
    properties = {"file": e.file, "line": str(e.line), "col": str(e.col), "title": TITLE}
    listed = ",".join(f"{name}={escape_property(value)}" for name, value in properties.items())
    return f"::{level} {listed}::{escape_data(message)}"
