"""Reading files that a pull request may hold: never more than a stated size."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["TooLarge", "read_bounded"]


class TooLarge(ValueError):
    """A file holds more than the limit; `size` is what the file system says (0 when it cannot: a pipe)."""

    def __init__(self, path: Path, size: int, limit: int) -> None:
        self.path, self.size, self.limit = path, size, limit
        said = f"{size:,} bytes" if size > limit else f"more than {limit:,} bytes"
        super().__init__(f"{path}: {said}, more than the {limit:,} read at most")


def read_bounded(path: Path, limit: int) -> bytes:
    """The bytes of `path`, never more than `limit` + 1 of them read; TooLarge past `limit` (OSError as raised)."""
    with open(path, "rb") as f:
        raw = f.read(limit + 1)
        if len(raw) > limit:
            raise TooLarge(path, os.fstat(f.fileno()).st_size, limit)
    return raw
