"""nms against the step's numpy reference, for each box format and its options."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from infc.kernels.registry import get
from infc_runtime.ops import nms
from infc_runtime.ops.detection import BOX_FORMATS


def _boxes(rng: np.random.Generator, n: int, a: int) -> np.ndarray:
    xy = rng.uniform(0, 50, size=(n, a, 2))
    wh = rng.uniform(1, 30, size=(n, a, 2))
    return np.concatenate([xy, xy + wh], axis=-1).astype(np.float32)


@pytest.mark.parametrize("fmt", BOX_FORMATS)
@pytest.mark.parametrize("params", [
    {},
    {"class_agnostic": True, "iou_threshold": 0.3, "score_threshold": 0.2},
    {"rescale": {"scale": 0.5, "offset": [3.0, 7.0]}, "clip": [60.0, 40.0], "max_detections": 4},
])
def test_nms_matches_the_reference(fmt: str, params: dict[str, Any]) -> None:
    rng = np.random.default_rng(7)
    boxes = _boxes(rng, 3, 20)
    boxes[0, 3] = np.nan  # never a candidate
    scores = rng.random((3, 20, 4)).astype(np.float32)
    scores[1, 5, 2] = np.nan  # never wins
    p = {"scores": "s", "box_format": fmt, **params}
    m = int(p.get("max_detections", 100))
    r = p.get("rescale", {})
    got = nms(boxes, scores, m, fmt, bool(p.get("class_agnostic", False)), float(p.get("iou_threshold", 0.5)),
              float(p.get("score_threshold", 0.0)), float(r.get("scale", 1.0)), tuple(r.get("offset", (0.0, 0.0))),
              p.get("clip"))
    want = get("nms").reference(boxes, p, scores=scores)
    for g, w in zip(got, want, strict=True):
        assert g.dtype == w.dtype and g.shape == w.shape
        np.testing.assert_array_equal(g, w)


def test_one_class_scores_need_no_class_axis() -> None:
    boxes = np.array([[[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30]]], np.float32)
    out_boxes, out_scores, out_classes, count = nms(boxes, np.array([[0.9, 0.8, 0.7]], np.float32), 3)
    assert count.tolist() == [2]
    assert out_scores[0].tolist() == pytest.approx([0.9, 0.7, 0.0])
    assert out_classes[0].tolist() == [0, 0, -1]
