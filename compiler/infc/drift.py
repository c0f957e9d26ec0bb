"""The bundle's drift reference (`monitor/reference.json`): what the server's drift indicators compare with.

Made of the spec's own data: the calibration requests (else the validation ones) pushed through the
bundle's pre-processing give the features' reference (per watched model input: a 2-D input per column,
named by the pre module's `COLUMNS` where it has them; an image per channel; a padded token sequence by its
length). The validation outputs give the predictions' reference: a classifier's top-1 class distribution
and confidence histogram when a model output or response tensor holds probabilities (rows in [0, 1] summing
to 1), or logits that a softmax step reads; else an embedding's norm histogram and mean vector when the
post-processing pools or normalizes one (`mean_pool`, `l2_normalize`). The file is kilobytes and its numbers
are rounded, so the same data gives the same bytes. See `infc_runtime.drift` for the run-time half.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from infc_runtime.abi import KernelInfo
from infc_runtime.drift import CONFIDENCE_EDGES, REFERENCE_PATH, Group, bin_index, group_values, softmax
from infc_runtime.types import Tensors

from .spec import Monitor

__all__ = ["EMBEDDING_STEPS", "MAX_FEATURES", "reference_files", "make_reference", "watched_groups"]

EMBEDDING_STEPS = ("mean_pool", "l2_normalize")
"""Post steps whose output is an embedding."""
_CHUNK = 64
MAX_FEATURES = 1024
"""Features of one input at most: a wider input (an embedding fed in, a flattened image) is watched as one."""


def reference_files(monitor: Monitor, pre: KernelInfo, features_from: Tensors | None,
                    outputs: Mapping[str, np.ndarray] | None,
                    post_steps: Sequence[tuple[str, str | None]]) -> dict[str, bytes]:
    """`{REFERENCE_PATH: bytes}`, or nothing when the monitor is off or there is no data to make it of.

    `outputs`: the model outputs and response tensors on the validation data; `post_steps`: the post steps as
    (name, the tensor it reads)."""
    if not monitor.enabled or features_from is None:
        return {}
    reference = make_reference(monitor, pre, features_from, outputs, post_steps)
    return {REFERENCE_PATH: (json.dumps(reference, sort_keys=True, separators=(",", ":")) + "\n").encode()}


def make_reference(monitor: Monitor, pre: KernelInfo, requests: Tensors, outputs: Mapping[str, np.ndarray] | None,
                   post_steps: Sequence[tuple[str, str | None]]) -> dict[str, Any]:
    """The reference as data: the monitor's settings, the watched groups, each feature's bins and rates, and
    the predictions' reference (None when no response tensor is a classifier's or an embedding)."""
    n = len(next(iter(requests.values())))
    chunks = [pre.run({k: v[start:start + _CHUNK] for k, v in requests.items()}) for start in range(0, n, _CHUNK)]
    groups = watched_groups(chunks[0], monitor.inputs, pre.columns, pre.padding)
    features: list[dict[str, Any]] = []
    for group in groups:
        values = np.concatenate([group_values(np.asarray(c[group.input]), group) for c in chunks])
        for f, name in enumerate(group.names):
            features.append({"name": name, "input": group.input, **_feature(values[:, f, :].ravel(), monitor.bins)})
    return {
        "format": 1,
        "config": {"window": monitor.window, "sample_rate": monitor.sample_rate, "psi_warn": monitor.psi_warn,
                   "psi_alert": monitor.psi_alert, "bins": monitor.bins},
        "rows": n,
        "groups": [g.to_dict() for g in groups],
        "features": features,
        "prediction": _prediction(outputs, post_steps, monitor.bins) if outputs else None,
    }


def watched_groups(model_inputs: Mapping[str, Any], watched: Sequence[str] | None,
                   columns: Mapping[str, Sequence[str]], padding: Mapping[str, int]) -> list[Group]:
    """How each watched model input is read (all of them when `watched` is None), from one batch of them."""
    names = [n for n in model_inputs if watched is None or n in watched]
    several = len(names) > 1
    groups = []
    for name in names:
        array = np.asarray(model_inputs[name])
        if array.dtype.kind not in "biuf":
            continue
        if name in padding:
            groups.append(Group(name, "length", (f"{name}.length",), pad=int(padding[name])))
        elif array.ndim == 2 and array.shape[1] <= MAX_FEATURES:
            fields = list(columns.get(name, ()))
            labels = [fields[c] if c < len(fields) else f"{name}[{c}]" for c in range(array.shape[1])]
            groups.append(Group(name, "column", tuple(f"{name}.{x}" if several and x in fields else x
                                                      for x in labels)))
        elif array.ndim >= 3 and min(array.shape[1], array.shape[-1]) <= MAX_FEATURES:
            axis = 1 if array.shape[1] <= 4 or array.shape[-1] > 4 else -1  # NCHW, unless only NHWC fits
            groups.append(Group(name, "channel", tuple(f"{name}.channel{c}" for c in range(array.shape[axis])),
                                axis=axis))
        else:
            groups.append(Group(name, "value", (name,)))
    return groups


def _round(x: float) -> float:
    return float(f"{x:.6g}")


def _feature(values: np.ndarray, bins: int) -> dict[str, Any]:
    """A feature's bins (inner edges at its quantiles, duplicates merged: open at both ends), their shares,
    its NaN rate and range."""
    nan = np.isnan(values)
    finite = values[~nan]
    if finite.size == 0:
        return {"edges": [], "fractions": [1.0], "nan_rate": 1.0, "min": 0.0, "max": 0.0}
    edges = np.unique(np.quantile(finite, np.arange(1, bins) / bins))
    edges = np.array([_round(e) for e in edges if finite.min() < e <= finite.max()])  # no bin always empty
    edges = np.unique(edges)
    index = bin_index(finite.reshape(-1, 1, 1), edges.reshape(1, -1))
    counts = np.bincount(index.ravel(), minlength=len(edges) + 1)
    return {"edges": [float(e) for e in edges], "fractions": [_round(c / finite.size) for c in counts],
            "nan_rate": _round(float(nan.mean())), "min": _round(float(finite.min())),
            "max": _round(float(finite.max()))}


def _prediction(outputs: Mapping[str, np.ndarray], post_steps: Sequence[tuple[str, str | None]],
                bins: int) -> dict[str, Any] | None:
    """A classifier's reference when a tensor holds probabilities (or logits a softmax step reads), else an
    embedding's when the post-processing makes one; None otherwise."""
    floats = {k: np.asarray(v, dtype=np.float64) for k, v in outputs.items()
              if np.asarray(v).dtype.kind == "f" and np.asarray(v).ndim == 2 and np.asarray(v).shape[1] >= 2}
    logits = {read for step, read in post_steps if step == "softmax" and read in floats}
    candidates = [(name, v, False) for name, v in floats.items()] + [(name, softmax(floats[name]), True)
                                                                    for name in sorted(logits)]
    for name, v, softmaxed in candidates:
        if np.all((v >= 0) & (v <= 1)) and np.allclose(v.sum(axis=1), 1.0, atol=1e-3):
            classes = np.bincount(v.argmax(axis=1), minlength=v.shape[1])
            confidence = v.max(axis=1)
            index = bin_index(confidence.reshape(-1, 1, 1), np.array(CONFIDENCE_EDGES).reshape(1, -1))
            histogram = np.bincount(index.ravel(), minlength=len(CONFIDENCE_EDGES) + 1)
            return {"kind": "classifier", "output": name, "softmax": softmaxed,
                    "class_fractions": [_round(c / len(v)) for c in classes],
                    "confidence_fractions": [_round(c / len(v)) for c in histogram],
                    "confidence_mean": _round(float(confidence.mean()))}
    if floats and any(step in EMBEDDING_STEPS for step, _ in post_steps):
        name, v = max(floats.items(), key=lambda item: item[1].shape[1])
        norms = np.sqrt((v * v).sum(axis=1))
        norm = _feature(norms, bins)
        return {"kind": "embedding", "output": name, "norm_edges": norm["edges"], "norm_fractions": norm["fractions"],
                "mean": [_round(float(x)) for x in v.mean(axis=0)]}
    return None
