"""infc_runtime.drift: binning, PSI, counted sampling, the sliding window and the report, against numpy references."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from infc.drift import make_reference, watched_groups
from infc.spec import Monitor
from infc_runtime.abi import KernelInfo
from infc_runtime.drift import SLOTS, DriftMonitor, Group, bin_index, group_values, psi


def test_bins_are_open_at_both_ends_and_match_searchsorted() -> None:
    rng = np.random.default_rng(0)
    edges = np.array([[-1.0, 0.0, 1.0], [0.5, 2.0, math.inf]])
    small = rng.normal(size=(5, 2, 3))
    large = rng.normal(size=(3000, 2, 40))  # past the broadcast limit: searched per feature
    for values in (small, large):
        got = bin_index(values, edges)
        for f in range(2):
            np.testing.assert_array_equal(got[:, f], np.searchsorted(edges[f], values[:, f], side="right"))
    assert bin_index(np.array([[[-1e9, 1e9]]]), edges[:1]).tolist() == [[[0, 3]]]


def test_psi_matches_its_formula_floors_empty_bins_and_is_nan_without_data() -> None:
    q = np.array([0.25, 0.25, 0.5])
    counts = np.array([10, 30, 60])
    p = counts / counts.sum()
    assert psi(counts, q) == pytest.approx(float(((p - q) * np.log(p / q)).sum()))
    assert psi(q * 100, q) == pytest.approx(0.0)
    empty_bin = psi(np.array([0, 50, 50]), q)
    p2 = np.array([1e-4, 0.5, 0.5])
    assert empty_bin == pytest.approx(float(((p2 - q) * np.log(p2 / q)).sum()))
    assert math.isnan(psi(np.zeros(3), q))


def test_group_values_read_columns_channels_and_lengths() -> None:
    table = np.arange(12, dtype=np.float32).reshape(4, 3)
    assert group_values(table, Group("x", "column", ("a", "b", "c"))).shape == (4, 3, 1)
    images = np.arange(2 * 3 * 4 * 4).reshape(2, 3, 4, 4)
    nchw = group_values(images, Group("x", "channel", ("c0", "c1", "c2"), axis=1))
    np.testing.assert_array_equal(nchw[1, 2], images[1, 2].ravel())
    nhwc = group_values(images.transpose(0, 2, 3, 1), Group("x", "channel", ("c0", "c1", "c2"), axis=-1))
    np.testing.assert_array_equal(nhwc[1, 2], images[1, 2].ravel())
    tokens = np.array([[5, 6, 0, 0], [7, 0, 0, 0]])
    assert group_values(tokens, Group("ids", "length", ("ids.length",), pad=0)).ravel().tolist() == [2.0, 1.0]


def _reference(window: int = 1000, sample_rate: float = 1.0) -> dict[str, Any]:
    rng = np.random.default_rng(1)
    reference_rows = rng.normal(size=(4000, 3)).astype(np.float32)
    pre = KernelInfo(run=lambda t: {"x": t["x"]}, columns={"x": ("a", "b", "c")})
    probabilities = rng.dirichlet([1, 1, 1], size=500)
    return make_reference(Monitor(window=window, sample_rate=sample_rate), pre, {"x": reference_rows},
                          {"probabilities": probabilities}, [])


def _monitor(window: int = 1000, sample_rate: float = 1.0) -> tuple[DriftMonitor, np.ndarray]:
    reference = _reference(window, sample_rate)
    probabilities = np.random.default_rng(1).dirichlet([1, 1, 1], size=500)
    return DriftMonitor(reference, "m", "1"), probabilities


def test_a_shifted_feature_alerts_the_others_stay_ok() -> None:
    monitor, probabilities = _monitor()
    rows = np.random.default_rng(2).normal(size=(1000, 3))
    rows[:, 1] += 2.0  # two standard deviations
    for start in range(0, 1000, 50):
        monitor.observe({"x": rows[start:start + 50]}, {"probabilities": probabilities[:50]})
    report = monitor.report()
    first, *others = report["features"]
    assert first["name"] == "b" and first["psi"] > 0.25 and first["status"] == "alert"
    assert all(f["psi"] < 0.1 and f["status"] == "ok" for f in others)
    assert first["out_of_range_rate"] > 0 and report["status"] == "alert"
    assert report["window_rows"] == 1000 and report["prediction"]["kind"] == "classifier"


def test_sampling_counts_every_nth_row_across_batches() -> None:
    monitor, _ = _monitor(sample_rate=0.1)
    for n in (3, 7, 15, 1, 24):  # 50 rows: rows 0, 10, 20, 30, 40 are taken, wherever the batches split
        monitor.observe({"x": np.zeros((n, 3))}, {})
    assert monitor.report()["window_rows"] == 5


def test_the_window_slides_and_its_memory_is_fixed() -> None:
    monitor, _ = _monitor(window=1000)
    held = [a.nbytes for a in (monitor._counts, monitor._rows, monitor._classes)]
    shifted = np.full((100, 3), 5.0)
    for _ in range(10):
        monitor.observe({"x": shifted}, {})
    assert monitor.report()["features"][0]["psi"] > 1
    calm = np.random.default_rng(3).normal(size=(100, 3))
    for _ in range(SLOTS + 1):  # a whole window of unshifted rows pushes the shifted ones out
        monitor.observe({"x": calm}, {})
    report = monitor.report()
    assert report["window_rows"] <= 1000 and report["features"][0]["out_of_range_rate"] == 0.0
    assert [a.nbytes for a in (monitor._counts, monitor._rows, monitor._classes)] == held


def test_nan_rate_and_prediction_shift() -> None:
    monitor, probabilities = _monitor()
    rows = np.random.default_rng(4).normal(size=(200, 3))
    rows[::4, 0] = np.nan
    confident = np.zeros((200, 3))
    confident[:, 0] = 1.0  # every row predicted class 0 with confidence 1
    monitor.observe({"x": rows}, {"probabilities": confident})
    report = monitor.report()
    (a,) = [f for f in report["features"] if f["name"] == "a"]
    assert a["nan_rate"] == 0.25
    prediction = report["prediction"]
    assert prediction["confidence_mean"] == 1.0 > prediction["reference_confidence_mean"]
    assert prediction["psi"] > 0.25 and prediction["class_fractions"] == [1.0, 0.0, 0.0]


def test_embeddings_report_norm_and_mean_shift() -> None:
    rng = np.random.default_rng(5)
    vectors = rng.normal(size=(300, 8)) + 3.0
    pre = KernelInfo(run=lambda t: {"x": t["x"]})
    reference = make_reference(Monitor(sample_rate=1.0), pre, {"x": np.zeros((10, 2))}, {"embedding": vectors},
                               [("mean_pool", "x")])
    assert reference["prediction"]["kind"] == "embedding"
    monitor = DriftMonitor(reference, "m", "1")
    monitor.observe({"x": np.zeros((300, 2))}, {"embedding": vectors})
    assert monitor.report()["prediction"]["mean_shift"] == pytest.approx(0.0, abs=1e-6)
    monitor.observe({"x": np.zeros((300, 2))}, {"embedding": -vectors})
    assert monitor.report()["prediction"]["mean_shift"] > 0.5


def test_watched_groups_name_columns_channels_and_token_lengths() -> None:
    inputs = {"ids": np.zeros((2, 16), np.int64), "image": np.zeros((2, 3, 8, 8), np.float32),
              "table": np.zeros((2, 2), np.float32)}
    groups = watched_groups(inputs, None, {"table": ("age", "income")}, {"ids": 0})
    assert [(g.kind, g.names) for g in groups] == [
        ("length", ("ids.length",)), ("channel", ("image.channel0", "image.channel1", "image.channel2")),
        ("column", ("table.age", "table.income"))]
    assert [g.input for g in watched_groups(inputs, ["table"], {}, {})] == ["table"]
    wide = watched_groups({"v": np.zeros((2, 5000), np.float32)}, None, {}, {})
    assert [(g.kind, g.names) for g in wide] == [("value", ("v",))]


def test_logits_a_softmax_step_reads_make_a_classifier() -> None:
    logits = np.random.default_rng(6).normal(size=(400, 4)) * 3
    pre = KernelInfo(run=lambda t: {"x": t["x"]})
    requests = {"x": np.zeros((10, 2))}
    assert make_reference(Monitor(), pre, requests, {"logits": logits}, [])["prediction"] is None
    reference = make_reference(Monitor(sample_rate=1.0), pre, requests, {"logits": logits}, [("softmax", "logits")])
    prediction = reference["prediction"]
    assert (prediction["kind"], prediction["output"], prediction["softmax"]) == ("classifier", "logits", True)
    monitor = DriftMonitor(reference, "m", "1")
    monitor.observe({"x": np.zeros((400, 2))}, {"logits": logits})
    report = monitor.report()["prediction"]
    assert report["psi"] == pytest.approx(0.0, abs=1e-3)
    assert report["confidence_mean"] == pytest.approx(prediction["confidence_mean"], abs=1e-5)


def test_out_of_range_counts_both_tails_and_infinities_but_not_nan() -> None:
    reference = _reference()
    lo, hi = reference["features"][0]["min"], reference["features"][0]["max"]
    rows = np.zeros((8, 3))
    rows[:, 0] = [lo - 1, lo, hi, hi + 1, np.inf, -np.inf, np.nan, 0.0]
    fresh = DriftMonitor(reference, "m", "1")
    fresh.observe({"x": rows}, {})
    (a,) = [f for f in fresh.report()["features"] if f["name"] == "a"]
    assert a["out_of_range_rate"] == 4 / 8 and a["nan_rate"] == 1 / 8 and a["values"] == 8
