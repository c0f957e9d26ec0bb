"""Drift indicators: sampled rows against the reference the build stored in the bundle (`monitor/reference.json`).

The build pushes its calibration data through the bundle's own pre-processing and keeps, per watched
feature (a column of a 2-D model input, a channel of an image, the length of a token sequence), fixed bins
at the reference's quantiles (open at both ends) with the share of values in each, the NaN rate and the
range; from the validation outputs, for a classifier the top-1 class distribution and a top-1 confidence
histogram, for an embedding a norm histogram and the mean vector.

At run time, once a batch's requests are answered, the batcher asks `DriftMonitor.sample` which of its rows
are sampled: a counter picks every `round(1 / sample_rate)`-th row across batches (deterministic: a slice, no
copy). Only a batch with sampled rows is handed to its worker thread (behind the answers, ahead of the next
batch there), where `DriftMonitor.fold` bins those rows into the current slot of a ring of `SLOTS` count
arrays, all allocated when the monitor is made, so memory is bounded and the window slides by a tenth. When
it is read (a scrape, `/v2/models/NAME/drift`), the slots are summed and compared with the reference:

- `psi`: the population stability index, sum over bins of (p - q) ln(p / q), the window's shares p and the
  reference's q each at least `EPSILON` (an empty bin is not infinitely surprising); by convention below 0.1
  is stable, from 0.25 a major shift (the spec's `monitor.psi_warn` and `psi_alert`);
- `nan_rate`, `out_of_range_rate`: the share of values that are NaN, or outside the reference's [min, max];
- prediction: the PSI of the top-1 class distribution, the mean top-1 confidence and the PSI of its
  histogram; for an embedding the PSI of its norm and 1 - cosine between the window's and the reference's
  mean vector.

numpy only: this module ships in every bundle.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from prometheus_client.core import Metric

__all__ = ["EPSILON", "REFERENCE_PATH", "SLOTS", "CONFIDENCE_EDGES", "DriftMonitor", "Group", "group_values",
           "bin_index", "psi", "softmax", "load_reference"]

REFERENCE_PATH = "monitor/reference.json"
"""Where a bundle keeps its drift reference (listed and hashed in the manifest like every file)."""
MAX_REFERENCE_BYTES = 16 << 20
"""The largest reference read (a real one is kilobytes; an embedding's mean vector adds ~20 bytes a dimension)."""
SLOTS = 10
"""Sub-windows in the ring: the window slides by a tenth of its rows."""
EPSILON = 1e-4
"""The least share a bin is given in the PSI (of the window's and of the reference's)."""
CONFIDENCE_EDGES = tuple(round(0.1 * i, 1) for i in range(1, 10))
"""The inner edges of the top-1 confidence histogram: ten bins over [0, 1]."""
_BROADCAST = 1 << 16
"""Binning compares every value with every edge at once below this many comparisons, else searches per feature."""

Array = npt.NDArray[Any]


@dataclass(frozen=True)
class Group:
    """The features of one model input, all read the same way.

    `kind`: `column` (a 2-D input [N, C]: one feature per column), `channel` (an image: one per channel, on
    `axis` 1 or -1, all its pixels), `length` (a padded token sequence: the count of values other than `pad`
    per row), `value` (one feature of all the row's values).
    """

    input: str
    kind: str
    names: tuple[str, ...]
    axis: int = 1
    pad: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"input": self.input, "kind": self.kind, "names": list(self.names), "axis": self.axis,
                "pad": self.pad}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Group:
        return cls(str(d["input"]), str(d["kind"]), tuple(str(n) for n in d["names"]), int(d.get("axis", 1)),
                   int(d.get("pad", 0)))


def group_values(array: Array, group: Group) -> Array:
    """The values of `group`'s features in rows of `array` (one model input, batch on axis 0), as float64
    [rows, features, values per row] (a view where it can be)."""
    n = array.shape[0]
    if group.kind == "column":
        values = array.reshape(n, -1, 1)
    elif group.kind == "channel" and group.axis == 1:
        values = array.reshape(n, array.shape[1], -1)
    elif group.kind == "channel":
        values = array.reshape(n, -1, array.shape[-1]).transpose(0, 2, 1)
    elif group.kind == "length":
        values = (array != group.pad).reshape(n, -1).sum(axis=1).reshape(n, 1, 1)
    else:
        values = array.reshape(n, 1, -1)
    return values.astype(np.float64, copy=False)


def bin_index(values: Array, edges: Array) -> Array:
    """The bin of each value: how many of its feature's inner `edges` are <= it (so bin 0 is open below and the
    last open above). `values` [rows, F, m], `edges` [F, B - 1] (padded with +inf); NaN lands in bin 0 (count
    it apart)."""
    if values.size * edges.shape[1] <= _BROADCAST:
        return (values[..., None] >= edges[None, :, None, :]).sum(axis=3)
    out = np.empty(values.shape, dtype=np.int64)
    for f in range(edges.shape[0]):
        out[:, f, :] = np.searchsorted(edges[f], values[:, f, :], side="right")
    return out


def psi(window: Array, reference: Array, epsilon: float = EPSILON) -> Array:
    """Population stability index of bin counts (or shares) `window` against shares `reference`, over the last
    axis: sum of (p - q) ln(p / q), both floored at `epsilon`. NaN where the window is empty."""
    counts = np.asarray(window, dtype=np.float64)
    total = counts.sum(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = np.maximum(counts / total, epsilon)
    q = np.maximum(np.asarray(reference, dtype=np.float64), epsilon)
    value = ((p - q) * np.log(p / q)).sum(axis=-1)
    return np.where(total[..., 0] > 0, value, np.nan)


def softmax(logits: Array) -> Array:
    """Softmax over the last axis (float64)."""
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    out: Array = shifted / shifted.sum(axis=-1, keepdims=True)
    return out


def load_reference(root: str | Path, listed: Mapping[str, Any]) -> dict[str, Any] | None:
    """The bundle's drift reference when its manifest lists one (`listed`: the manifest's files), else None."""
    if REFERENCE_PATH not in listed:
        return None
    path = Path(root) / REFERENCE_PATH
    with open(path, "rb") as f:
        data = f.read(MAX_REFERENCE_BYTES + 1)
    if len(data) > MAX_REFERENCE_BYTES:
        raise ValueError(f"{REFERENCE_PATH}: over {MAX_REFERENCE_BYTES} bytes")
    reference: dict[str, Any] = json.loads(data)
    return reference


def _padded(rows: Sequence[Sequence[float]], width: int, fill: float) -> Array:
    out = np.full((len(rows), width), fill, dtype=np.float64)
    for i, row in enumerate(rows):
        out[i, :len(row)] = row
    return out


class DriftMonitor:
    """Running histograms of sampled rows over a sliding window, compared with the bundle's reference."""

    def __init__(self, reference: Mapping[str, Any], model: str, version: str) -> None:
        self.model, self.version = model, version
        config = reference["config"]
        self.window = int(config["window"])
        self.every = max(1, round(1 / float(config["sample_rate"])))
        self.psi_warn, self.psi_alert = float(config["psi_warn"]), float(config["psi_alert"])
        self.groups = [Group.from_dict(g) for g in reference["groups"]]
        features = reference["features"]
        self.names = [str(f["name"]) for f in features]
        self.inputs = [str(f["input"]) for f in features]
        bins = max(len(f["fractions"]) for f in features) if features else 1
        self.fractions = _padded([f["fractions"] for f in features], bins, 0.0)
        # one comparison with these edges bins a value and finds it out of range: [min, inner edges, just above
        # max, +inf padding]; bin 0 is below min, 1 .. last - 1 the reference's bins, last and above beyond max,
        # and the ring's last column counts NaN
        self._edges = _padded([[f["min"], *f["edges"], float(np.nextafter(f["max"], math.inf))] for f in features],
                              bins + 1, math.inf)
        self._last = [len(f["edges"]) + 2 for f in features]
        self._width = bins + 3
        self.reference_nan = np.array([f["nan_rate"] for f in features], dtype=np.float64)
        self._spans: list[slice] = []
        self._offsets: list[Array] = []  # each feature's first column in a group's flattened counts
        start = 0
        for g in self.groups:
            self._spans.append(slice(start, start + len(g.names)))
            self._offsets.append((np.arange(len(g.names)) * self._width).reshape(1, -1, 1))
            start += len(g.names)
        self.prediction: dict[str, Any] | None = reference.get("prediction")
        f, k = len(features), SLOTS
        # the ring: every count the window needs, allocated once
        self._counts = np.zeros((k, f, self._width), dtype=np.int64)
        self._rows = np.zeros(k, dtype=np.int64)
        self._slot = 0
        self._capacity = max(1, math.ceil(self.window / k))
        self._seen = 0  # rows counted by `sample`
        self._folded = 0  # sampled rows folded
        self._lock = threading.Lock()
        p = self.prediction or {}
        self._prediction_bins = (len(p.get("class_fractions", ())) if p.get("kind") == "classifier"
                                 else len(p.get("norm_fractions", ())))
        self._classes = np.zeros((k, max(1, self._prediction_bins)), dtype=np.int64)
        self._confidence = np.zeros((k, len(CONFIDENCE_EDGES) + 1), dtype=np.int64)
        self._confidence_sum = np.zeros(k, dtype=np.float64)
        self._embedding_sum = np.zeros((k, len(p.get("mean", ()))), dtype=np.float64)
        self._prediction_rows = np.zeros(k, dtype=np.int64)
        self._norm_edges = np.array(p.get("norm_edges", ()), dtype=np.float64)
        self._confidence_edges = np.array(CONFIDENCE_EDGES, dtype=np.float64)

    # -- folding (worker thread) ----------------------------------------------------------------------------
    def sample(self, rows: int) -> slice | None:
        """The rows of the next `rows` (a batch) that are sampled, counted across batches (every `every`-th row
        overall), or None when none is: the caller folds only batches with sampled rows."""
        with self._lock:
            start = (-self._seen) % self.every  # the rows whose running number is a multiple of `every`
            self._seen += rows
        return slice(start, rows, self.every) if start < rows else None

    def fold(self, model_inputs: Mapping[str, Array], response: Mapping[str, Array], picked: slice) -> None:
        """Fold the `picked` rows (from `sample`) of one batch: its model inputs and its model outputs and
        response tensors, batch on axis 0."""
        rows = len(range(*picked.indices(len(next(iter(model_inputs.values()))))))
        if rows == 0:
            return
        with self._lock:
            self._folded += rows
            slot = self._advance(rows)
            for group, span, offsets in zip(self.groups, self._spans, self._offsets, strict=True):
                array = model_inputs.get(group.input)
                if array is not None:
                    self._fold_group(slot, span, offsets, group_values(array[picked], group))
            if self.prediction is not None:
                output = response.get(self.prediction["output"])
                if output is not None:
                    self._fold_prediction(slot, np.asarray(output[picked], dtype=np.float64).reshape(rows, -1))

    def observe(self, model_inputs: Mapping[str, Array], response: Mapping[str, Array]) -> None:
        """`sample` and `fold` one batch."""
        n = len(next(iter(model_inputs.values()))) if model_inputs else 0
        picked = self.sample(n) if n else None
        if picked is not None:
            self.fold(model_inputs, response, picked)

    def _advance(self, rows: int) -> int:
        """The slot these rows go to: the current one, or the next (emptied) once the current one is full."""
        if self._rows[self._slot] >= self._capacity:
            self._slot = (self._slot + 1) % SLOTS
            for ring in (self._counts, self._rows, self._classes,
                         self._confidence, self._confidence_sum, self._embedding_sum, self._prediction_rows):
                ring[self._slot] = 0
        self._rows[self._slot] += rows
        return self._slot

    def _fold_group(self, slot: int, span: slice, offsets: Array, values: Array) -> None:
        index = bin_index(values, self._edges[span])
        nan = np.isnan(values)
        if nan.any():
            index[nan] = self._width - 1
        index += offsets
        features, width = values.shape[1], self._width
        self._counts[slot, span] += np.bincount(index.ravel(), minlength=features * width).reshape(features, width)

    def _fold_prediction(self, slot: int, output: Array) -> None:
        assert self.prediction is not None
        self._prediction_rows[slot] += len(output)
        if self.prediction["kind"] == "classifier":
            if self.prediction.get("softmax"):
                output = softmax(output)
            top = output.argmax(axis=1)
            self._classes[slot] += np.bincount(np.minimum(top, self._prediction_bins - 1),
                                               minlength=self._prediction_bins)
            confidence = output.max(axis=1)
            self._confidence_sum[slot] += float(confidence.sum())
            index = np.searchsorted(self._confidence_edges, confidence, side="right")
            self._confidence[slot] += np.bincount(index, minlength=self._confidence.shape[1])
        else:
            norms = np.sqrt((output * output).sum(axis=1))
            index = np.searchsorted(self._norm_edges, norms, side="right")
            self._classes[slot] += np.bincount(index, minlength=self._prediction_bins)
            self._embedding_sum[slot] += output.sum(axis=0)

    # -- reading (event loop) -------------------------------------------------------------------------------
    def _status(self, value: float | None) -> str:
        if value is None:
            return "no data"
        return "alert" if value >= self.psi_alert else "warn" if value >= self.psi_warn else "ok"

    def report(self) -> dict[str, Any]:
        """The indicators over the window (what `/v2/models/NAME/drift` answers), features worst first."""
        with self._lock:
            counts = self._counts.sum(axis=0)
            rows, seen, folded = int(self._rows.sum()), self._seen, self._folded
            classes, confidence = self._classes.sum(axis=0), self._confidence.sum(axis=0)
            confidence_sum, embedding = float(self._confidence_sum.sum()), self._embedding_sum.sum(axis=0)
            predicted = int(self._prediction_rows.sum())
        nan, values = counts[:, -1], counts.sum(axis=1)
        binned = np.zeros_like(self.fractions)
        outside = np.zeros(len(self.names), dtype=np.int64)
        for i, last in enumerate(self._last):  # below min into the first bin, beyond max into the last
            below, above = counts[i, 0], counts[i, last:-1].sum()
            binned[i, :last - 1] = counts[i, 1:last]
            binned[i, 0] += below
            binned[i, last - 2] += above
            outside[i] = below + above
        scores = psi(binned, self.fractions)

        def number(x: float) -> float | None:
            return None if not math.isfinite(x) else round(float(x), 6)

        features: list[dict[str, Any]] = []
        for i, name in enumerate(self.names):
            value = number(scores[i]) if values[i] else None
            features.append({
                "name": name, "input": self.inputs[i], "psi": value, "status": self._status(value),
                "nan_rate": number(nan[i] / values[i]) if values[i] else None,
                "out_of_range_rate": number(outside[i] / values[i]) if values[i] else None,
                "reference_nan_rate": float(self.reference_nan[i]), "values": int(values[i]),
            })
        features.sort(key=lambda f: (f["psi"] is None, -(f["psi"] or 0.0), f["name"]))
        report: dict[str, Any] = {
            "model": self.model, "version": self.version, "rows_seen": seen, "rows_sampled": folded,
            "window_rows": rows,
            "window": self.window,
            "sample_rate": 1 / self.every, "psi_warn": self.psi_warn, "psi_alert": self.psi_alert,
            "status": _worst([f["status"] for f in features]), "features": features,
        }
        if self.prediction is not None:
            report["prediction"] = self._prediction_report(classes, confidence, confidence_sum, embedding,
                                                           predicted, number)
            report["status"] = _worst([report["status"], report["prediction"]["status"]])
        return report

    def _prediction_report(self, classes: Array, confidence: Array, confidence_sum: float, embedding: Array,
                           rows: int, number: Any) -> dict[str, Any]:
        p = self.prediction
        assert p is not None
        out: dict[str, Any] = {"kind": p["kind"], "output": p["output"], "rows": rows}
        if p["kind"] == "classifier":
            shift = number(psi(classes, p["class_fractions"])) if rows else None
            out.update(psi=shift, status=self._status(shift),
                       confidence_mean=number(confidence_sum / rows) if rows else None,
                       reference_confidence_mean=p["confidence_mean"],
                       confidence_psi=number(psi(confidence, p["confidence_fractions"])) if rows else None,
                       class_fractions=[round(float(c) / rows, 6) for c in classes] if rows else None,
                       reference_class_fractions=p["class_fractions"])
        else:
            shift = number(psi(classes, p["norm_fractions"])) if rows else None
            reference = np.asarray(p["mean"], dtype=np.float64)
            mean = embedding / rows if rows else reference
            cosine = float(mean @ reference) / (float(np.linalg.norm(mean) * np.linalg.norm(reference)) or 1.0)
            out.update(psi=shift, status=self._status(shift), norm_psi=shift,
                       mean_shift=number(1.0 - cosine) if rows else None)
        return out

    def families(self, label_names: Sequence[str], label_values: Sequence[str]) -> Iterator[Metric]:
        """The `infc_drift_*` gauges, computed now (the metrics' collector yields them at scrape time)."""
        from prometheus_client.core import GaugeMetricFamily

        report = self.report()
        names, values = list(label_names), list(label_values)

        def gauge(name: str, doc: str, value: float | None, feature: str | None = None) -> GaugeMetricFamily:
            labels = names + (["feature"] if feature is not None else [])
            family = GaugeMetricFamily(name, doc, labels=labels)
            if value is not None:
                family.add_metric(values + ([feature] if feature is not None else []), value)
            return family

        yield gauge("infc_drift_window_rows", "Sampled rows in the drift window.", report["window_rows"])
        per_feature = {
            "psi": ("infc_drift_psi", "Population stability index of a feature over the window against the "
                                      "bundle's reference."),
            "nan_rate": ("infc_drift_nan_rate", "Share of a feature's values that are NaN over the window."),
            "out_of_range_rate": ("infc_drift_out_of_range_rate",
                                  "Share of a feature's values outside the reference's [min, max] over the window."),
        }
        for key, (name, doc) in per_feature.items():
            family = GaugeMetricFamily(name, doc, labels=[*names, "feature"])
            for f in report["features"]:
                if f[key] is not None:
                    family.add_metric([*values, f["name"]], f[key])
            yield family
        prediction = report.get("prediction")
        if prediction is None:
            return
        yield gauge("infc_drift_prediction_psi", "PSI of the top-1 class distribution (a classifier) or of the "
                                                 "embedding norm over the window against the reference.",
                    prediction["psi"])
        if prediction["kind"] == "classifier":
            yield gauge("infc_drift_confidence_mean", "Mean top-1 confidence over the window.",
                        prediction["confidence_mean"])
            yield gauge("infc_drift_confidence_psi", "PSI of the top-1 confidence histogram over the window.",
                        prediction["confidence_psi"])
        else:
            yield gauge("infc_drift_embedding_mean_shift", "1 - cosine between the window's mean embedding and "
                                                           "the reference's.", prediction["mean_shift"])


_ORDER = ("no data", "ok", "warn", "alert")


def _worst(statuses: Sequence[str]) -> str:
    return max(statuses, key=_ORDER.index, default="no data")
