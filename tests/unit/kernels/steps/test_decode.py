"""decode: PNG/JPEG bytes -> pixels as Pillow decodes them; a bad image fails its request naming the
input and row; images of different sizes go through a fused resize one by one."""

from __future__ import annotations

import io
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from kernelcheck import Steps, assert_same, compile_steps
from PIL import Image

from infc.kernels.graph import resolve
from infc.kernels.reference import run_reference
from infc_runtime.abi import RequestError, RequestTooLarge
from infc_runtime.pipeline import Pipeline
from infc_runtime.types import ServingConfig, TensorSpec

_MODULES: dict[str, Any] = {}
PNG = TensorSpec("png", "bytes", ())


def _module(factory: pytest.TempPathFactory, key: str, steps: Steps, start: TensorSpec = PNG) -> Any:
    if key not in _MODULES:
        _MODULES[key] = compile_steps(factory.mktemp(key), "pre", steps, [start])
    return _MODULES[key]


def encode(pixels: np.ndarray, fmt: str = "PNG", **options: Any) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format=fmt, **options)
    return out.getvalue()


def _pixels(seed: int, h: int, w: int, c: int | None = 3) -> np.ndarray:
    shape = (h, w) if c is None else (h, w, c)
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def _batch(*items: bytes | str) -> np.ndarray:
    out = np.empty(len(items), dtype=object)
    out[:] = list(items)
    return out


@pytest.mark.parametrize(("mode", "channels"), [("RGB", 3), ("RGBA", 4), ("L", None)])
def test_png_round_trips_exactly(tmp_path_factory: pytest.TempPathFactory, mode: str, channels: int | None) -> None:
    module = _module(tmp_path_factory, f"decode_{mode}", [("decode", {"mode": mode})])
    images = [_pixels(i, 5, 7, channels) for i in range(3)]
    got = module.run({"png": _batch(*(encode(p) for p in images))})
    assert list(got) == ["image"]
    np.testing.assert_array_equal(got["image"], np.stack(images))


def test_jpeg_and_mode_conversion_match_pillow(tmp_path_factory: pytest.TempPathFactory) -> None:
    module = _module(tmp_path_factory, "decode_L", [("decode", {"mode": "L"})])
    x = {"png": _batch(encode(_pixels(1, 16, 9), "JPEG", quality=80), encode(_pixels(2, 16, 9)))}
    got = module.run(x)
    assert got["image"].shape == (2, 16, 9) and got["image"].dtype == np.uint8
    assert_same(got, run_reference([("decode", {"mode": "L"})], x))


def test_bad_rows_fail_the_request_naming_input_and_row(tmp_path_factory: pytest.TempPathFactory) -> None:
    module = _module(tmp_path_factory, "decode_RGB", [("decode", {"mode": "RGB"})])
    good = encode(_pixels(0, 4, 4))
    with pytest.raises(RequestError, match=r"input 'png' row 1: not a decodable PNG/JPEG image"):
        module.run({"png": _batch(good, b"\x89PNG but not really")})
    with pytest.raises(RequestError, match=r"input 'png' row 0: not a decodable PNG/JPEG image"):
        module.run({"png": _batch(good[: len(good) // 2])})  # truncated
    with pytest.raises(RequestError, match=r"input 'png' row 0: not a decodable"):
        module.run({"png": _batch(encode(_pixels(0, 4, 4), "GIF"))})  # a format not allowed
    with pytest.raises(RequestError, match=r"input 'png' row 0: expected encoded image bytes, got str"):
        module.run({"png": _batch("a string")})


def test_other_formats_and_the_pixel_limit(tmp_path: Path) -> None:
    steps: Steps = [("decode", {"formats": ["GIF", "BMP"], "max_pixels": 100})]
    module = compile_steps(tmp_path, "pre", steps, [TensorSpec("img", "bytes", (1,))])
    gray = _pixels(0, 5, 5, None)
    got = module.run({"img": _batch(encode(gray, "BMP")).reshape(1, 1)})
    np.testing.assert_array_equal(got["image"][0, :, :, 0], gray)
    with pytest.raises(RequestTooLarge, match=r"input 'img' row 0: 11x10 pixels is more than the 100 allowed"):
        module.run({"img": _batch(encode(_pixels(0, 10, 11), "BMP")).reshape(1, 1)})


RESIZED: Steps = [("decode", {}), ("resize", {"size": [6, 6]}), ("to_float", {"scale": 1 / 255}),
                  ("layout", {"from": "HWC", "to": "CHW"})]


def test_images_of_different_sizes_are_resized_one_by_one(tmp_path_factory: pytest.TempPathFactory) -> None:
    module = _module(tmp_path_factory, "decode_resize", RESIZED)
    images = [_pixels(0, 9, 13), _pixels(1, 30, 4), _pixels(2, 9, 13)]
    x = {"png": _batch(*(encode(p) for p in images))}
    got = module.run(x)
    assert got["image"].shape == (3, 3, 6, 6)
    for i, pixels in enumerate(images):
        one = run_reference(RESIZED[1:], {"image": pixels[None]})["image"]
        np.testing.assert_array_equal(got["image"][i:i + 1], one)
    assert_same(got, run_reference(RESIZED, x))


def test_different_sizes_without_a_resize_fail_the_request(tmp_path_factory: pytest.TempPathFactory) -> None:
    module = _module(tmp_path_factory, "decode_float", [("decode", {}), ("to_float", {})])
    x = {"png": _batch(encode(_pixels(0, 4, 5)), encode(_pixels(1, 4, 6)))}
    with pytest.raises(RequestError, match=r"input 'image': the images of one request still differ in shape"):
        module.run(x)
    bare = _module(tmp_path_factory, "decode_RGB", [("decode", {"mode": "RGB"})])
    with pytest.raises(RequestError, match=r"input 'png': the images of one request differ in size \(5x4, 6x4\)"):
        bare.run(x)


def test_the_module_names_a_valid_example_for_warm_up(tmp_path_factory: pytest.TempPathFactory) -> None:
    module = _module(tmp_path_factory, "decode_resize", RESIZED)
    got = module.run({"png": _batch(module.EXAMPLES["png"])})
    assert got["image"].shape == (1, 3, 6, 6)


def test_the_warm_up_example_is_as_large_as_a_crop_needs(tmp_path: Path) -> None:
    steps: Steps = [("decode", {"mode": "L"}), ("center_crop", {"size": [40, 30]}), ("to_float", {})]
    module = compile_steps(tmp_path, "pre", steps, [PNG])
    assert module.run({"png": _batch(module.EXAMPLES["png"])})["image"].shape == (1, 40, 30)


@pytest.mark.parametrize(
    ("start", "reason"),
    [
        (TensorSpec("png", "uint8", (8, 8)), "decode takes a bytes tensor with one encoded image per row "
                                             "(shape [] or [1]), got uint8 [8, 8] tensor 'png'"),
        (TensorSpec("png", "bytes", (2,)), "got bytes [2] tensor 'png'"),
    ],
)
def test_decode_needs_one_encoded_image_per_row(start: TensorSpec, reason: str) -> None:
    issues: list[str] = []
    resolve([("decode", {})], [start], lambda i, e: issues.append(str(e)))
    assert issues == [reason] or (len(issues) == 1 and reason in issues[0])


def test_decoded_shapes() -> None:
    def fail(i: int, e: Exception) -> None:
        raise AssertionError(str(e))

    for mode, shape in (("RGB", (-1, -1, 3)), ("RGBA", (-1, -1, 4)), ("L", (-1, -1))):
        flow = resolve([("decode", {"mode": mode})], [PNG], fail)
        assert flow.end == (TensorSpec("image", "uint8", shape),)


def _serving_pipeline(module: Any, max_pixels: int) -> Pipeline:
    """A pipeline around the kernel alone: what the server runs it in (its limits reach the kernel)."""
    session: Any = SimpleNamespace(get_inputs=lambda: [], get_providers=lambda: ["CPUExecutionProvider"])
    return Pipeline(name="t", version="1", inputs=[PNG], outputs=[], session=session, pre=module.run,
                    post=lambda t: t, serving=ServingConfig(max_pixels=max_pixels))


def test_the_request_pixel_budget_is_checked_from_the_headers_before_decoding(
        tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    module = _module(tmp_path_factory, "decode_RGB", [("decode", {"mode": "RGB"})])
    x = {"png": _batch(*(encode(_pixels(i, 10, 10)) for i in range(3)))}
    assert _serving_pipeline(module, 300).preprocess(x)["image"].shape == (3, 10, 10, 3)
    decoded: list[int] = []
    convert = Image.Image.convert
    monkeypatch.setattr(Image.Image, "convert", lambda img, *a, **k: decoded.append(1) or convert(img, *a, **k))
    with pytest.raises(RequestTooLarge, match=r"input 'png' row 2: the images up to this one hold 300 pixels, "
                                              r"more than the 250 one request may decode \(serving.max_pixels\)"):
        _serving_pipeline(module, 250).preprocess(x)
    assert decoded == [], "no image is decoded once the sizes are over the budget"
    assert len(module.run(x)["image"]) == 3, "outside a pipeline only the step's own limit applies"


def test_a_decode_error_carries_no_heap_address(tmp_path_factory: pytest.TempPathFactory) -> None:
    module = _module(tmp_path_factory, "decode_RGB", [("decode", {"mode": "RGB"})])
    with pytest.raises(RequestError) as err:
        module.run({"png": _batch(b"not an image at all")})
    assert "0x" not in str(err.value) and "BytesIO" not in str(err.value), str(err.value)
    assert str(err.value).startswith("input 'png' row 0: not a decodable PNG/JPEG image (cannot identify image file")
