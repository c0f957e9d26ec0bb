"""Make the digits example: a small MLP trained on scikit-learn's bundled digits.

Writes, next to this file:
  digits.onnx  the fp32 model: image float32 [N, 1, 8, 8] -> logits float32 [N, 10]
  calib.npz    `image`: 256 uint8 8x8 training images (calibration for static int8)
  val.npz      `image`: the held-out uint8 8x8 images, `labels`: their digits

Request images are uint8 in 0..255 (the dataset's 0..16 scaled by 255/16); the
spec's pre-processing turns them into what the model was trained on:
(x / 255 - 0.5) / 0.5 with a channel axis. No download: the data ships with
scikit-learn. Run: `pip install -e '.[examples]' && python specs/digits/make_model.py`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier

HERE = Path(__file__).resolve().parent
SEED = 0


def images_uint8() -> tuple[np.ndarray, np.ndarray]:
    """The digits as uint8 8x8 images in 0..255, and their labels."""
    digits = load_digits()
    images = np.clip(np.rint(digits.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    return images, digits.target.astype(np.int64)


def model_input(images: np.ndarray) -> np.ndarray:
    """What the spec's pre-processing computes, flattened for scikit-learn."""
    return ((images.astype(np.float32) / 255.0 - 0.5) / 0.5).reshape(len(images), -1)


def to_onnx(clf: MLPClassifier) -> onnx.ModelProto:
    """The trained MLP as a plain ONNX graph (Flatten, MatMul, Add, Relu)."""
    inits = [numpy_helper.from_array(np.array([-1, 64], dtype=np.int64), "flat_shape")]
    nodes = [helper.make_node("Reshape", ["image", "flat_shape"], ["h0"], name="flatten")]
    last = len(clf.coefs_) - 1
    for i, (w, b) in enumerate(zip(clf.coefs_, clf.intercepts_, strict=True)):
        inits += [numpy_helper.from_array(w.astype(np.float32), f"w{i}"),
                  numpy_helper.from_array(b.astype(np.float32), f"b{i}")]
        out = "logits" if i == last else f"a{i + 1}"
        nodes.append(helper.make_node("MatMul", [f"h{i}", f"w{i}"], [f"m{i}"], name=f"matmul{i}"))
        nodes.append(helper.make_node("Add", [f"m{i}", f"b{i}"], [out if i == last else f"z{i}"], name=f"add{i}"))
        if i != last:
            nodes.append(helper.make_node("Relu", [f"z{i}"], [f"h{i + 1}"], name=f"relu{i}"))
    graph = helper.make_graph(
        nodes, "digits_mlp",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 1, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="infc-examples")
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def main() -> None:
    images, labels = images_uint8()
    x_train, x_val, y_train, y_val = train_test_split(
        images, labels, test_size=0.25, random_state=SEED, stratify=labels)
    clf = MLPClassifier(hidden_layer_sizes=(256, 128), max_iter=300, random_state=SEED)
    clf.fit(model_input(x_train), y_train)
    print(f"validation accuracy (scikit-learn): {clf.score(model_input(x_val), y_val):.4f}")
    onnx.save(to_onnx(clf), HERE / "digits.onnx")
    rng = np.random.default_rng(SEED)
    calib = x_train[rng.choice(len(x_train), size=256, replace=False)]
    np.savez_compressed(HERE / "calib.npz", image=calib)
    np.savez_compressed(HERE / "val.npz", image=x_val, labels=y_val)
    print(f"wrote {HERE / 'digits.onnx'}, calib.npz ({len(calib)}), val.npz ({len(x_val)})")


if __name__ == "__main__":
    main()
