"""Make tests/models/tree.onnx: a small gradient-boosted tree classifier (ai.onnx.ml TreeEnsemble).

Used to check that quantization passes an ai.onnx.ml model through with a note
instead of crashing. Run: `pip install ".[examples]" && python tests/models/make_tree.py`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from skl2onnx import to_onnx
from sklearn.datasets import load_breast_cancer
from sklearn.ensemble import GradientBoostingClassifier

HERE = Path(__file__).resolve().parent

if __name__ == "__main__":
    data = load_breast_cancer()
    x, y = data.data.astype(np.float32), data.target
    clf = GradientBoostingClassifier(n_estimators=20, max_depth=3, random_state=0).fit(x, y)
    model = to_onnx(clf, x[:1], options={id(clf): {"zipmap": False}}, target_opset={"": 17, "ai.onnx.ml": 3})
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, HERE / "tree.onnx")
    print(f"wrote {HERE / 'tree.onnx'}: {[n.op_type for n in model.graph.node]}")
