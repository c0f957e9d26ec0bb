"""The jinja2 environments over templates/ (package data `infc.templates`), one per folder."""

from __future__ import annotations

from functools import cache
from importlib.resources import files

import jinja2

__all__ = ["environment"]


@cache
def environment(folder: str) -> jinja2.Environment:
    """Strict (a missing value is an error), no autoescaping (we write code and YAML, not HTML)."""
    root = files("infc.templates").joinpath(folder)
    return jinja2.Environment(loader=jinja2.FileSystemLoader(str(root)), trim_blocks=True, lstrip_blocks=True,
                              keep_trailing_newline=True, undefined=jinja2.StrictUndefined, autoescape=False)
