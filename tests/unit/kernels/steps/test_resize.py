"""resize: its sampling convention on values worked out by hand, and the generated loop against the numpy
reference over many sizes (1x1, odd, large up- and downscales) and dtypes.

Tolerance: none. The kernel and the reference build the same float32 tables and do the same float32
operations in the same order (no fast-math, no contraction), so even float results match bit for bit;
integer images are rounded the same way.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kernelcheck import Steps, assert_same, compile_steps

from infc.kernels.graph import resolve
from infc.kernels.reference import run_reference
from infc.kernels.steps.resize import fit_size, linear_taps, nearest_taps, shorter_size
from infc_runtime.types import TensorSpec

_MODULES: dict[str, Any] = {}


def _module(factory: pytest.TempPathFactory, key: str, steps: Steps, start: TensorSpec) -> Any:
    """One compiled module per step list (images of any size), shared by the examples hypothesis draws."""
    if key not in _MODULES:
        _MODULES[key] = compile_steps(factory.mktemp(key), "pre", steps, [start])
    return _MODULES[key]


def _images(seed: int, n: int, h: int, w: int, c: int | None = 3, dtype: str = "uint8") -> np.ndarray:
    rng = np.random.default_rng(seed)
    shape = (n, h, w) if c is None else (n, h, w, c)
    if dtype.startswith("float"):
        return (rng.normal(size=shape) * 100).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(info.min, int(info.max) + 1, shape, dtype=dtype)


def _resize(x: np.ndarray, **params: Any) -> np.ndarray:
    return run_reference([("resize", params)], {"x": x})["x"]


# -- the convention, by hand ---------------------------------------------------
def test_bilinear_upscale_uses_half_pixel_centres() -> None:
    # 2 -> 4: outputs sample the input at -0.25 (clamped to 0), 0.25, 0.75, 1.25 (clamped to 1)
    row = np.array([[[0], [100]]], np.float32).reshape(1, 1, 2)
    assert _resize(row, size=[1, 4]).tolist() == [[[0.0, 25.0, 75.0, 100.0]]]
    i0, i1, w0, w1 = linear_taps(2, 4)
    assert (i0.tolist(), i1.tolist(), w1.tolist()) == ([0, 0, 0, 1], [1, 1, 1, 1], [0.0, 0.25, 0.75, 0.0])


def test_bilinear_rounds_integers_half_up_and_keeps_the_dtype() -> None:
    # 2 -> 4 over [0, 1]: 0.25 and 0.75 -> 0 and 1; over [0, 2]: 0.5 -> 1 and 1.5 -> 2
    got = _resize(np.array([[[0, 1], [0, 2]]], np.uint8), size=[2, 4])
    assert got.dtype == np.uint8
    assert got.tolist() == [[[0, 0, 1, 1], [0, 1, 2, 2]]]


def test_bilinear_downscale_by_two_averages_pairs() -> None:
    # 4 -> 2: samples at 0.5 and 2.5, the mean of pixels (0, 1) and (2, 3)
    assert _resize(np.array([[[10, 20, 30, 50]]], np.float32), size=[1, 2]).tolist() == [[[15.0, 40.0]]]


def test_nearest_takes_the_pixel_under_the_centre() -> None:
    assert nearest_taps(3, 6).tolist() == [0, 0, 1, 1, 2, 2]
    assert nearest_taps(4, 2).tolist() == [1, 3]  # centres 1.0 and 3.0
    x = np.arange(12, dtype=np.uint8).reshape(1, 3, 4)
    assert _resize(x, size=[2, 2], method="nearest").tolist() == [[[1, 3], [9, 11]]]


def test_shorter_and_fit_sizes() -> None:
    assert shorter_size(480, 640, 256) == (256, 341)  # torchvision: int(256 * 640 / 480)
    assert shorter_size(640, 480, 256) == (341, 256)
    assert shorter_size(5, 5, 3) == (3, 3)
    assert fit_size(480, 640, (640, 640)) == (480, 640)
    assert fit_size(1000, 10, (64, 64)) == (64, 1)  # never zero
    assert fit_size(3, 4, (10, 10)) == (8, 10)


# -- generated loop == reference -------------------------------------------
@settings(max_examples=40, deadline=None)
@given(h=st.integers(1, 48), w=st.integers(1, 48), n=st.integers(1, 3), seed=st.integers(0, 2**31))
def test_bilinear_chain_to_a_fixed_size(tmp_path_factory: pytest.TempPathFactory, h: int, w: int, n: int,
                                        seed: int) -> None:
    steps: Steps = [("resize", {"size": [7, 5]}), ("to_float", {"scale": 1 / 255}),
                    ("normalize", {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}),
                    ("layout", {"from": "HWC", "to": "CHW"})]
    module = _module(tmp_path_factory, "bilinear_chain", steps, TensorSpec("image", "uint8", (-1, -1, 3)))
    x = {"image": _images(seed, n, h, w)}
    assert_same(module.run(x), run_reference(steps, x))


@settings(max_examples=30, deadline=None)
@given(h=st.integers(1, 60), w=st.integers(1, 60), method=st.sampled_from(["nearest", "bilinear"]),
       seed=st.integers(0, 2**31))
def test_shorter_side_any_size(tmp_path_factory: pytest.TempPathFactory, h: int, w: int, method: str,
                               seed: int) -> None:
    steps: Steps = [("resize", {"shorter": 6, "method": method})]
    module = _module(tmp_path_factory, f"shorter_{method}", steps, TensorSpec("image", "uint8", (-1, -1, 3)))
    x = {"image": _images(seed, 2, h, w)}
    got = module.run(x)
    assert min(got["image"].shape[1:3]) == 6
    assert_same(got, run_reference(steps, x))


@settings(max_examples=30, deadline=None)
@given(h=st.integers(1, 40), w=st.integers(1, 40), seed=st.integers(0, 2**31))
def test_fit_grayscale_float(tmp_path_factory: pytest.TempPathFactory, h: int, w: int, seed: int) -> None:
    steps: Steps = [("resize", {"fit": [9, 13]})]
    module = _module(tmp_path_factory, "fit_gray", steps, TensorSpec("image", "float32", (-1, -1)))
    x = {"image": _images(seed, 1, h, w, c=None, dtype="float32")}
    got = module.run(x)
    assert got["image"].shape[1] <= 9 and got["image"].shape[2] <= 13
    assert_same(got, run_reference(steps, x))


@pytest.mark.parametrize("dtype", ["uint8", "int8", "uint16", "int16", "float32", "float64"])
@pytest.mark.parametrize("method", ["bilinear", "nearest"])
def test_every_dtype(tmp_path_factory: pytest.TempPathFactory, dtype: str, method: str) -> None:
    steps: Steps = [("resize", {"size": [5, 9], "method": method})]
    module = _module(tmp_path_factory, f"dtype_{dtype}_{method}", steps, TensorSpec("image", dtype, (-1, -1, 2)))
    for seed, (h, w) in enumerate([(1, 1), (3, 17), (11, 4), (40, 40)]):
        x = {"image": _images(seed, 2, h, w, c=2, dtype=dtype)}
        got = module.run(x)
        assert got["image"].dtype == np.dtype(dtype)
        assert_same(got, run_reference(steps, x))


@pytest.mark.parametrize(("src", "dst"), [((2, 3), (200, 300)), ((300, 200), (3, 2)), ((1, 1), (1, 1)),
                                          ((1, 7), (9, 1)), ((97, 1), (1, 64))])
def test_large_up_and_downscales(tmp_path: Any, src: tuple[int, int], dst: tuple[int, int]) -> None:
    steps: Steps = [("resize", {"size": list(dst)}), ("to_float", {})]
    module = compile_steps(tmp_path, "pre", steps, [TensorSpec("image", "uint8", (*src, 3))])  # static sizes
    x = {"image": _images(1, 2, *src)}
    assert_same(module.run(x), run_reference(steps, x))


def test_generated_taps_are_the_numpy_taps(tmp_path_factory: pytest.TempPathFactory) -> None:
    steps: Steps = [("resize", {"size": [7, 5]})]
    bilinear = _module(tmp_path_factory, "taps_bilinear", steps, TensorSpec("image", "uint8", (-1, -1)))
    nearest = _module(tmp_path_factory, "taps_nearest", [("resize", {"size": [7, 5], "method": "nearest"})],
                      TensorSpec("image", "uint8", (-1, -1)))
    for n_in in [1, 2, 3, 7, 100, 480, 640]:
        for n_out in [1, 2, 5, 224, 333]:
            for got, want in zip(bilinear.linear_taps(n_in, n_out), linear_taps(n_in, n_out), strict=True):
                np.testing.assert_array_equal(got, want)
            np.testing.assert_array_equal(nearest.nearest_taps(n_in, n_out), nearest_taps(n_in, n_out))


def test_an_empty_image_fails_its_request(tmp_path_factory: pytest.TempPathFactory) -> None:
    from infc_runtime.abi import RequestError

    module = _module(tmp_path_factory, "shorter_bilinear", [("resize", {"shorter": 6, "method": "bilinear"})],
                     TensorSpec("image", "uint8", (-1, -1, 3)))
    with pytest.raises(RequestError, match=r"'image': resize needs an image of at least 1x1 pixels, got 0x5"):
        module.run({"image": np.zeros((1, 0, 5, 3), np.uint8)})


# -- shape rule -----------------------------------------------------------------
@pytest.mark.parametrize(
    ("params", "shape", "reason"),
    [
        ({}, (8, 8, 3), "give exactly one of `size: [h, w]`, `shorter: N` or `fit: [h, w]`, got none"),
        ({"size": [4, 4], "shorter": 3}, (8, 8, 3), "got size and shorter"),
        ({"size": [4, 4]}, (3, 8, 8), "it looks channels-first"),
        ({"size": [4, 4]}, (8, 8, 3, 1), "takes an image [H, W] or [H, W, C] with 1 to 4 channels last"),
        ({"size": [4, 4]}, (8,), "got shape [8]"),
    ],
)
def test_bad_resize_says_why(params: dict[str, Any], shape: tuple[int, ...], reason: str) -> None:
    issues: list[str] = []
    resolve([("resize", params)], [TensorSpec("x", "uint8", shape)], lambda i, issue: issues.append(str(issue)))
    assert len(issues) == 1 and reason in issues[0]


@pytest.mark.parametrize("dtype", ["bytes", "int64"])
def test_resize_refuses_bytes_and_wide_integers(dtype: str) -> None:
    issues: list[str] = []
    resolve([("resize", {"size": [2, 2]})], [TensorSpec("x", dtype, (4, 4))], lambda i, e: issues.append(str(e)))
    assert issues and f"got {dtype} tensor 'x'" in issues[0]


def test_static_output_shapes() -> None:
    flow = resolve([("resize", {"shorter": 256})], [TensorSpec("x", "uint8", (480, 640, 3))], _no_issue)
    assert flow.end[0].shape == (256, 341, 3)
    flow = resolve([("resize", {"fit": [64, 64]})], [TensorSpec("x", "uint8", (-1, -1))], _no_issue)
    assert flow.end[0].shape == (-1, -1)


def _no_issue(i: int, issue: Exception) -> None:
    raise AssertionError(str(issue))
