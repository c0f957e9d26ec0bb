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
    model and data (the model replaced by `model` when given): a spec a test may build, lock and edit.
    Its `deploy:` section (the example's price) is left out, so a test may append its own."""
    folder.mkdir(parents=True, exist_ok=True)
    for file in ("digits.onnx", "calib.npz", "val.npz"):
        shutil.copy(DIGITS_DIR / file, folder / file)
    if model is not None:
        shutil.copy(model, folder / "digits.onnx")
    text = _without_deploy(DIGITS_SPEC.read_text())
    for old, new in (edits or {}).items():
        assert old in text, old
        text = text.replace(old, new)
    spec = folder / name
    spec.write_text(text)
    return spec


def _without_deploy(text: str) -> str:
    """`text` without its top-level `deploy:` block (the key's line and the indented lines under it)."""
    kept: list[str] = []
    inside = False
    for line in text.splitlines(keepends=True):
        if line.startswith("deploy:"):
            inside = True
        elif inside and not line.startswith((" ", "#", "\n")):
            inside = False
        if not inside:
            kept.append(line)
    return "".join(kept)
