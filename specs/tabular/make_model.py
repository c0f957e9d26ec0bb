"""Make the tabular example: a risk-style binary classifier on scikit-learn's breast-cancer data.

Writes, next to this file:
  tabular.onnx  MLP (skl2onnx): features float32 [N, 30] (standardized) -> label int64 [N], probabilities [N, 2]
  calib.npz     `rows`: the training rows, one JSON object each ({"mean radius": 17.99, ...})
  val.npz       `rows`: the held-out rows as JSON, `labels`: their classes
  tabular.yaml  the spec: `features` picks the 30 named measurements out of each JSON row,
                `standardize: {from: calibration}` computes mean/std from calib.npz at build time

Requests are JSON rows with the 30 raw measurements by name (a BYTES tensor
`rows`, one object per row); the spec's pre steps turn them into the model's
standardized vector server-side. No download: the data ships with scikit-learn. Run:
`pip install ".[examples]" && python specs/tabular/make_model.py`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from skl2onnx import to_onnx
from sklearn.datasets import load_breast_cancer
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier

HERE = Path(__file__).resolve().parent
SEED = 0

SPEC = """\
# Breast-cancer risk classifier: 30 raw measurements in, a decision and its probability out.
# Made by make_model.py from scikit-learn's bundled breast-cancer data (skl2onnx MLP).
name: tabular-risk
version: 1.0.0
model: tabular.onnx
target: {{hardware: x86, isa: native}}   # native: the build host is the target (measured latency is enforced)
inputs:
  - {{name: rows, dtype: bytes, shape: []}}   # one JSON object per row: {{"mean radius": 17.99, ...}}
budget:
  latency_ms: {{p99: 5}}
  accuracy:
    - {{metric: decision_agreement, threshold: 0.5, output: probabilities, min: 0.99}}
    - {{metric: auc, output: probabilities, min: 0.97}}
optimize:
  quantize: auto
  calibration: calib.npz
  validation: val.npz
preprocess:
  - features:         # the 30 measurements, by name, in the model's order; a missing one is a 400
      fields: [{fields}]
  - standardize: {{from: calibration}}   # mean/std of calib.npz (the training rows), computed at build time
postprocess:
  - labels: {{input: label, names: [malignant, benign]}}
"""


def main() -> None:
    data = load_breast_cancer()
    x = data.data.astype(np.float32)
    y = data.target.astype(np.int64)
    x_train, x_val, y_train, y_val = train_test_split(x, y, test_size=0.3, random_state=SEED, stratify=y)
    mean, std = x_train.mean(axis=0), x_train.std(axis=0)
    clf = MLPClassifier(hidden_layer_sizes=(64, 32), max_iter=500, random_state=SEED)
    clf.fit((x_train - mean) / std, y_train)
    print(f"validation accuracy (scikit-learn): {clf.score((x_val - mean) / std, y_val):.4f}")
    model = to_onnx(clf, x_train[:1], options={id(clf): {"zipmap": False}}, target_opset=17)
    model.graph.input[0].name = "features"
    for node in model.graph.node:
        node.input[:] = ["features" if i == "X" else i for i in node.input]
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, HERE / "tabular.onnx")
    names = [str(n) for n in data.feature_names]
    raw_train, raw_val = train_test_split(data.data, test_size=0.3, random_state=SEED, stratify=y)

    def rows(values: np.ndarray) -> np.ndarray:
        # the measurements as scikit-learn has them (float64), so float32(JSON value) is x exactly
        return np.array([json.dumps(dict(zip(names, map(float, r), strict=True))).encode() for r in values])

    np.savez_compressed(HERE / "calib.npz", rows=rows(raw_train))
    np.savez_compressed(HERE / "val.npz", rows=rows(raw_val), labels=y_val)
    (HERE / "tabular.yaml").write_text(SPEC.format(fields=", ".join(names)))
    print(f"wrote tabular.onnx, calib.npz, val.npz ({len(x_val)} rows), tabular.yaml")


if __name__ == "__main__":
    main()
