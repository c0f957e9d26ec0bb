"""Pipeline behaviour the server relies on: stage timings, sub-batches, Numba caches across processes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
from runtime_bundle import make_request, write_bundle

from infc_runtime.pipeline import Pipeline


def test_run_batch_reports_stage_timings(tmp_path: Path) -> None:
    pipeline = Pipeline.load(write_bundle(tmp_path))
    timings: dict[str, float] = {}
    results = pipeline.run_batch([make_request(2), make_request(1, seed=1)], timings=timings)
    assert sorted(timings) == ["infer", "post", "pre"] and all(t > 0 for t in timings.values())
    assert [len(r["label"]) for r in results if isinstance(r, dict)] == [2, 1]


def test_requests_that_do_not_concatenate_fail_alone(tmp_path: Path) -> None:
    pipeline = Pipeline.load(write_bundle(tmp_path))
    odd = {"pixels": np.zeros((1, 5), np.uint8), "offset": np.zeros((1, 3), np.float32)}
    good = [make_request(2, seed=i) for i in range(2)]
    results = pipeline.run_batch([good[0], odd, good[1]])
    assert isinstance(results[1], Exception)  # the model rejects 5 pixels; only that request fails
    for result, request in zip([results[0], results[2]], good, strict=True):
        assert isinstance(result, dict)
        np.testing.assert_array_equal(result["class_id"], pipeline.run(request)["class_id"])


def test_numba_cache_written_by_another_process_loads(tmp_path: Path) -> None:
    bundle = write_bundle(tmp_path / "bundle", numba=True)
    script = "import sys; from infc_runtime.pipeline import Pipeline; Pipeline.load(sys.argv[1]).warmup()"
    subprocess.run([sys.executable, "-c", script, str(bundle)], check=True, timeout=120)
    assert list((bundle / "kernels" / "__pycache__").glob("*.nbi")), "the other process left no Numba cache"
    # kernel module names must not depend on the (per-process randomized) hash() of the path
    result = Pipeline.load(bundle).run(make_request(3))
    assert result["probabilities"].shape == (3, 3)
