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

from ..registry import StepDef, get, register
from ..types import EmitContext, ModuleText, ResolvedStep, StepIssue
from ._image import Array, Out

_MODES = {"RGB": (3,), "RGBA": (4,), "L": ()}
_FORMATS = ["PNG", "JPEG", "WEBP", "BMP", "GIF", "TIFF"]
_DEFAULT_FORMATS = ["PNG", "JPEG"]
_MAX_PIXELS = 40_000_000


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


def _example_size(reader: tuple[ResolvedStep, ...]) -> tuple[int, int]:
    """The warm-up image's size: as large as the steps that read it ask (each step's `example_size`
    hook, up to the first that makes its own size: a crop's window counts, what follows a resize not)."""
    size = (2, 2)
    for step in reader:
        hook = get(step.name).example_size
        if hook is None:
            continue
        grown = hook(size, step.params)
        if grown is None:
            break
        size = grown
    return size


def _emit(text: ModuleText, step: ResolvedStep, ctx: EmitContext) -> None:
    mode, formats, max_pixels = _options(step.params)
    text.examples[step.input.name] = example_image(mode, formats, _example_size(ctx.reader))
    text.call(ctx, "decode_images", repr(mode), repr(ctx.src), repr(formats), str(max_pixels), repr(bool(ctx.reader)),
              outputs=[step.outputs[0].name], module="infc_runtime.ops.decode")


register(StepDef(
    "decode", ("pre",), "encoded images (BYTES, one per row) -> uint8 [H, W, C] pixels with Pillow; "
    "`mode` RGB (default), RGBA or L (grayscale, [H, W])", _infer, _reference, emit=_emit,
    default_output="image", requires=("pillow",),
    params={"mode": {"enum": list(_MODES), "description": "pixel format of the result, default RGB"},
            "formats": {"type": "array", "items": {"enum": _FORMATS}, "minItems": 1, "uniqueItems": True,
                        "description": "encodings accepted, default [PNG, JPEG]"},
            "max_pixels": {"type": "integer", "minimum": 1,
                           "description": f"largest image accepted (width x height), default {_MAX_PIXELS}"}}))
