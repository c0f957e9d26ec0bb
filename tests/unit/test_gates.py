"""infc.accuracy and infc.gates: each metric against hand-computed cases (and scikit-learn's
roc_auc_score), and measure_accuracy on real ONNX Runtime pipelines."""

from __future__ import annotations

from collections.abc import Callable
from types import MappingProxyType
from typing import Any

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper
from sklearn.metrics import roc_auc_score

from infc import accuracy as metrics
from infc.accuracy import (
    Metric,
    accuracy,
    auc,
    cosine,
    cosine_min,
    cosines,
    decision_agreement,
    max_abs_error,
    neighbour_agreement,
    recall_at_k,
    register,
    roc_auc,
    scores,
    spearman,
    top1_agreement,
)
from infc.gates import METRICS, AccuracyResult, MetricError, measure_accuracy
from infc.spec import AccuracyBudget
from infc.spec.schema import METRICS as SCHEMA_METRICS
from infc.spec.schema import schema
from infc_runtime.pipeline import Pipeline, make_session
from infc_runtime.types import TensorSpec

# ---------------------------------------------------------------- hand-computed cases


def test_top1_agreement_and_accuracy() -> None:
    ref = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    cand = np.array([[0.2, 0.8], [0.4, 0.6], [0.1, 0.9], [0.7, 0.3]])  # sample 1 flips
    assert top1_agreement(ref, cand) == 0.75
    assert accuracy(ref, cand, np.array([1, 0, 1, 1])) == 0.5  # cand says 1, 1, 1, 0
    # per-sample values are taken flat: [N, 1, 2] is the same as [N, 2]
    assert top1_agreement(ref[:, None, :], cand[:, None, :]) == 0.75


def test_cosine_mean_and_min() -> None:
    ref = np.array([[1.0, 0.0], [1.0, 1.0], [3.0, 4.0]])
    cand = np.array([[0.0, 2.0], [2.0, 2.0], [-3.0, -4.0]])
    np.testing.assert_allclose(cosines(ref, cand), [0.0, 1.0, -1.0], atol=1e-15)
    assert cosine(ref, cand) == pytest.approx(0.0, abs=1e-15)
    assert cosine_min(ref, cand) == -1.0


def test_cosine_of_zero_vectors() -> None:
    zero, one = np.zeros((1, 3)), np.ones((1, 3))
    assert cosine(zero, zero) == 1.0  # identical outputs
    assert cosine(zero, one) == 0.0 and cosine(one, zero) == 0.0


def test_float64_accumulation_does_not_overflow() -> None:
    big = np.full((2, 4), 3e38, np.float32)  # squares and sums overflow float32
    assert cosine(big, big) == pytest.approx(1.0)
    assert cosine(np.full((1, 2), 1e300), np.full((1, 2), 1e300)) == pytest.approx(1.0)  # and float64
    assert max_abs_error(big, -big) == pytest.approx(6e38)
    assert np.isfinite(neighbour_agreement(np.vstack([big, -big]), np.vstack([big, -big])))


def test_max_abs_error() -> None:
    ref = np.array([[1.0, 2.0], [3.0, 4.0]], np.float32)
    cand = np.array([[1.5, 2.0], [3.0, 3.25]], np.float32)
    assert max_abs_error(ref, cand) == 0.75
    assert max_abs_error(ref, ref) == 0.0


def test_neighbour_agreement_top1() -> None:
    # four directions; under the reference 0<->1 and 2<->3 are nearest pairs
    ref = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    assert neighbour_agreement(ref, ref) == 1.0
    assert neighbour_agreement(ref, 5 * ref) == 1.0  # cosine: scale does not matter
    # the candidate moves sample 1 next to 2 and 3: 1 now finds 3 (ref: 0), 0 still finds 1,
    # 2 still finds 3, 3 now finds 1 (ref: 2)
    cand = np.array([[1.0, 0.0], [0.2, 0.8], [0.0, 1.0], [0.15, 0.85]])
    assert neighbour_agreement(ref, cand) == 0.5


def test_neighbour_agreement_k_is_mean_overlap() -> None:
    ref = np.array([[1.0, 0.0], [0.95, 0.05], [0.8, 0.2], [0.0, 1.0], [0.1, 0.9]])
    # k = 2, reference sets: 0:{1,2} 1:{0,2} 2:{1,0} 3:{4,2} 4:{3,2}
    cand = ref.copy()
    cand[2] = [0.05, 0.95]  # sample 2 leaves for the other cluster
    # candidate sets: 0:{1,4} 1:{0,4} 2:{3,4} 3:{2,4} 4:{2,3}; overlaps 1,1,0,2,2 of 2
    assert neighbour_agreement(ref, cand, k=2) == pytest.approx(6 / 10)
    assert neighbour_agreement(ref, ref, k=4) == 1.0  # every other sample: always the same set


def test_neighbour_agreement_counts_reference_ties_as_kept() -> None:
    ref = np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])  # 0, 1, 2 identical
    cand = ref + np.array([[0, 0], [0, 1e-3], [0, 2e-3], [0, 0]])  # breaks the tie differently
    assert neighbour_agreement(ref, cand) == 1.0


def test_neighbour_agreement_in_blocks_matches_one_block(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(37, 6))
    cand = ref + 0.4 * rng.normal(size=ref.shape)
    whole = [neighbour_agreement(ref, cand, k=k) for k in (1, 3)]
    monkeypatch.setattr(metrics, "_BLOCK_ELEMENTS", 37 * 5)  # 5 rows at a time
    assert [neighbour_agreement(ref, cand, k=k) for k in (1, 3)] == whole
    assert 0.0 < whole[0] < 1.0


def test_decision_agreement() -> None:
    ref = np.array([[0.1], [0.49], [0.5], [0.9]])
    cand = np.array([[0.2], [0.51], [0.5], [0.4]])  # 1 and 3 cross 0.5
    assert decision_agreement(ref, cand) == 0.5
    assert decision_agreement(ref, cand, threshold=0.45) == 0.75
    two = np.hstack([1 - ref, ref])  # [N, 2]: the second column is the positive class
    assert decision_agreement(two, np.hstack([1 - cand, cand])) == 0.5
    assert decision_agreement(two, np.hstack([1 - cand, cand]), column=0) == 0.5
    nan = cand.copy()
    nan[0] = np.nan
    assert decision_agreement(ref, nan) == 0.25  # a NaN score agrees with nothing


def test_scores_pick_the_positive_column() -> None:
    x = np.arange(12.0).reshape(4, 3)
    np.testing.assert_array_equal(scores(x[:, :1]), [0, 3, 6, 9])
    np.testing.assert_array_equal(scores(x[:, :2]), [1, 4, 7, 10])
    np.testing.assert_array_equal(scores(x, column=-1), [2, 5, 8, 11])
    with pytest.raises(MetricError, match="3 values per sample: name the positive-class score with `column`"):
        scores(x)
    with pytest.raises(MetricError, match="column 3 is out of range"):
        scores(x, column=3)


def test_roc_auc_hand_computed() -> None:
    # positives 0.8, 0.4; negatives 0.5, 0.1: pairs (0.8>0.5, 0.8>0.1, 0.4<0.5, 0.4>0.1) -> 3/4
    assert roc_auc(np.array([0.8, 0.5, 0.4, 0.1]), np.array([1, 0, 1, 0])) == 0.75
    # a tie between a positive and a negative counts half: (1 + 0.5) / 2
    assert roc_auc(np.array([0.9, 0.3, 0.3]), np.array([1, 1, 0])) == 0.75
    assert roc_auc(np.array([1.0, 1.0, 1.0]), np.array([1, 0, 1])) == 0.5
    assert np.isnan(roc_auc(np.array([np.nan, 0.3]), np.array([1, 0])))


@settings(max_examples=60, deadline=None, database=None)
@given(st.data())
def test_roc_auc_matches_scikit_learn(data: st.DataObject) -> None:
    n = data.draw(st.integers(2, 60))
    labels = np.array(data.draw(st.lists(st.integers(0, 1), min_size=n, max_size=n)))
    labels[0], labels[1] = 0, 1  # both classes
    # few distinct values, so that ties are common
    values = data.draw(st.lists(st.sampled_from([-1.0, 0.0, 0.25, 0.5, 0.75, 2.0, 1e-9]), min_size=n, max_size=n))
    score = np.array(values)
    assert roc_auc(score, labels) == pytest.approx(roc_auc_score(labels, score), abs=1e-12)


def test_auc_of_the_candidate_scores() -> None:
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 200)
    prob = np.clip(labels * 0.3 + rng.uniform(0, 0.7, 200), 0, 1)
    two = np.stack([1 - prob, prob], axis=1).astype(np.float32)
    assert auc(None, two, labels) == pytest.approx(roc_auc_score(labels, prob.astype(np.float32)))  # type: ignore[arg-type]
    assert auc(None, two, labels, column=0) == pytest.approx(1 - roc_auc_score(labels, prob))  # type: ignore[arg-type]


@pytest.mark.parametrize(("call", "message"), [
    (lambda: roc_auc(np.zeros(3), np.array([1, 1, 1])), "auc needs both classes among the labels"),
    (lambda: roc_auc(np.zeros(3), np.array([0, 1, 2])), "auc needs binary labels"),
    (lambda: auc(None, np.zeros((3, 1)), None), "auc needs `labels`"),
    (lambda: accuracy(None, np.zeros((3, 2)), np.array([0, 1])), "accuracy: 2 labels for 3 samples"),
    (lambda: top1_agreement(np.zeros((3, 1)), np.zeros((3, 1))), "one value per sample"),
    (lambda: neighbour_agreement(np.eye(3), np.eye(3), k=3), "k = 3 needs more than 3 samples, got 3"),
    (lambda: max_abs_error(np.zeros((3, 2)), np.zeros((3, 3))), "differ in shape"),
    (lambda: cosine(np.zeros((0, 2)), np.zeros((0, 2))), "one row per validation sample"),
])
def test_metrics_refuse_data_they_cannot_measure(call: Callable[[], float], message: str) -> None:
    with pytest.raises(MetricError, match=message):
        call()


# ---------------------------------------------------------------- the registry


def test_registry_is_the_one_list_of_metric_names() -> None:
    assert SCHEMA_METRICS == tuple(METRICS) == tuple(metrics.METRICS)
    entry = schema()["properties"]["budget"]["properties"]["accuracy"]["oneOf"][0]
    assert entry["properties"]["metric"]["enum"] == list(METRICS)
    assert set(entry["properties"]) == {"metric", "min", "max", *metrics.PARAMS}
    assert {m.bound for m in METRICS.values()} == {"min", "max"}
    assert [n for n, m in METRICS.items() if m.labels] == ["accuracy", "auc"]


@pytest.mark.parametrize(("metric", "message"), [
    (Metric("cosine", cosine, "min", -1, 1, "again"), "the name is taken"),
    (Metric("x", cosine, "at_least", 0, 1, "x"), "bound must be 'min' or 'max'"),
    (Metric("x", cosine, "min", 0, 1, "x", params=("output", "alpha")), "unknown parameters ['alpha']"),
    (Metric("x", cosine, "min", 0, 1, "x", params=("k",)), "every metric takes `output`"),
    (Metric("x", cosine, "min", 0, 1, "x", params=("output", "k")), "compute must be (ref, cand, labels, *, k)"),
    (Metric("x", lambda a, b: 0.0, "min", 0, 1, "x"), "compute must be (ref, cand, labels"),
])
def test_register_rejects_a_bad_metric_at_once(metric: Metric, message: str) -> None:
    with pytest.raises(ValueError, match=f"metric {metric.name!r}: .*" + message.replace("(", r"\(")
                       .replace(")", r"\)").replace("[", r"\[").replace("]", r"\]").replace("*", r"\*")):
        register(metric)
    assert METRICS["cosine"].compute is cosine


# ---------------------------------------------------------------- measure_accuracy on real pipelines


def _model(weights: np.ndarray) -> bytes:
    """x [N, 4] -> logits [N, 3] = x @ W, score [N, 1] = sigmoid(logits[:, :1])."""
    w = numpy_helper.from_array(weights.astype(np.float32), "W")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["logits"]),
         helper.make_node("Slice", ["logits", "s0", "s1", "ax"], ["first"]),
         helper.make_node("Sigmoid", ["first"], ["score"])],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3]),
         helper.make_tensor_value_info("score", TensorProto.FLOAT, ["N", 1])],
        [w, numpy_helper.from_array(np.array([0], np.int64), "s0"),
         numpy_helper.from_array(np.array([1], np.int64), "s1"),
         numpy_helper.from_array(np.array([1], np.int64), "ax")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _pipeline(weights: np.ndarray) -> Pipeline:
    def post(t: dict[str, Any]) -> dict[str, Any]:  # the response: L2-normalized logits
        return {"embedding": t["logits"] / np.linalg.norm(t["logits"], axis=1, keepdims=True)}

    return Pipeline(name="tiny", version="1.0.0", inputs=[TensorSpec("x", "float32", (4,))],
                    outputs=[TensorSpec("embedding", "float32", (3,))],
                    session=make_session(_model(weights)), pre=lambda r: dict(r), post=post)


@pytest.fixture(scope="module")
def pair() -> tuple[Pipeline, Pipeline, dict[str, np.ndarray], np.ndarray]:
    rng = np.random.default_rng(7)
    w = rng.normal(size=(4, 3))
    x = rng.normal(size=(150, 4)).astype(np.float32)  # over two inference batches of 64
    labels = (x @ w)[:, 0] > 0
    return _pipeline(w), _pipeline(w + 0.05 * rng.normal(size=w.shape)), {"x": x}, labels.astype(np.int64)


def _budget(metric: str, path: tuple[str | int, ...] = ("budget", "accuracy"), **kw: Any) -> AccuracyBudget:
    bound = {k: kw.pop(k) for k in ("min", "max") if k in kw}
    params = {**METRICS[metric].defaults(), **kw}
    return AccuracyBudget(metric, bound.get("min"), bound.get("max"), MappingProxyType(params), path)


def test_one_result_per_budget_in_order_with_shared_details(pair: Any) -> None:
    ref, cand, requests, labels = pair
    x = requests["x"]
    budgets = [_budget("top1_agreement", min=0.9), _budget("max_abs_error", max=1e-6),
               _budget("auc", min=0.5, output="score"), _budget("neighbour_agreement", min=0.0, k=3),
               _budget("decision_agreement", min=0.9, output=1, threshold=0.5),
               _budget("cosine", min=0.99, output="embedding")]
    results = measure_accuracy(ref, cand, requests, labels, budgets)
    assert [r.metric for r in results] == [b.metric for b in budgets]
    assert all(isinstance(r, AccuracyResult) and r.samples == len(x) for r in results)
    top1, err, auc_, nb, dec, cos = results
    assert top1.passed and top1.bound == 0.9 and top1.op == ">=" and top1.margin == pytest.approx(top1.value - 0.9)
    assert not err.passed and err.op == "<=" and err.value > 1e-6 and err.margin is not None and err.margin < 0
    assert (err.name, nb.name) == ("max_abs_error", "neighbour_agreement(k=3)")
    assert dec.name == "decision_agreement(output=1)"
    assert cos.name == "cosine(output=embedding)" and cos.passed
    # the same numbers as the metric functions on the pipelines' own outputs
    ref_logits, cand_logits = ref.infer(requests)["logits"], cand.infer(requests)["logits"]
    assert top1.value == top1_agreement(ref_logits, cand_logits)
    assert err.value == max_abs_error(ref_logits, cand_logits)
    assert nb.value == neighbour_agreement(ref_logits, cand_logits, k=3)
    assert auc_.value == pytest.approx(roc_auc_score(labels, cand.infer(requests)["score"][:, 0]))
    # details: shared, every metric that applies to the first output, and each budget by name
    assert all(r.details is results[0].details for r in results)
    d = results[0].details
    assert {"top1_agreement", "cosine", "cosine_min", "max_abs_error", "neighbour_agreement", "recall_at_k",
            "spearman", "accuracy", "reference_accuracy", "neighbour_agreement(k=3)",
            "cosine(output=embedding)"} <= set(d)
    assert d["recall_at_k"] == recall_at_k(ref_logits, cand_logits, k=10)
    assert d["spearman"] == spearman(ref_logits, cand_logits)
    assert "auc" not in d  # the first output has three values per sample: no positive class to score
    assert d["reference_accuracy"] == accuracy(None, ref_logits, labels)  # type: ignore[arg-type]


def test_no_budget_gives_one_informational_result(pair: Any) -> None:
    ref, cand, requests, _ = pair
    (r,) = measure_accuracy(ref, cand, requests, None, ())
    assert (r.metric, r.bound, r.passed) == ("top1_agreement", None, True) and r.margin is None
    assert "accuracy" not in r.details and 0.9 <= r.value <= 1.0


def test_identical_pipelines_agree_exactly(pair: Any) -> None:
    ref, _, requests, labels = pair
    budgets = [_budget("cosine_min", min=1.0), _budget("max_abs_error", max=0.0),
               _budget("decision_agreement", min=1.0, output="score")]
    assert all(r.passed for r in measure_accuracy(ref, ref, requests, labels, budgets))


def test_a_metric_that_cannot_apply_names_its_budget(pair: Any) -> None:
    ref, cand, requests, labels = pair
    bad = _budget("auc", ("budget", "accuracy", 1), min=0.5)  # logits: three values per sample, no column
    with pytest.raises(MetricError, match=r"^budget.accuracy\[1\] \(auc\): the output has 3 values per sample"):
        measure_accuracy(ref, cand, requests, labels, [_budget("cosine", min=0.5), bad])
    with pytest.raises(MetricError, match="no model output or response tensor 'nope'"):
        measure_accuracy(ref, cand, requests, labels, [_budget("cosine", min=0.5, output="nope")])


def test_nan_never_passes(pair: Any) -> None:
    ref, _, requests, labels = pair
    broken = _pipeline(np.full((4, 3), np.nan))
    results = measure_accuracy(ref, broken, requests, labels, [_budget("cosine", min=-1.0),
                                                                _budget("max_abs_error", max=1e9)])
    assert [r.passed for r in results] == [False, False]
    assert np.isnan(results[0].details["cosine"]) and results[0].details["top1_agreement"] == 0.0


def test_non_finite_samples_agree_with_nothing() -> None:
    ref = np.array([[0.0, 1.0], [1.0, 0.0], [0.5, 0.4]])
    cand = np.array([[np.nan, np.nan], [1.0, 0.0], [np.inf, 0.0]])
    assert top1_agreement(ref, cand) == pytest.approx(1 / 3)
    assert accuracy(None, cand, np.array([0, 0, 0])) == pytest.approx(1 / 3)  # type: ignore[arg-type]
    np.testing.assert_array_equal(np.isnan(cosines(ref, cand)), [True, False, True])
    assert np.isnan(neighbour_agreement(ref, cand)) and np.isnan(max_abs_error(ref, cand))


def test_token_level_chunks_of_different_widths_are_padded_with_zeros() -> None:
    from infc.gates import _concat

    short, long = np.ones((2, 8, 3), np.float32), np.full((1, 16, 3), 2, np.float32)
    joined = _concat([short, long])
    assert joined.shape == (3, 16, 3)
    assert (joined[:2, 8:] == 0).all() and (joined[:2, :8] == 1).all() and (joined[2] == 2).all()
    assert _concat([np.ones((2, 4)), np.ones((1, 4))]).shape == (3, 4)
