"""scale and channel_order, and whole image chains fused into one loop, against the numpy reference.

Exact: the loop does the reference's float32 operations in the same order.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kernelcheck import Steps, assert_same, compile_steps

from infc.kernels.graph import resolve
from infc.kernels.reference import run_reference
from infc_runtime.types import TensorSpec

_MODULES: dict[str, Any] = {}


def _module(factory: pytest.TempPathFactory, key: str, steps: Steps, start: TensorSpec) -> Any:
    if key not in _MODULES:
        _MODULES[key] = compile_steps(factory.mktemp(key), "pre", steps, [start])
    return _MODULES[key]


def _loops(module: Any) -> int:
    return len(re.findall(r"^def \w+_loop\(", Path(module.__file__).read_text(), re.M))


@pytest.mark.parametrize("dtype", ["uint8", "int16", "float32", "float64", "bool"])
def test_scale(tmp_path: Path, dtype: str) -> None:
    steps: Steps = [("scale", {"factor": 1 / 127.5, "offset": -1.0})]
    module = compile_steps(tmp_path, "pre", steps, [TensorSpec("x", dtype, (4, 3))])
    x = {"x": (np.arange(2 * 4 * 3).reshape(2, 4, 3) * 11 % 256).astype(dtype)}
    got = module.run(x)
    assert got["x"].dtype == np.float32
    assert_same(got, run_reference(steps, x))


def test_scale_without_offset_is_a_product() -> None:
    got = run_reference([("scale", {"factor": 0.5})], {"x": np.array([[2, 4]], np.uint8)})["x"]
    assert got.tolist() == [[1.0, 2.0]]


@pytest.mark.parametrize(
    ("params", "channels", "expect"),
    [
        ({"from": "RGB", "to": "BGR"}, 3, [2, 1, 0]),
        ({"from": "RGBA", "to": "RGB"}, 4, [0, 1, 2]),
        ({"from": "RGBA", "to": "ABGR"}, 4, [3, 2, 1, 0]),
        ({"from": "RGB", "to": "GBR"}, 3, [1, 2, 0]),
        ({"from": "RGB", "to": "G"}, 3, [1]),
    ],
)
def test_channel_order(tmp_path: Path, params: dict[str, Any], channels: int, expect: list[int]) -> None:
    steps: Steps = [("channel_order", params)]
    x = {"image": np.random.default_rng(0).integers(0, 256, (2, 3, 5, channels), dtype=np.uint8)}
    module = compile_steps(tmp_path, "pre", steps, [TensorSpec("image", "uint8", (-1, -1, channels))])
    got = module.run(x)
    np.testing.assert_array_equal(got["image"], x["image"][..., expect])
    assert_same(got, run_reference(steps, x))


def test_channel_order_on_a_channels_first_axis(tmp_path: Path) -> None:
    steps: Steps = [("layout", {"from": "HWC", "to": "CHW"}), ("channel_order", {"from": "RGB", "to": "BGR",
                                                                                 "axis": 0})]
    x = {"image": np.random.default_rng(1).integers(0, 256, (1, 4, 6, 3), dtype=np.uint8)}
    module = compile_steps(tmp_path, "pre", steps, [TensorSpec("image", "uint8", (4, 6, 3))])
    got = module.run(x)
    np.testing.assert_array_equal(got["image"], x["image"].transpose(0, 3, 1, 2)[:, ::-1])
    assert_same(got, run_reference(steps, x))


@pytest.mark.parametrize(
    ("params", "shape", "reason", "key"),
    [
        ({"from": "RGB", "to": "BGRA"}, (4, 4, 3), "channels 'A' of 'to' are not in 'from' 'RGB'", "to"),
        ({"from": "RGBA", "to": "RGB"}, (4, 4, 3), "'RGBA' names 4 channels, but axis 2 of 'x' (shape [4, 4, 3]) "
                                                   "has 3", "from"),
        ({"from": "RGB", "to": "BGR"}, (4, 4, -1), "has known only at run time", "from"),
        ({"from": "RRB", "to": "BGR"}, (4, 4, 3), "channel letters must be unique, got 'RRB'", "from"),
        ({"from": "RGB", "to": "BGR", "axis": 3}, (4, 4, 3), "axis 3 is out of range", "axis"),
    ],
)
def test_bad_channel_order_says_why(params: dict[str, Any], shape: tuple[int, ...], reason: str, key: str) -> None:
    issues: list[tuple[str, str | None]] = []
    resolve([("channel_order", params)], [TensorSpec("x", "uint8", shape)],
            lambda i, e: issues.append((str(e), e.key)))
    assert len(issues) == 1 and reason in issues[0][0] and issues[0][1] == key


# the whole family in one loop: crop, reorder, resize, scale, normalize, layout
EVERYTHING: Steps = [
    ("center_crop", {"size": [20, 18]}),
    ("channel_order", {"from": "BGR", "to": "RGB"}),
    ("resize", {"size": [9, 11], "method": "bilinear"}),
    ("scale", {"factor": 1 / 255}),
    ("normalize", {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}),
    ("layout", {"from": "HWC", "to": "NCHW"}),
]


@settings(max_examples=30, deadline=None)
@given(h=st.integers(20, 64), w=st.integers(18, 64), n=st.integers(1, 3), seed=st.integers(0, 2**31))
def test_the_whole_family_is_one_loop_and_exact(tmp_path_factory: pytest.TempPathFactory, h: int, w: int, n: int,
                                                seed: int) -> None:
    module = _module(tmp_path_factory, "everything", EVERYTHING, TensorSpec("image", "uint8", (-1, -1, 3)))
    assert _loops(module) == 1
    x = {"image": np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)}
    got = module.run(x)
    assert got["image"].shape == (n, 1, 3, 9, 11)
    assert_same(got, run_reference(EVERYTHING, x))


@settings(max_examples=20, deadline=None)
@given(h=st.integers(1, 30), w=st.integers(1, 30), seed=st.integers(0, 2**31))
def test_float_image_resized_after_normalize(tmp_path_factory: pytest.TempPathFactory, h: int, w: int,
                                             seed: int) -> None:
    # per-element steps before the sampler: the loop evaluates them at each of the four samples
    steps: Steps = [("to_float", {"scale": 1 / 255}), ("normalize", {"mean": [0.5], "std": [0.25]}),
                    ("resize", {"shorter": 5}), ("center_crop", {"size": [5, 5]}),
                    ("layout", {"from": "HW", "to": "CHW"})]
    module = _module(tmp_path_factory, "float_resize", steps, TensorSpec("image", "uint8", (-1, -1)))
    assert _loops(module) == 1
    x = {"image": np.random.default_rng(seed).integers(0, 256, (2, h, w), dtype=np.uint8)}
    assert_same(module.run(x), run_reference(steps, x))
