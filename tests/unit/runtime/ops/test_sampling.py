"""The resize tables against their numpy twins, and per_image over lists of images."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from infc.kernels.steps.resize import linear_taps as linear_ref
from infc.kernels.steps.resize import nearest_taps as nearest_ref
from infc_runtime.abi import RequestError
from infc_runtime.ops import linear_taps, nearest_taps, per_image


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 2000), st.integers(1, 2000))
def test_taps_equal_their_numpy_twins(n_in: int, n_out: int) -> None:
    for got, want in zip(linear_taps(n_in, n_out), linear_ref(n_in, n_out), strict=True):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(nearest_taps(n_in, n_out), nearest_ref(n_in, n_out))


def test_per_image_runs_a_list_image_by_image() -> None:
    def double(x: np.ndarray) -> np.ndarray:
        return x * 2

    batch = np.arange(6).reshape(2, 3)
    np.testing.assert_array_equal(per_image(double, batch, "image"), batch * 2)
    images = [np.ones((2, 2)), np.zeros((2, 2))]
    np.testing.assert_array_equal(per_image(double, images, "image"), np.stack(images) * 2)
    with pytest.raises(RequestError, match="'image': the images of one request still differ in shape"):
        per_image(double, [np.ones((2, 2)), np.ones((3, 2))], "image")
