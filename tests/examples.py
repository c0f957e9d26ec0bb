"""Paths of the example specs shipped in specs/, and edited copies of them, for tests."""

from __future__ import annotations

import shutil
from pathlib import Path

__all__ = ["ROOT", "DIGITS_DIR", "DIGITS_SPEC", "digits_copy"]

ROOT = Path(__file__).resolve().parents[1]
DIGITS_DIR = ROOT / "specs" / "digits"
DIGITS_SPEC = DIGITS_DIR / "digits.yaml"


def digits_copy(folder: Path, edits: dict[str, str] | None = None, *, model: Path | None = None,
                name: str = "digits.yaml") -> Path:
    """The digits example in `folder` (made if needed) with some text replaced, beside copies of its
    model and data (the model replaced by `model` when given): a spec a test may build, lock and edit."""
    folder.mkdir(parents=True, exist_ok=True)
    for file in ("digits.onnx", "calib.npz", "val.npz"):
        shutil.copy(DIGITS_DIR / file, folder / file)
    if model is not None:
        shutil.copy(model, folder / "digits.onnx")
    text = DIGITS_SPEC.read_text()
    for old, new in (edits or {}).items():
        assert old in text, old
        text = text.replace(old, new)
    spec = folder / name
    spec.write_text(text)
    return spec
