"""Paths of the example specs shipped in specs/, for tests."""

from __future__ import annotations

from pathlib import Path

__all__ = ["ROOT", "DIGITS_DIR", "DIGITS_SPEC"]

ROOT = Path(__file__).resolve().parents[1]
DIGITS_DIR = ROOT / "specs" / "digits"
DIGITS_SPEC = DIGITS_DIR / "digits.yaml"
