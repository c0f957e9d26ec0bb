"""Progress of a long build, on stderr: a live status line on a terminal, plain lines elsewhere.

On a terminal (stderr is a TTY) the current step shows on one line that
updates in place (tqdm), with the time spent so far, and disappears when the
build ends. In CI logs and pipes, each step is one line `infc: step` with the
seconds since the build started. `quiet` prints nothing (tests, library use).
stdout is never written: `infc build --json` keeps it for the JSON document.
"""

from __future__ import annotations

import shutil
import sys
import time
from typing import IO, Any

__all__ = ["Progress"]


class Progress:
    """Call with a message at each step; `close()` at the end."""

    def __init__(self, *, quiet: bool = False, stream: IO[str] | None = None) -> None:
        self._stream = stream or sys.stderr
        self._quiet = quiet
        self._start = time.monotonic()
        self._bar: Any = None
        self._live = not quiet and self._stream.isatty()
        if self._live:
            from tqdm import tqdm

            # a terminal that reports no size (`script`, some CI consoles) makes tqdm print nothing
            size = shutil.get_terminal_size((100, 24))
            self._bar = tqdm(total=None, file=self._stream, leave=False, bar_format="infc: {desc} [{elapsed}]",
                             ncols=size.columns if size.columns > 0 else 100,
                             nrows=size.lines if size.lines > 0 else 24)

    def __call__(self, message: str) -> None:
        if self._quiet:
            return
        if self._bar is not None:
            self._bar.set_description_str(message)
            self._bar.refresh()
        else:
            print(f"infc: [{time.monotonic() - self._start:6.1f}s] {message}", file=self._stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
