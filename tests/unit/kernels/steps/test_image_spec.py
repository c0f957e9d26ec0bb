"""Image steps in a spec: each mistake (bad parameters, steps in an impossible order, a result that is
not what the model takes) is one error at `infc validate` time, located at file:line:col."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from examples import DIGITS_DIR

from infc.errors import SpecErrors, format_path
from infc.spec import load_spec

# a valid spec: any RGB image -> the digits model's float32 [1, 8, 8]
BASE = """\
name: img
version: 1.0.0
model: digits.onnx
target: x86
inputs:
  - {name: image, dtype: uint8, shape: [-1, -1, 3]}
preprocess:
  - resize: {size: [8, 8]}
  - channel_order: {from: RGB, to: G}
  - to_float: {scale: 0.00392156862745098}
  - normalize: {mean: [0.5], std: [0.5]}
  - layout: {from: HWC, to: CHW}
"""


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    shutil.copy(DIGITS_DIR / "digits.onnx", tmp_path / "digits.onnx")
    return tmp_path


def _write(folder: Path, *edits: tuple[str, str]) -> Path:
    text = BASE
    for old, new in edits:
        assert old in text, old
        text = text.replace(old, new, 1)
    (folder / "spec.yaml").write_text(text)
    return folder / "spec.yaml"


def test_the_base_spec_is_valid(folder: Path) -> None:
    spec = load_spec(_write(folder)).spec
    assert [s.name for s in spec.preprocess] == ["resize", "channel_order", "to_float", "normalize", "layout"]


CASES = [
    ("size-length", [("size: [8, 8]", "size: [8]")], "8:20", "preprocess[0].resize.size",
     "expected at least 2 items, got 1"),
    ("method-typo", [("size: [8, 8]}", "size: [8, 8], method: bilinar}")], "8:36", "preprocess[0].resize.method",
     "expected one of bilinear, nearest, got 'bilinar' (did you mean 'bilinear'?)"),
    ("two-modes", [("size: [8, 8]}", "size: [8, 8], shorter: 3}")], "8:5", "preprocess[0]",
     "give exactly one of `size: [h, w]`, `shorter: N` or `fit: [h, w]`, got size and shorter"),
    ("resize-after-layout", [("  - resize: {size: [8, 8]}\n", ""),
                             ("  - layout: {from: HWC, to: CHW}\n",
                              "  - layout: {from: HWC, to: CHW}\n  - resize: {size: [8, 8]}\n")],
     "12:5", "preprocess[4]", "resize takes an image [H, W] or [H, W, C] with 1 to 4 channels last, got shape "
     "[1, -1, -1] for 'image' (it looks channels-first: put a `layout` to CHW after the image steps"),
    ("model-size", [("size: [8, 8]", "size: [7, 7]")], "8:3", "preprocess",
     "model input 'image' takes float32 [1, 8, 8] (batch dimension aside), but pre-processing yields "
     "float32 [1, 7, 7]"),
    ("crop-too-large", [("shape: [-1, -1, 3]", "shape: [6, 6, 3]"),
                        ("resize: {size: [8, 8]}", "center_crop: {size: [8, 8]}")],
     "8:25", "preprocess[0].center_crop.size", "the crop's height 8 is larger than the image's height 6"),
    ("pad-value", [("resize: {size: [8, 8]}", "pad: {size: [8, 8], value: 300}")], "8:32",
     "preprocess[0].pad.value", "300 is not a uint8 value (an integer in 0..255)"),
    ("channels", [("to: G}", "to: GA}")], "9:36", "preprocess[1].channel_order.to",
     "channels 'A' of 'to' are not in 'from' 'RGB'"),
    ("decode-pixels", [("resize: {size: [8, 8]}", "decode: {}")], "8:5", "preprocess[0]",
     "decode takes a bytes tensor with one encoded image per row (shape [] or [1]), got uint8 [-1, -1, 3] "
     "tensor 'image'"),
    ("decode-mode", [("  - resize: {size: [8, 8]}\n", "  - decode: {mode: CMYK}\n  - resize: {size: [8, 8]}\n"),
                     ("dtype: uint8, shape: [-1, -1, 3]", "dtype: bytes, shape: []")],
     "8:20", "preprocess[0].decode.mode", "expected one of RGB, RGBA, L, got 'CMYK'"),
]


@pytest.mark.parametrize(("edits", "at", "path", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_each_mistake_is_one_located_error(folder: Path, edits: list[tuple[str, str]], at: str, path: str,
                                           message: str) -> None:
    with pytest.raises(SpecErrors) as info:
        load_spec(_write(folder, *edits))
    (error,) = info.value.errors
    assert (f"{error.line}:{error.col}", format_path(error.path)) == (at, path)
    assert message in str(error)
    assert str(error).startswith(f"{folder / 'spec.yaml'}:{at} {path}: ")
