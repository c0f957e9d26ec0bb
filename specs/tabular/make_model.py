"""Make the tabular example: a risk-style binary classifier on scikit-learn's breast-cancer data.

Writes, next to this file:
  tabular.onnx  MLP (skl2onnx): features float32 [N, 30] (standardized) -> label int64 [N], probabilities [N, 2]
  calib.npz     `features`: 200 raw training rows (float32)
  val.npz       `features`: the held-out raw rows, `labels`: their classes
  tabular.yaml  the spec, with the standardization (per-feature mean/std of the training rows) as a pre step

Requests carry the 30 raw measurements; the spec's `normalize` step standardizes
them server-side. No download: the data ships with scikit-learn. Run:
`pip install ".[examples]" && python specs/tabular/make_model.py`.
"""

from __future__ import annotations

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
  - {{name: features, dtype: float32, shape: [30]}}
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
  - normalize:
      mean: {mean}
      std: {std}
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
    rng = np.random.default_rng(SEED)
    np.savez_compressed(HERE / "calib.npz", features=x_train[rng.choice(len(x_train), 200, replace=False)])
    np.savez_compressed(HERE / "val.npz", features=x_val, labels=y_val)

    def fmt(values: np.ndarray) -> str:
        return "[" + ", ".join(f"{v:.6g}" for v in values) + "]"

    (HERE / "tabular.yaml").write_text(SPEC.format(mean=fmt(mean), std=fmt(std)))
    print(f"wrote tabular.onnx, calib.npz, val.npz ({len(x_val)} rows), tabular.yaml")


if __name__ == "__main__":
    main()
