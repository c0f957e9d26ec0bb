"""decode_images: encoded images (PNG, JPEG, ...) in a BYTES tensor -> uint8 pixels, with Pillow.

Imported only by bundles whose spec decodes images (Pillow is pinned into those).
"""

from __future__ import annotations

import io
import re
from typing import Any

import numpy as np
import numpy.typing as npt
import PIL.Image

from ..abi import RequestError, RequestTooLarge, request_limits

__all__ = ["decode_images"]

Array = npt.NDArray[Any]


def decode_images(x: Array, mode: str, name: str, formats: list[str], max_pixels: int,
                  ragged: bool) -> Array | list[Array]:
    """Encoded images (a BYTES tensor, one per row) -> uint8 arrays [N, H, W(, C)] in `mode`, by Pillow.

    Every image's size is read from its header first (Pillow opens lazily), and
    checked before any is decoded: each against `max_pixels` (the step's limit),
    all of them together against the request's `serving.max_pixels` (413 both).
    Any image that does not decode fails the request with a message naming the
    input and the row. Images of different sizes come back as a list when the
    next step handles them one by one (`ragged`), else they fail the request.
    """
    limits = request_limits()
    budget = None if limits is None else limits.max_pixels
    kinds = "/".join(formats)
    opened = []
    total = 0
    try:
        for row, data in enumerate(x.reshape(len(x), -1)[:, 0]):
            where = f"input {name!r} row {row}"
            if not isinstance(data, bytes | bytearray):
                raise RequestError(f"{where}: expected encoded image bytes, got {type(data).__name__}")
            try:
                img = PIL.Image.open(io.BytesIO(data), formats=formats)  # reads the header only
            except Exception as e:  # Pillow raises many kinds for bad data: all mean "not an image we read"
                raise RequestError(f"{where}: not a decodable {kinds} image ({_reason(e)})") from None
            opened.append(img)
            pixels = img.width * img.height
            if pixels > max_pixels:
                raise RequestTooLarge(f"{where}: {img.width}x{img.height} pixels is more than the {max_pixels} "
                                      "allowed (the decode step's max_pixels)")
            total += pixels
            if budget is not None and total > budget:
                raise RequestTooLarge(f"{where}: the images up to this one hold {total} pixels, more than the "
                                      f"{budget} one request may decode (serving.max_pixels)")
        if not opened:
            raise RequestError(f"input {name!r}: no images")
        images = []
        for row, img in enumerate(opened):
            try:
                images.append(np.asarray(img.convert(mode)))
            except Exception as e:
                raise RequestError(f"input {name!r} row {row}: not a decodable {kinds} image ({_reason(e)})") from None
    finally:
        for img in opened:
            img.close()
    if len({img.shape for img in images}) == 1:
        return np.stack(images)
    if ragged:
        return images
    sizes = ", ".join(sorted({f"{img.shape[1]}x{img.shape[0]}" for img in images}))
    raise RequestError(f"input {name!r}: the images of one request differ in size ({sizes}); "
                       "send them in separate requests, or resize them")


def _reason(error: Exception) -> str:
    """Pillow's message without the reprs it may carry (`<_io.BytesIO object at 0x...>`)."""
    return re.sub(r"\s*<[^<>]* at 0x[0-9a-fA-F]+>", "", str(error)) or type(error).__name__
