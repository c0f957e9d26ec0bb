"""nms with box rescale: the generated kernel against the numpy reference, exactly.

Both compute corners, IoU and the letterbox inverse in float64 by the same
operations, so kept boxes, scores, classes and counts must be equal, not close.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kernelcheck import assert_same, compile_steps

from infc.kernels.graph import resolve
from infc.kernels.reference import run_reference
from infc_runtime.types import TensorSpec

BOXES = TensorSpec("boxes", "float32", (-1, 4))


def _compile(folder: Path, params: dict[str, Any], classes: int | None) -> Any:
    scores = TensorSpec("scores", "float32", (-1,) if classes is None else (-1, classes))
    return compile_steps(folder, "post", [("nms", {"input": "boxes", "scores": "scores", **params})], [BOXES, scores])


def _run(module: Any, params: dict[str, Any], boxes: np.ndarray, scores: np.ndarray) -> dict[str, np.ndarray]:
    got = module.run({"boxes": boxes, "scores": scores})
    want = run_reference([("nms", {"input": "boxes", "scores": "scores", **params})],
                         {"boxes": boxes, "scores": scores})
    assert_same(got, want)
    return dict(got)


def test_overlapping_boxes_of_one_class_keep_the_best_and_boxes_map_back(tmp_path: Path) -> None:
    params = {"iou_threshold": 0.5, "score_threshold": 0.1, "max_detections": 4,
              "rescale": {"scale": 0.5, "offset": [10, 20]}, "clip": [100, 80]}
    boxes = np.array([[[10, 20, 30, 40],     # class 0, 0.9: kept
                       [12, 22, 32, 42],     # class 0, 0.8: IoU 0.68 with the first: dropped
                       [12, 22, 32, 42],     # class 1, 0.7: other class: kept
                       [60, 60, 80, 70],     # class 0, 0.05: below the score threshold
                       [40, 20, 70, 90]]],   # class 0, 0.6: no overlap; clipped to the image
                     np.float32)
    scores = np.array([[[0.9, 0.0], [0.8, 0.1], [0.2, 0.7], [0.05, 0.01], [0.6, 0.3]]], np.float32)
    got = _run(_compile(tmp_path, params, 2), params, boxes, scores)
    assert got["count"].tolist() == [3]
    assert got["classes"].tolist() == [[0, 1, 0, -1]]
    np.testing.assert_array_equal(got["scores"], np.array([[0.9, 0.7, 0.6, 0.0]], np.float32))
    # (x - 10) / 0.5, (y - 20) / 0.5, then clipped to 100 x 80
    assert got["boxes"][0].tolist() == [[0, 0, 40, 40], [4, 4, 44, 44], [60, 0, 100, 80], [0, 0, 0, 0]]


def test_nms_uses_up_the_scores_and_returns_fixed_size_results(tmp_path: Path) -> None:
    issues: list[str] = []
    flow = resolve([("nms", {"input": "boxes", "scores": "scores", "max_detections": 7})],
                   [BOXES, TensorSpec("scores", "float32", (-1, 3))], lambda i, issue: issues.append(str(issue)))
    assert not issues
    assert {t.name: (t.dtype, t.shape) for t in flow.end} == {
        "boxes": ("float32", (7, 4)), "scores": ("float32", (7,)), "classes": ("int64", (7,)), "count": ("int64", ())}
    flow = resolve([("nms", {"input": "b", "scores": "logits", "output": "det"})],
                   [TensorSpec("b", "float32", (10, 4)), TensorSpec("logits", "float32", (10,))], lambda i, e: None)
    assert [t.name for t in flow.end] == ["det_boxes", "det_scores", "det_classes", "det_count"]


def test_no_boxes_nan_scores_and_nan_boxes_keep_nothing(tmp_path: Path) -> None:
    params: dict[str, Any] = {"max_detections": 3}
    module = _compile(tmp_path, params, None)
    empty = _run(module, params, np.zeros((2, 0, 4), np.float32), np.zeros((2, 0), np.float32))
    assert empty["count"].tolist() == [0, 0] and empty["classes"].tolist() == [[-1] * 3] * 2
    boxes = np.array([[[0, 0, 1, 1], [0, 0, np.nan, 1], [5, 5, 6, np.inf]]], np.float32)
    got = _run(module, params, boxes, np.array([[np.nan, 0.9, 0.8]], np.float32))
    assert got["count"].tolist() == [0]


# small integer coordinates and a few score values: duplicate boxes, exact ties, NaN
_coord = st.integers(0, 6).map(float)
_score = st.sampled_from([0.0, 0.25, 0.5, 0.5, 0.75, 1.0, float("nan")])
VARIANTS: dict[str, tuple[dict[str, Any], int | None]] = {
    "xyxy": ({"iou_threshold": 0.4, "score_threshold": 0.25, "max_detections": 5}, 3),
    "cxcywh_agnostic": ({"box_format": "cxcywh", "class_agnostic": True, "iou_threshold": 0.0,
                         "max_detections": 3, "rescale": {"scale": 2.0, "offset": [1, -1]}, "clip": [4, 4]}, 2),
    "xywh_one_class": ({"box_format": "xywh", "iou_threshold": 0.7, "max_detections": 8}, None),
}
_MODULES: dict[str, Any] = {}


@pytest.mark.parametrize("variant", list(VARIANTS))
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_kernel_equals_reference_on_random_boxes(tmp_path_factory: pytest.TempPathFactory, variant: str,
                                                  data: st.DataObject) -> None:
    params, classes = VARIANTS[variant]
    if variant not in _MODULES:
        _MODULES[variant] = _compile(tmp_path_factory.mktemp(variant), params, classes)
    n, a = data.draw(st.integers(0, 3)), data.draw(st.integers(0, 12))
    boxes = np.array(data.draw(st.lists(_coord, min_size=n * a * 4, max_size=n * a * 4)), np.float32)
    boxes = boxes.reshape(n, a, 4)
    if params.get("box_format", "xyxy") == "xyxy":
        boxes[..., 2:] += boxes[..., :2]  # mostly proper corners; zero-area boxes stay
    shape = (n, a) if classes is None else (n, a, classes)
    scores = np.array(data.draw(st.lists(_score, min_size=int(np.prod(shape)), max_size=int(np.prod(shape)))),
                      np.float32).reshape(shape)
    got = _run(_MODULES[variant], params, boxes, scores)
    m = params["max_detections"]
    for row in range(n):
        k = int(got["count"][row])
        assert 0 <= k <= m
        assert np.all(np.diff(got["scores"][row, :k]) <= 0), "kept boxes come highest score first"
        assert np.all(got["classes"][row, k:] == -1) and np.all(got["boxes"][row, k:] == 0)


@pytest.mark.parametrize(
    ("params", "scores", "reason"),
    [
        ({"scores": "nope"}, TensorSpec("s", "float32", (5,)), "no tensor named 'nope' to read scores from"),
        ({"scores": "s"}, TensorSpec("s", "float32", (6,)), "'s' scores 6 boxes, but 'boxes' holds 5"),
        ({"scores": "s"}, TensorSpec("s", "float32", (5, 2, 2)), "expected scores [A] or [A, classes]"),
        ({"scores": "s", "score_threshold": float("inf")}, TensorSpec("s", "float32", (5,)), "a finite number"),
    ],
)
def test_bad_nms_steps_report_their_reason(params: dict[str, Any], scores: TensorSpec, reason: str) -> None:
    issues: list[str] = []
    resolve([("nms", {"input": "boxes", **params})], [TensorSpec("boxes", "float32", (5, 4)), scores],
            lambda i, issue: issues.append(str(issue)))
    assert len(issues) == 1 and reason in issues[0], issues


def test_boxes_must_be_four_coordinates() -> None:
    issues: list[str] = []
    resolve([("nms", {"input": "boxes", "scores": "s"})],
            [TensorSpec("boxes", "float32", (5, 5)), TensorSpec("s", "float32", (5,))],
            lambda i, issue: issues.append(str(issue)))
    assert issues == ["expected boxes [A, 4] per row, got float32 tensor 'boxes' of shape [5, 5]"]
