"""Pipeline behaviour the server relies on: stage timings, sub-batches, Numba caches across processes, the
non-finite rule and the limits kernels see."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
from runtime_bundle import INPUTS, OUTPUTS, make_request, write_bundle

from infc_runtime.abi import KernelInfo, RequestError, request_limits
from infc_runtime.pipeline import Pipeline, load_kernel_module, make_session
from infc_runtime.types import ServingConfig, Tensors


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


def _passing_pipeline(bundle: Path, serving: ServingConfig, seen: list[ServingConfig | None] | None = None,
                      columns: dict[str, tuple[str, ...]] | None = None) -> Pipeline:
    """The toy bundle's pipeline with a pre kernel that lets non-finite offsets through (and records the limits
    it saw); `columns` is what a kernel module may declare as COLUMNS."""

    def run(tensors: Tensors) -> Tensors:
        if seen is not None:
            seen.append(request_limits())
        return {"x": tensors["pixels"].astype(np.float32) / 255, "offset": tensors["offset"]}

    return Pipeline(name="toy", version="1", inputs=INPUTS, outputs=OUTPUTS,
                    session=make_session(bundle / "model.onnx"), pre=KernelInfo(run=run, columns=columns or {}),
                    post=load_kernel_module(bundle / "kernels" / "post.py").run, serving=serving)


def test_a_non_finite_model_input_fails_its_request_naming_row_input_and_field(tmp_path: Path) -> None:
    bundle = write_bundle(tmp_path)
    pipeline = _passing_pipeline(bundle, ServingConfig(), columns={"offset": ("a", "b", "c")})
    bad = make_request(3, seed=1)
    bad["offset"][2, 1] = np.nan
    good = make_request(2, seed=2)
    results = pipeline.run_batch([good, bad, good])
    assert isinstance(results[0], dict) and isinstance(results[2], dict), "only the bad request fails"
    assert isinstance(results[1], RequestError) and str(results[1]) == (
        "row 2: model input 'offset' holds nan at column 1 (field 'b') after pre-processing; the model takes "
        "finite values only (serving.allow_non_finite is false; a fill_missing or clip step in preprocess maps "
        "such values)")
    bad["offset"][2, 1] = -np.inf
    bad["offset"][0, 2] = np.inf
    unnamed = _passing_pipeline(bundle, ServingConfig())
    assert str(unnamed.run_batch([bad])[0]).startswith("row 0: model input 'offset' holds inf at column 2 after")


def test_non_finite_inputs_reach_the_model_when_the_spec_allows_them(tmp_path: Path) -> None:
    pipeline = _passing_pipeline(write_bundle(tmp_path), ServingConfig(allow_non_finite=True))
    bad = make_request(1)
    bad["offset"][0, 0] = np.nan
    (result,) = pipeline.run_batch([bad])
    assert isinstance(result, dict) and np.isnan(result["probabilities"]).any()


def test_kernels_see_the_serving_limits_while_they_preprocess(tmp_path: Path) -> None:
    seen: list[ServingConfig | None] = []
    serving = ServingConfig(max_pixels=1234)
    pipeline = _passing_pipeline(write_bundle(tmp_path), serving, seen)
    pipeline.run_batch([make_request(1)])
    assert seen == [serving] and request_limits() is None, "set for the kernel only"
