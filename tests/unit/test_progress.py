"""Build progress on stderr: a live line on a terminal, one line per step elsewhere, nothing when quiet."""

from __future__ import annotations

import io

from infc.progress import Progress


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_plain_lines_when_not_a_terminal() -> None:
    out = io.StringIO()
    p = Progress(stream=out)
    p("checking the spec")
    p("candidate fp32")
    p.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and lines[0].startswith("infc: [") and lines[1].endswith("] candidate fp32")


def test_one_updating_line_on_a_terminal_and_gone_at_the_end() -> None:
    out = _Terminal()
    p = Progress(stream=out)
    p("candidate fp32")
    p("candidate dynamic")
    p.close()
    text = out.getvalue()
    assert "\n" not in text and "infc: candidate dynamic" in text and "\r" in text
    assert text.rstrip(" ").endswith("\r"), "the status line is cleared when the build ends"


def test_quiet_prints_nothing() -> None:
    for stream in (io.StringIO(), _Terminal()):
        p = Progress(quiet=True, stream=stream)
        p("anything")
        p.close()
        assert stream.getvalue() == ""
