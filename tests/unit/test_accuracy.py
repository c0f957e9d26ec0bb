"""infc.accuracy: an output of one integer per sample is a class label, compared as it is; the
embedding metrics recall_at_k and spearman; the registry's per-metric defaults.

(The older score metrics are tested with the gates, in test_gates.py.)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from infc import accuracy as metrics
from infc.accuracy import (
    METRICS,
    Metric,
    MetricError,
    accuracy,
    is_label,
    neighbour_agreement,
    recall_at_k,
    register,
    spearman,
    top1_agreement,
)

TREE = Path(__file__).resolve().parents[2] / "tests" / "models" / "tree.onnx"


@pytest.mark.parametrize(("value", "expected"), [
    (np.array([0, 1, 1], np.int64), True),
    (np.array([[0], [1], [1]], np.int32), True),  # [N, 1]: still one value per sample
    (np.array([0, 1, 1], np.uint8), True),
    (np.array([0.0, 1.0, 1.0], np.float32), False),  # a score, not a label
    (np.array([[0, 1], [1, 0]], np.int64), False),  # two values per sample
    (np.array([True, False]), False),
    (np.array(3, np.int64), False),  # no sample axis
    (np.zeros(0, np.int64), False),
])
def test_is_label(value: np.ndarray, expected: bool) -> None:
    assert is_label(value) is expected


def test_top1_agreement_on_labels_is_label_agreement() -> None:
    ref = np.array([0, 1, 2, 1], np.int64)
    assert top1_agreement(ref, np.array([0, 1, 2, 0], np.int64)) == 0.75
    assert top1_agreement(ref, ref) == 1.0
    assert top1_agreement(ref[:, None], np.array([[0], [2], [2], [1]], np.int64)) == 0.75
    with pytest.raises(MetricError, match="differ in shape"):
        top1_agreement(ref, ref[:3])


def test_accuracy_on_labels_counts_equal_labels() -> None:
    predicted = np.array([1, 0, 1, 1], np.int64)
    assert accuracy(predicted, predicted, np.array([1, 0, 0, 1])) == 0.75
    with pytest.raises(MetricError, match="needs `labels`"):
        accuracy(predicted, predicted, None)
    with pytest.raises(MetricError, match="3 labels for 4 samples"):
        accuracy(predicted, predicted, np.array([1, 0, 0]))


def test_a_float_score_per_sample_is_still_refused() -> None:
    scores = np.array([0.2, 0.9, 0.4], np.float32)
    with pytest.raises(MetricError, match="one value per sample"):
        top1_agreement(scores, scores)
    with pytest.raises(MetricError, match="one value per sample"):
        accuracy(scores, scores, np.array([0, 1, 0]))


def test_scores_are_unchanged_by_the_label_rule() -> None:
    ref = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]], np.float32)
    cand = np.array([[0.2, 0.8], [0.4, 0.6], [0.3, 0.7]], np.float32)
    assert top1_agreement(ref, cand) == pytest.approx(2 / 3)
    assert accuracy(ref, cand, np.array([1, 0, 1])) == pytest.approx(2 / 3)


def test_skl2onnx_label_output_under_onnxruntime() -> None:
    """tree.onnx (skl2onnx) gives `label` (int64 [N]) first and `probabilities` second: both agree."""
    session = ort.InferenceSession(str(TREE), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).normal(10.0, 5.0, (64, 30)).astype(np.float32)
    label, probabilities = session.run(None, {"X": x})
    assert label.dtype == np.int64 and label.shape == (64,)
    assert METRICS["top1_agreement"].compute(label, label.copy(), None) == 1.0
    flipped = label.copy()
    flipped[:16] = 1 - flipped[:16]
    assert METRICS["top1_agreement"].compute(label, flipped, None) == 0.75
    assert METRICS["accuracy"].compute(label, label, label) == 1.0
    # the label is the highest-scoring class of the second output
    assert top1_agreement(probabilities, probabilities) == 1.0
    assert (probabilities.argmax(axis=1) == label).all()


# ---------------------------------------------------------------- embeddings: recall_at_k, spearman


def _at(*degrees: float) -> np.ndarray:
    """2-d unit vectors at these angles: cosine similarity is the cosine of the angle between them."""
    rad = np.radians(degrees)
    return np.stack([np.cos(rad), np.sin(rad)], axis=1)


# two clusters 90 degrees apart; in each, the middle sample's two neighbours are nearly tied
# (10 and 10.01 degrees away)
NEAR_TIES = _at(0, 10, 20.01, 90, 100, 110.01)
# the candidate moves each middle sample by 0.02 degrees: its nearest neighbour swaps
SWAPPED = _at(0, 10.02, 20.01, 90, 100.02, 110.01)


def test_a_near_tie_swapped_fails_neighbour_agreement_not_recall_at_k() -> None:
    # nearest neighbours: ref 0:1 1:0 2:1 3:4 4:3 5:4; candidate 1:2 and 4:5, the rest unchanged
    assert neighbour_agreement(NEAR_TIES, SWAPPED) == pytest.approx(4 / 6)
    # the two nearest of every sample are the other two of its cluster, under both
    assert recall_at_k(NEAR_TIES, SWAPPED, k=2) == 1.0
    assert recall_at_k(NEAR_TIES, SWAPPED, k=1) == neighbour_agreement(NEAR_TIES, SWAPPED)


def test_recall_at_k_is_the_share_of_the_reference_neighbours_kept() -> None:
    ref = np.array([[1.0, 0.0], [0.95, 0.05], [0.8, 0.2], [0.0, 1.0], [0.1, 0.9]])
    cand = ref.copy()
    cand[2] = [0.05, 0.95]  # sample 2 leaves for the other cluster
    # reference 2-nearest: 0:{1,2} 1:{0,2} 2:{1,0} 3:{4,2} 4:{3,2}
    # candidate 2-nearest: 0:{1,4} 1:{0,4} 2:{3,4} 3:{2,4} 4:{2,3}; kept 1, 1, 0, 2, 2 of 2
    assert recall_at_k(ref, cand, k=2) == pytest.approx(6 / 10)
    assert recall_at_k(ref, 3 * ref, k=4) == 1.0  # cosine: scale does not matter
    assert np.isnan(recall_at_k(ref, np.where(ref > 0.9, np.nan, ref), k=2))


def test_recall_at_k_needs_more_samples_than_its_default_k() -> None:
    with pytest.raises(MetricError, match="recall_at_k with k = 10 needs more than 10 samples, got 6"):
        recall_at_k(NEAR_TIES, SWAPPED)
    rng = np.random.default_rng(1)
    ref = rng.normal(size=(40, 8))
    assert recall_at_k(ref, ref) == 1.0
    assert 0.0 < recall_at_k(ref, ref + 0.5 * rng.normal(size=ref.shape)) < 1.0


def test_spearman_on_three_pairs() -> None:
    # pairs (0,1), (0,2), (1,2)
    ref = _at(0, 30, 90)  # similarities cos 30, cos 90, cos 60: ranks 3, 1, 2
    assert spearman(ref, ref) == 1.0
    assert spearman(ref, 2 * ref) == 1.0
    # cos 60, cos 90, cos 30: ranks 2, 1, 3; centred (1, -1, 0) . (0, -1, 1) / 2
    assert spearman(ref, _at(0, 60, 90)) == pytest.approx(0.5)
    # cos 90, cos 30, cos 60: ranks 1, 3, 2, the reverse order
    assert spearman(ref, _at(0, 90, 30)) == pytest.approx(-1.0)


def test_spearman_ties_and_what_it_refuses() -> None:
    same = np.ones((4, 3))  # every pair equally similar: no order to keep
    assert spearman(same, 2 * same) == 1.0
    assert spearman(same, _at(0, 10, 20, 30)[:, [0, 1, 1]]) == 0.0
    # only the order counts: similarities ranked alike give 1 however far they moved
    assert spearman(_at(0, 10, 30, 70), _at(0, 5, 25, 70)) == 1.0
    assert np.isnan(spearman(_at(0, 10, 30), np.array([[1.0, 0.0], [np.inf, 0.0], [0.0, 1.0]])))
    with pytest.raises(MetricError, match="needs at least 3 samples, got 2"):
        spearman(_at(0, 10), _at(0, 10))


def test_spearman_pairs_a_bounded_evenly_spaced_sample(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(2)
    ref = rng.normal(size=(50, 6))
    cand = ref + 0.3 * rng.normal(size=ref.shape)
    rows = np.linspace(0, 49, 10).round().astype(int)
    monkeypatch.setattr(metrics, "_SPEARMAN_ROWS", 10)
    sampled = spearman(ref, cand)
    assert sampled == spearman(ref[rows], cand[rows])
    assert 0.0 < sampled < 1.0


def test_metric_defaults_may_differ_from_the_parameter_default() -> None:
    assert METRICS["neighbour_agreement"].defaults() == {"k": 1}
    assert METRICS["recall_at_k"].defaults() == {"k": 10}
    assert METRICS["spearman"].defaults() == {} and METRICS["spearman"].params == ("output",)
    with pytest.raises(ValueError, match="unknown parameters"):
        register(Metric("cosine_k", lambda ref, cand, labels: 1.0, "min", 0.0, 1.0, "-", own_defaults={"k": 3}))
    assert "cosine_k" not in METRICS
