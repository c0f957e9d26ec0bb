"""Make the digits-png example's data: the digits of specs/digits as PNG files of many sizes.

Writes, next to this file:
  calib.npz  `png`: the 256 calibration digits of specs/digits, PNG-encoded
  val.npz    `png`: its held-out digits, PNG-encoded, and `labels`

Each 8x8 digit is scaled up by a whole factor from 1 to 6 (pixels repeated: 8x8
to 48x48), so one request may hold images of different sizes. A bilinear resize
back to 8x8 (half-pixel centres) samples each block where its pixels are equal,
so the model sees exactly the digits it was trained on. The PNGs are stored as
fixed-width bytes (numpy 'S'): a PNG never ends with a zero byte, which such an
array would drop. No download; run: `python specs/digits_png/make_data.py`.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
DIGITS = HERE.parent / "digits"
SEED = 0


def png(pixels: np.ndarray) -> bytes:
    """A grayscale PNG of uint8 pixels [H, W]."""
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


def encode(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Each 8x8 image scaled up by a random whole factor (1 to 6) and PNG-encoded."""
    factors = rng.integers(1, 7, len(images))
    encoded = [png(np.kron(img, np.ones((k, k), np.uint8))) for img, k in zip(images, factors, strict=True)]
    assert not any(e.endswith(b"\0") for e in encoded)
    return np.array(encoded, dtype=bytes)


def main() -> None:
    rng = np.random.default_rng(SEED)
    with np.load(DIGITS / "calib.npz") as calib, np.load(DIGITS / "val.npz") as val:
        np.savez_compressed(HERE / "calib.npz", png=encode(calib["image"], rng))
        np.savez_compressed(HERE / "val.npz", png=encode(val["image"], rng), labels=val["labels"])
    print(f"wrote {HERE / 'calib.npz'} and {HERE / 'val.npz'}")


if __name__ == "__main__":
    main()
