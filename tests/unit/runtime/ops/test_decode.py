"""decode_images: Pillow's pixels, sizes checked before decoding, one clear error per bad row."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from infc_runtime.abi import RequestError, RequestTooLarge
from infc_runtime.ops.decode import decode_images


def _png(h: int, w: int, value: int = 0) -> bytes:
    out = io.BytesIO()
    Image.fromarray(np.full((h, w, 3), value, np.uint8)).save(out, format="PNG")
    return out.getvalue()


def _batch(*items: bytes) -> np.ndarray:
    x = np.empty(len(items), dtype=object)
    x[:] = list(items)
    return x


def test_decodes_to_the_mode_and_stacks() -> None:
    got = decode_images(_batch(_png(2, 3, 7), _png(2, 3, 9)), "L", "image", ["PNG"], 100, False)
    assert isinstance(got, np.ndarray) and got.shape == (2, 2, 3) and got.dtype == np.uint8


def test_sizes_that_differ_come_as_a_list_only_when_ragged() -> None:
    x = _batch(_png(2, 3), _png(4, 1))
    assert [i.shape for i in decode_images(x, "RGB", "image", ["PNG"], 100, True)] == [(2, 3, 3), (4, 1, 3)]
    with pytest.raises(RequestError, match="differ in size"):
        decode_images(x, "RGB", "image", ["PNG"], 100, False)


def test_bad_rows_and_large_images_fail_the_request() -> None:
    with pytest.raises(RequestError, match=r"input 'image' row 1: not a decodable PNG image"):
        decode_images(_batch(_png(1, 1), b"nope"), "RGB", "image", ["PNG"], 100, False)
    with pytest.raises(RequestTooLarge, match="more than the 5 allowed"):
        decode_images(_batch(_png(2, 3)), "RGB", "image", ["PNG"], 5, False)
