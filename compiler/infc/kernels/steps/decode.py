"""decode: encoded images (PNG, JPEG) in a BYTES tensor -> uint8 pixels, with Pillow (not Numba).

The request carries one encoded image per row (shape [] or [1]). The result is
uint8 [N, H, W, 3] for `mode: RGB`, [N, H, W, 4] for RGBA, [N, H, W] for L
(grayscale). A row that is not an image of the allowed `formats` fails its
request with a message naming the input and the row (HTTP 400). Sizes are read
from the image headers before anything is decoded: an image larger than the
step's `max_pixels`, or images of one request holding more pixels together than
the server's `serving.max_pixels` (which the kernel reads from
`infc_runtime.abi.request_limits()` at run time), fail the request with a
413 — guards against decompression bombs. Images of one request may differ in
size when a fused resize / crop / pad follows: it then runs image by image.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any, cast

import numpy as np
from PIL import Image

from infc_runtime.types import TensorSpec

from ..fusion import REQUEST_ERROR
from ..registry import StepDef, register
from ..types import ModuleText, ResolvedStep, StepIssue, render
from ._image import Array, Out

_MODES = {"RGB": (3,), "RGBA": (4,), "L": ()}
_FORMATS = ["PNG", "JPEG", "WEBP", "BMP", "GIF", "TIFF"]
_DEFAULT_FORMATS = ["PNG", "JPEG"]
_MAX_PIXELS = 40_000_000
_REQUEST_LIMITS = "from infc_runtime.abi import RequestTooLarge, request_limits"


def _options(p: Mapping[str, Any]) -> tuple[str, list[str], int]:
    return str(p.get("mode", "RGB")), list(p.get("formats", _DEFAULT_FORMATS)), int(p.get("max_pixels", _MAX_PIXELS))


def _infer(t: TensorSpec, p: Mapping[str, Any], out: str, others: Mapping[str, TensorSpec]) -> Out:
    if t.dtype != "bytes" or t.shape not in ((), (1,)):
        raise StepIssue(f"decode takes a bytes tensor with one encoded image per row (shape [] or [1]), "
                        f"got {t.dtype} {list(t.shape)} tensor {t.name!r}")
    mode = _options(p)[0]
    return (TensorSpec(out, "uint8", (-1, -1, *_MODES[mode])),), {"ragged": True}


def _reference(x: Array, p: Mapping[str, Any]) -> tuple[Array, ...]:
    """Pillow on each row; a list when the images differ in size (the image steps after take lists)."""
    mode, formats, _ = _options(p)
    images = []
    for data in x.reshape(len(x), -1)[:, 0]:
        with Image.open(io.BytesIO(data), formats=formats) as img:
            images.append(np.asarray(img.convert(mode)))
    return (np.stack(images) if len({i.shape for i in images}) == 1 else cast(Array, images),)


def example_image(mode: str, formats: list[str], size: tuple[int, int] = (2, 2)) -> bytes:
    """A small valid image [h, w] in the first allowed format (the server warms up with it)."""
    out = io.BytesIO()
    Image.new(mode, (size[1], size[0])).save(out, format=formats[0])
    return out.getvalue()


def _example_size(reader: list[ResolvedStep] | None) -> tuple[int, int]:
    """The warm-up image's size: as large as the crops before the first resize ask (a pad fits it)."""
    h, w = 2, 2
    for step in reader or ():
        if step.name == "resize":
            break
        if step.name == "center_crop":
            h, w = max(h, step.params["size"][0]), max(w, step.params["size"][1])
    return h, w


def _emit(text: ModuleText, step: ResolvedStep, common: dict[str, Any]) -> None:
    mode, formats, max_pixels = _options(step.params)
    reader = common.pop("reader")
    text.imports += ["import io", "import re", "import PIL.Image", REQUEST_ERROR, _REQUEST_LIMITS]
    for helper in (render("decode.py.j2"), render("per_image.py.j2")):
        if helper not in text.functions:
            text.functions.append(helper)
    text.examples[step.input.name] = example_image(mode, formats, _example_size(reader))
    text.calls.append(render("decode_call.py.j2", dst=step.outputs[0].name, mode=mode, formats=repr(formats),
                             max_pixels=max_pixels, ragged_ok=reader is not None, **common))


register(StepDef(
    "decode", ("pre",), "encoded images (BYTES, one per row) -> uint8 [H, W, C] pixels with Pillow; "
    "`mode` RGB (default), RGBA or L (grayscale, [H, W])", _infer, _reference, emit=_emit,
    default_output="image", requires=("pillow",),
    params={"mode": {"enum": list(_MODES), "description": "pixel format of the result, default RGB"},
            "formats": {"type": "array", "items": {"enum": _FORMATS}, "minItems": 1, "uniqueItems": True,
                        "description": "encodings accepted, default [PNG, JPEG]"},
            "max_pixels": {"type": "integer", "minimum": 1,
                           "description": f"largest image accepted (width x height), default {_MAX_PIXELS}"}}))
