"""infc.accuracy: an output of one integer per sample is a class label, compared as it is.

(The score metrics themselves are tested with the gates, in test_gates.py.)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from infc.accuracy import METRICS, MetricError, accuracy, is_label, top1_agreement

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
