"""Accuracy metrics: how close an optimized model's outputs stay to the reference's.

`METRICS` is the one list of metric names: the spec schema's enum and
parameter descriptions, the spec loader's checks and the gates all read it.
Every metric is a function `(ref, cand, labels, **params) -> float` over the
outputs of the reference and the candidate for the same N validation samples
(axis 0), each sample's values taken flat. Sums and products run in float64;
a metric that cannot apply to its data raises `MetricError` saying why.

An output of one integer per sample is a class label (a scikit-learn
classifier converted by skl2onnx gives `label` first): for `top1_agreement`
and `accuracy` the label is the class itself, compared as it is.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from .errors import InfcError

__all__ = [
    "Metric", "MetricError", "Param", "METRICS", "PARAMS", "register",
    "top1_agreement", "accuracy", "cosines", "cosine", "cosine_min", "max_abs_error",
    "neighbour_agreement", "recall_at_k", "spearman", "decision_agreement", "auc", "roc_auc", "scores", "is_label",
]

Array = npt.NDArray[Any]


class MetricError(InfcError):
    """A metric does not apply to the data it was given (wrong shape, one class, too few samples)."""

    exit_code = 2


# ---------------------------------------------------------------- helpers


def _rows(x: Array) -> npt.NDArray[np.float64]:
    """[N, ...] -> [N, F] in float64."""
    x = np.asarray(x)
    if x.ndim == 0 or len(x) == 0:
        raise MetricError(f"expected one row per validation sample, got shape {x.shape}")
    return x.reshape(len(x), -1).astype(np.float64, copy=False)


def _pair(ref: Array, cand: Array) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    a, b = _rows(ref), _rows(cand)
    if a.shape != b.shape:
        raise MetricError(f"reference and candidate outputs differ in shape: {np.shape(ref)} vs {np.shape(cand)}")
    return a, b


def _finite(x: npt.NDArray[np.float64]) -> npt.NDArray[np.bool_]:
    """Which rows hold only finite values (a NaN or inf sample agrees with nothing)."""
    return np.asarray(np.isfinite(x).all(axis=1))


def is_label(x: Array) -> bool:
    """Whether `x` ([N] or [N, 1, ...]) holds one integer per sample: a class label, not a score."""
    x = np.asarray(x)
    return x.dtype.kind in "iu" and x.ndim >= 1 and len(x) > 0 and x.size == len(x)


def _label_rows(ref: Array, cand: Array) -> tuple[Array, Array] | None:
    """Both outputs as [N] labels when both are label outputs (None: compare scores)."""
    if not (is_label(ref) and is_label(cand)):
        return None
    a, b = np.asarray(ref).reshape(-1), np.asarray(cand).reshape(-1)
    if a.shape != b.shape:
        raise MetricError(f"reference and candidate outputs differ in shape: {np.shape(ref)} vs {np.shape(cand)}")
    return a, b


def _classes(x: npt.NDArray[np.float64], metric: str) -> Array:
    """The highest-scoring class of each row; -1 for a row that is not finite."""
    if x.shape[1] < 2:
        raise MetricError(f"{metric} compares the highest-scoring class, but the output has one value per "
                          "sample (use decision_agreement or auc for a single score; an output of one "
                          "integer per sample is compared as a class label)")
    return np.where(_finite(x), x.argmax(axis=1), -1)


def _labels(labels: Array | None, n: int, metric: str) -> Array:
    if labels is None:
        raise MetricError(f"{metric} needs `labels` in the validation data")
    y = np.asarray(labels).reshape(-1)
    if len(y) != n:
        raise MetricError(f"{metric}: {len(y)} labels for {n} samples")
    return y


def _unit_rows(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Rows scaled to length 1 (scaled by their largest value first, so squares cannot
    overflow); zero rows, and rows that are not finite, become zero."""
    peak = np.max(np.abs(x), axis=1, keepdims=True)
    x = np.divide(x, peak, out=np.zeros_like(x), where=np.isfinite(peak) & (peak > 0))
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norm, out=np.zeros_like(x), where=norm > 0)


def scores(x: Array, column: int | None = None) -> npt.NDArray[np.float64]:
    """One score per sample: value `column` of each flattened sample; by default the
    only value, or the second of two (the positive class of a two-class output)."""
    a = _rows(x)
    width = a.shape[1]
    if column is None:
        if width > 2:
            raise MetricError(f"the output has {width} values per sample: name the positive-class "
                              "score with `column`")
        column = width - 1
    if not -width <= column < width:
        raise MetricError(f"column {column} is out of range for an output of {width} values per sample")
    return a[:, column]


def _average_ranks(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """1-based ranks of `x`, tied values sharing the mean of their ranks."""
    order = np.argsort(x, kind="mergesort")
    ordered = x[order]
    first = np.r_[True, ordered[1:] != ordered[:-1]]
    group = np.cumsum(first) - 1
    starts = np.flatnonzero(first)
    ends = np.r_[starts[1:], len(x)]
    ranks = np.empty(len(x))
    ranks[order] = ((starts + 1 + ends) / 2.0)[group]
    return ranks


def roc_auc(score: Array, labels: Array) -> float:
    """ROC AUC of `score` for binary `labels` (0/1): the Mann-Whitney U statistic over
    n_pos * n_neg, ties counted half. NaN when a score is not finite."""
    s = np.asarray(score, dtype=np.float64).reshape(-1)
    y = np.asarray(labels).reshape(-1)
    if len(s) != len(y):
        raise MetricError(f"auc: {len(y)} labels for {len(s)} samples")
    if not np.isin(y, (0, 1)).all():
        raise MetricError(f"auc needs binary labels (0 and 1), got {', '.join(map(str, np.unique(y)[:5]))}...")
    positive = y == 1
    n_pos = int(positive.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        raise MetricError("auc needs both classes among the labels, got only " + ("1" if n_pos else "0"))
    if not np.isfinite(s).all():
        return float("nan")
    ranks = _average_ranks(s)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


# ---------------------------------------------------------------- the metrics


def top1_agreement(ref: Array, cand: Array, labels: Array | None = None) -> float:
    """Fraction of samples whose highest-scoring class is the same under both models
    (for a label output, see `is_label`: whose label is the same)."""
    as_labels = _label_rows(ref, cand)
    if as_labels is not None:
        return float(np.mean(as_labels[0] == as_labels[1]))
    a, b = _pair(ref, cand)
    top_a, top_b = _classes(a, "top1_agreement"), _classes(b, "top1_agreement")
    return float(np.mean((top_a == top_b) & (top_b >= 0)))


def accuracy(ref: Array, cand: Array, labels: Array | None = None) -> float:
    """Fraction of samples whose highest-scoring class under the candidate (for a label
    output, see `is_label`: whose predicted label) is the label."""
    if is_label(cand):
        predicted = np.asarray(cand).reshape(-1)
        return float(np.mean(predicted == _labels(labels, len(predicted), "accuracy")))
    b = _rows(cand)
    return float(np.mean(_classes(b, "accuracy") == _labels(labels, len(b), "accuracy")))


def cosines(ref: Array, cand: Array) -> npt.NDArray[np.float64]:
    """Cosine similarity of each sample's outputs: exactly 1 for equal outputs (two zero
    vectors included), 0 against a zero vector, NaN for a sample that is not finite."""
    a, b = _pair(ref, cand)
    sim = np.clip(np.einsum("ij,ij->i", _unit_rows(a), _unit_rows(b)), -1.0, 1.0)
    equal = (a == b).all(axis=1)
    return np.where(_finite(a) & _finite(b), np.where(equal, 1.0, sim), np.nan)


def cosine(ref: Array, cand: Array, labels: Array | None = None) -> float:
    """Mean over samples of the cosine similarity of their outputs."""
    return float(np.mean(cosines(ref, cand)))


def cosine_min(ref: Array, cand: Array, labels: Array | None = None) -> float:
    """Cosine similarity of the worst sample."""
    return float(np.min(cosines(ref, cand)))


def max_abs_error(ref: Array, cand: Array, labels: Array | None = None) -> float:
    """Largest absolute difference of any output value."""
    a, b = _pair(ref, cand)
    with np.errstate(invalid="ignore"):  # inf - inf is NaN, and NaN never passes a budget
        return float(np.max(np.abs(a - b)))


# rows of the similarity matrix computed at once: bounds memory to ~32 MB per block
_BLOCK_ELEMENTS = 1 << 22
# similarities this close count as a tie (float64 rounding in the matrix product)
_TIE = 1e-12


def _kept_neighbours(ref: Array, cand: Array, k: int, metric: str) -> float:
    """The mean share of each sample's k nearest reference neighbours (cosine, never itself)
    that are among its k nearest candidate neighbours; a candidate neighbour tied with the
    reference's k-th nearest counts as kept. NaN when an output is not finite."""
    a, b = _pair(ref, cand)
    n = len(a)
    if not 1 <= k < n:
        raise MetricError(f"{metric} with k = {k} needs more than {k} samples, got {n}")
    if not (_finite(a).all() and _finite(b).all()):
        return float("nan")
    ua, ub = _unit_rows(a), _unit_rows(b)
    block = max(1, _BLOCK_ELEMENTS // n)
    kept = 0
    for start in range(0, n, block):
        stop = min(n, start + block)
        rows = np.arange(stop - start)
        sim_ref, sim_cand = ua[start:stop] @ ua.T, ub[start:stop] @ ub.T
        sim_ref[rows, rows + start] = -np.inf
        sim_cand[rows, rows + start] = -np.inf
        kth_ref = np.partition(sim_ref, n - k, axis=1)[:, n - k]  # the reference's k-th nearest
        near_cand = np.argpartition(sim_cand, n - k, axis=1)[:, n - k:]  # the candidate's k nearest
        kept += int(np.sum(sim_ref[rows[:, None], near_cand] >= kth_ref[:, None] - _TIE))
    return kept / (n * k)


def neighbour_agreement(ref: Array, cand: Array, labels: Array | None = None, *, k: int = 1) -> float:
    """How well the candidate keeps each sample's nearest neighbours among the validation set.

    Neighbours by cosine similarity, a sample never its own. With k = 1: the fraction of
    samples whose nearest neighbour under the candidate is their nearest under the
    reference. With k > 1: the mean overlap of the two k-nearest sets, over k. A neighbour
    tied with the reference's k-th nearest counts as kept. NaN when an output is not finite.
    """
    return _kept_neighbours(ref, cand, k, "neighbour_agreement")


def recall_at_k(ref: Array, cand: Array, labels: Array | None = None, *, k: int = 10) -> float:
    """Retrieval recall at k: the mean share of each sample's k nearest reference neighbours
    (cosine, among the validation set, never itself) found among its k nearest candidate neighbours.

    The same count as `neighbour_agreement` with that k, under the name retrieval uses and with
    k = 10 by default: two neighbours nearly tied for one place may swap under int8 without
    changing what a top-k search returns, which nearest-neighbour agreement (k = 1) counts as a miss.
    """
    return _kept_neighbours(ref, cand, k, "recall_at_k")


# pairs of samples spearman ranks at most: ~2.1 million, ~100 MB of float64 work arrays
_SPEARMAN_ROWS = 2048


def _pair_similarities(unit: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Cosine similarity of every pair of distinct rows (upper triangle, row by row)."""
    upper = np.triu_indices(len(unit), k=1)
    return np.asarray((unit @ unit.T)[upper])


def spearman(ref: Array, cand: Array, labels: Array | None = None) -> float:
    """Spearman rank correlation of the pairwise cosine similarities under both models.

    Every pair of distinct validation samples is ranked by its similarity under the
    reference and under the candidate (ties share their mean rank); the value is the
    Pearson correlation of the two rankings: 1 when the candidate orders every pair as the
    reference does. Above `_SPEARMAN_ROWS` samples, that many evenly spaced ones are used
    (the same ones each time), so memory stays bounded. When the reference's similarities are
    all equal there is no order to keep: 1 if the candidate's are all equal too, else 0.
    NaN when an output is not finite.
    """
    a, b = _pair(ref, cand)
    n = len(a)
    if n < 3:
        raise MetricError(f"spearman ranks pairs of samples and needs at least 3 samples, got {n}")
    if not (_finite(a).all() and _finite(b).all()):
        return float("nan")
    if n > _SPEARMAN_ROWS:
        rows = np.linspace(0, n - 1, _SPEARMAN_ROWS).round().astype(np.int64)
        a, b = a[rows], b[rows]
    ranks_ref = _average_ranks(_pair_similarities(_unit_rows(a)))
    ranks_cand = _average_ranks(_pair_similarities(_unit_rows(b)))
    ranks_ref -= ranks_ref.mean()
    ranks_cand -= ranks_cand.mean()
    spread = float(np.sqrt(np.dot(ranks_ref, ranks_ref) * np.dot(ranks_cand, ranks_cand)))
    if spread == 0.0:
        return float(np.array_equal(ranks_ref, ranks_cand))
    return float(np.clip(np.dot(ranks_ref, ranks_cand) / spread, -1.0, 1.0))


def decision_agreement(ref: Array, cand: Array, labels: Array | None = None, *,
                       threshold: float = 0.5, column: int | None = None) -> float:
    """Fraction of samples whose decision `score >= threshold` is the same under both models
    (a score that is NaN under either agrees with nothing)."""
    s_ref, s_cand = scores(ref, column), scores(cand, column)
    if s_ref.shape != s_cand.shape:
        raise MetricError(f"reference and candidate outputs differ in shape: {np.shape(ref)} vs {np.shape(cand)}")
    same = (s_ref >= threshold) == (s_cand >= threshold)
    return float(np.mean(same & ~np.isnan(s_ref) & ~np.isnan(s_cand)))


def auc(ref: Array, cand: Array, labels: Array | None = None, *, column: int | None = None) -> float:
    """ROC AUC of the candidate's positive-class score against binary labels."""
    s = scores(cand, column)
    return roc_auc(s, _labels(labels, len(s), "auc"))


# ---------------------------------------------------------------- the registry


@dataclass(frozen=True)
class Param:
    """A metric parameter: its JSON Schema, its meaning and its default."""

    schema: Mapping[str, Any]
    description: str
    default: Any = None


PARAMS: dict[str, Param] = {
    "output": Param(
        {"type": ["string", "integer"], "minLength": 1, "minimum": 0},
        "the tensor compared: a model output by name or index, or, when no model output has that "
        "name, a tensor of the response (after postprocess); default: the model's first output"),
    "k": Param({"type": "integer", "minimum": 1},
               "neighbour_agreement, recall_at_k: neighbours compared per sample (default 1, the nearest, "
               "for neighbour_agreement; 10 for recall_at_k)", 1),
    "threshold": Param({"type": "number"},
                       "decision_agreement: a sample is positive when its score >= threshold (default 0.5)", 0.5),
    "column": Param({"type": "integer"},
                    "decision_agreement, auc: which value of each sample is the positive-class score "
                    "(negative counts from the end; default: the only value, or the second of two)"),
}
"""Every parameter a metric may take; `output` applies to every metric."""


@dataclass(frozen=True)
class Metric:
    """A registered metric: its function, which bound it takes (`min`, or `max` for an
    error) and the range of that bound, whether it needs labels, its parameters."""

    name: str
    compute: Callable[..., float]
    bound: Literal["min", "max"]
    low: float
    high: float | None
    description: str
    labels: bool = False
    params: tuple[str, ...] = field(default=("output",))
    own_defaults: Mapping[str, Any] = field(default_factory=dict)
    """Defaults of this metric that differ from the parameter's (recall_at_k: k = 10)."""

    def defaults(self) -> dict[str, Any]:
        """The parameters a budget gets when it does not name them (None: none)."""
        every = {p: self.own_defaults.get(p, PARAMS[p].default) for p in self.params}
        return {p: v for p, v in every.items() if v is not None}


METRICS: dict[str, Metric] = {}
"""Every metric by name, in the order the schema lists them."""


def register(metric: Metric) -> Metric:
    """Add `metric` to `METRICS`; rejects it at once when it does not fit the registry."""
    problems = []
    if metric.name in METRICS:
        problems.append("the name is taken")
    if metric.bound not in ("min", "max"):
        problems.append(f"bound must be 'min' or 'max', got {metric.bound!r}")
    if "output" not in metric.params:
        problems.append("every metric takes `output`")
    unknown = [p for p in metric.params if p not in PARAMS]
    unknown += [p for p in metric.own_defaults if p not in metric.params]
    if unknown:
        problems.append(f"unknown parameters {unknown} (known: {', '.join(PARAMS)})")
    accepted = inspect.signature(metric.compute).parameters
    missing = [p for p in metric.params if p != "output" and p not in accepted]
    if missing or list(accepted)[:3] != ["ref", "cand", "labels"]:
        problems.append(f"compute must be (ref, cand, labels, *, {', '.join(metric.params[1:])})")
    if problems:
        raise ValueError(f"metric {metric.name!r}: " + "; ".join(problems))
    METRICS[metric.name] = metric
    return metric


for _metric in (
    Metric("top1_agreement", top1_agreement, "min", 0.0, 1.0,
           "fraction of samples whose top class (or integer label) is the reference's"),
    Metric("accuracy", accuracy, "min", 0.0, 1.0,
           "fraction of samples whose top class (or integer label) is their label (needs labels)", labels=True),
    Metric("cosine", cosine, "min", -1.0, 1.0, "mean cosine similarity to the reference's outputs"),
    Metric("cosine_min", cosine_min, "min", -1.0, 1.0, "cosine similarity of the worst sample"),
    Metric("neighbour_agreement", neighbour_agreement, "min", 0.0, 1.0,
           "embeddings: fraction of samples keeping their nearest neighbour among the validation set "
           "(param k: mean overlap of the k nearest)", params=("output", "k")),
    Metric("recall_at_k", recall_at_k, "min", 0.0, 1.0,
           "embeddings, retrieval: mean share of each sample's k nearest neighbours (default 10) kept among "
           "its k nearest; unlike neighbour_agreement (k = 1) it forgives near-tied neighbours swapping places",
           params=("output", "k"), own_defaults={"k": 10}),
    Metric("spearman", spearman, "min", -1.0, 1.0,
           "embeddings, ranking and semantic similarity: Spearman rank correlation of the similarities of "
           "every pair of validation samples (at most 2048 samples, evenly spaced, are paired)"),
    Metric("decision_agreement", decision_agreement, "min", 0.0, 1.0,
           "fraction of samples whose decision score >= threshold is the reference's",
           params=("output", "threshold", "column")),
    Metric("auc", auc, "min", 0.0, 1.0, "ROC AUC of the positive-class score (binary labels 0/1)",
           labels=True, params=("output", "column")),
    Metric("max_abs_error", max_abs_error, "max", 0.0, None,
           "largest absolute difference of any output value (takes `max`)"),
):
    register(_metric)
