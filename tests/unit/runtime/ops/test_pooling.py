"""mean_pool against the step's numpy reference."""

from __future__ import annotations

import numpy as np
import pytest

from infc.kernels.registry import get
from infc_runtime.ops import mean_pool


@pytest.mark.parametrize("shape", [(2, 5, 3), (1, 1, 4), (2, 2, 4, 3)])
def test_mean_pool_matches_the_reference(shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=shape).astype(np.float32)
    mask = (rng.random(shape[:-1]) > 0.3).astype(np.int64)
    mask[0, ...] = 0  # a row with no weight: zeros
    got = mean_pool(x, mask)
    (want,) = get("mean_pool").reference(x, {}, mask=mask)
    assert got.shape == want.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
