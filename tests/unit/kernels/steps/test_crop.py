"""center_crop and pad (letterbox): exact against the numpy reference over image sizes, and the
request or spec errors when an image does not fit."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kernelcheck import Steps, assert_same, compile_steps

from infc.kernels.graph import resolve
from infc.kernels.reference import run_reference
from infc_runtime.abi import RequestError
from infc_runtime.types import TensorSpec

_MODULES: dict[str, Any] = {}


def _module(factory: pytest.TempPathFactory, key: str, steps: Steps, start: TensorSpec) -> Any:
    if key not in _MODULES:
        _MODULES[key] = compile_steps(factory.mktemp(key), "pre", steps, [start])
    return _MODULES[key]


def _images(seed: int, n: int, h: int, w: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


CROP: Steps = [("center_crop", {"size": [5, 4]}), ("to_float", {"scale": 0.5})]
LETTERBOX: Steps = [("resize", {"fit": [12, 12]}), ("pad", {"size": [12, 12], "value": 114}),
                    ("to_float", {"scale": 1 / 255}), ("layout", {"from": "HWC", "to": "CHW"})]


def test_crop_takes_the_centre_rounding_down() -> None:
    x = np.arange(5 * 6, dtype=np.uint8).reshape(1, 5, 6)
    got = run_reference([("center_crop", {"size": [2, 3]})], {"x": x})["x"]
    assert got.tolist() == [[[7, 8, 9], [13, 14, 15]]]  # top (5-2)//2 = 1, left (6-3)//2 = 1


def test_pad_centres_the_image() -> None:
    x = np.full((1, 1, 2), 9, np.uint8)
    got = run_reference([("pad", {"size": [3, 3], "value": 1})], {"x": x})["x"]
    assert got.tolist() == [[[1, 1, 1], [9, 9, 1], [1, 1, 1]]]  # top 1, left 0


@settings(max_examples=30, deadline=None)
@given(h=st.integers(5, 30), w=st.integers(4, 30), seed=st.integers(0, 2**31))
def test_crop_any_size(tmp_path_factory: pytest.TempPathFactory, h: int, w: int, seed: int) -> None:
    module = _module(tmp_path_factory, "crop", CROP, TensorSpec("image", "uint8", (-1, -1, 3)))
    x = {"image": _images(seed, 2, h, w)}
    assert_same(module.run(x), run_reference(CROP, x))


@settings(max_examples=40, deadline=None)
@given(h=st.integers(1, 50), w=st.integers(1, 50), seed=st.integers(0, 2**31))
def test_letterbox_is_one_loop_and_exact(tmp_path_factory: pytest.TempPathFactory, h: int, w: int,
                                         seed: int) -> None:
    module = _module(tmp_path_factory, "letterbox", LETTERBOX, TensorSpec("image", "uint8", (-1, -1, 3)))
    x = {"image": _images(seed, 1, h, w)}
    got = module.run(x)
    assert_same(got, run_reference(LETTERBOX, x))
    assert got["image"].shape == (1, 3, 12, 12)


def test_letterbox_fills_the_border(tmp_path_factory: pytest.TempPathFactory) -> None:
    module = _module(tmp_path_factory, "letterbox", LETTERBOX, TensorSpec("image", "uint8", (-1, -1, 3)))
    got = module.run({"image": np.zeros((1, 2, 6, 3), np.uint8)})["image"][0, 0] * 255
    # fit: 2x6 -> 4x12, centred: rows 4..7 are the image, the rest is the fill
    assert np.allclose(got[:4], 114) and np.allclose(got[8:], 114) and np.all(got[4:8] == 0)


def test_pad_of_a_float_image_static_size(tmp_path: Any) -> None:
    steps: Steps = [("to_float", {}), ("pad", {"size": [6, 5], "value": -1.5})]
    module = compile_steps(tmp_path, "pre", steps, [TensorSpec("image", "uint8", (3, 2))])
    x = {"image": np.arange(12, dtype=np.uint8).reshape(2, 3, 2)}
    assert_same(module.run(x), run_reference(steps, x))


def test_images_that_do_not_fit_fail_their_request(tmp_path_factory: pytest.TempPathFactory) -> None:
    crop = _module(tmp_path_factory, "crop", CROP, TensorSpec("image", "uint8", (-1, -1, 3)))
    with pytest.raises(RequestError, match=r"'image': center_crop to 5x4 needs an image at least that large, "
                                           r"got height 3"):
        crop.run({"image": np.zeros((1, 3, 9, 3), np.uint8)})
    pad = compile_steps(tmp_path_factory.mktemp("pad"), "pre", [("pad", {"size": [4, 4]})],
                        [TensorSpec("image", "uint8", (-1, -1))])
    with pytest.raises(RequestError, match=r"pad to 4x4 needs an image at most that large .* got width 5"):
        pad.run({"image": np.zeros((1, 2, 5), np.uint8)})


@pytest.mark.parametrize(
    ("step", "shape", "dtype", "reason", "key"),
    [
        (("center_crop", {"size": [8, 8]}), (6, 10, 3), "uint8",
         "the crop's height 8 is larger than the image's height 6", "size"),
        (("pad", {"size": [8, 8]}), (6, 10), "uint8", "the pad's width 8 is smaller than the image's width 10",
         "size"),
        (("pad", {"size": [8, 8], "value": 300}), (6, 6), "uint8", "300 is not a uint8 value", "value"),
        (("pad", {"size": [8, 8], "value": 0.5}), (6, 6), "int16", "0.5 is not a int16 value", "value"),
        (("center_crop", {"size": [2, 2]}), (3, 6, 6), "uint8", "channels-first", None),
    ],
)
def test_bad_crop_or_pad_says_why(step: tuple[str, dict[str, Any]], shape: tuple[int, ...], dtype: str,
                                  reason: str, key: str | None) -> None:
    issues: list[tuple[str, str | None]] = []
    resolve([step], [TensorSpec("x", dtype, shape)], lambda i, e: issues.append((str(e), e.key)))
    assert len(issues) == 1 and reason in issues[0][0] and issues[0][1] == key
