"""nms: greedy non-maximum suppression per row, boxes mapped back through a letterbox.

The rules (best class per box, candidates, visiting order, IoU in float64,
padding of the fixed-size results) are the `nms` step's (`infc.kernels.steps.detection`).
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np
import numpy.typing as npt

__all__ = ["BOX_FORMATS", "nms"]

Array = npt.NDArray[Any]

BOX_FORMATS = ("xyxy", "xywh", "cxcywh")
"""Box encodings, by their code in the kernel (the position here)."""


@numba.njit(cache=True, nogil=True)
def _nms_rows(boxes, scores, fmt, agnostic, iou, min_score, scale, dx, dy,  # type: ignore[no-untyped-def]
              clip, clip_w, clip_h, out_boxes, out_scores, out_classes, out_count):
    """greedy NMS of each row's boxes [A, 4] (format `fmt`, a BOX_FORMATS code) by their best class score [A, C]."""
    m = out_scores.shape[1]
    for n in range(boxes.shape[0]):
        count = boxes.shape[1]
        corners = np.empty((count, 4), dtype=np.float64)
        best = np.empty(count, dtype=np.float64)
        cls = np.zeros(count, dtype=np.int64)
        candidates = np.empty(count, dtype=np.int64)
        k = 0
        for a in range(count):
            if fmt == 0:
                x1, y1 = np.float64(boxes[n, a, 0]), np.float64(boxes[n, a, 1])
                x2, y2 = np.float64(boxes[n, a, 2]), np.float64(boxes[n, a, 3])
            elif fmt == 1:
                x1, y1 = np.float64(boxes[n, a, 0]), np.float64(boxes[n, a, 1])
                x2, y2 = x1 + np.float64(boxes[n, a, 2]), y1 + np.float64(boxes[n, a, 3])
            else:
                cx, cy = np.float64(boxes[n, a, 0]), np.float64(boxes[n, a, 1])
                hw, hh = np.float64(boxes[n, a, 2]) * 0.5, np.float64(boxes[n, a, 3]) * 0.5
                x1, y1, x2, y2 = cx - hw, cy - hh, cx + hw, cy + hh
            corners[a, 0], corners[a, 1], corners[a, 2], corners[a, 3] = x1, y1, x2, y2
            top, c = -np.inf, 0
            for j in range(scores.shape[2]):
                s = np.float64(scores[n, a, j])
                if s > top:  # NaN never wins; ties keep the lower class
                    top, c = s, j
            best[a], cls[a] = top, c
            finite = np.isfinite(x1) and np.isfinite(y1) and np.isfinite(x2) and np.isfinite(y2)
            if top >= min_score and finite:
                candidates[k] = a
                k += 1
        order = np.argsort(-best[candidates[:k]], kind="mergesort")  # stable: ties keep the lower box
        keep = np.empty(m, dtype=np.int64)
        kept = 0
        for j in range(k):
            if kept == m:
                break
            a = candidates[order[j]]
            area_a = max(corners[a, 2] - corners[a, 0], 0.0) * max(corners[a, 3] - corners[a, 1], 0.0)
            suppressed = False
            for q in range(kept):
                b = keep[q]
                if not agnostic and cls[b] != cls[a]:
                    continue
                iw = max(min(corners[a, 2], corners[b, 2]) - max(corners[a, 0], corners[b, 0]), 0.0)
                ih = max(min(corners[a, 3], corners[b, 3]) - max(corners[a, 1], corners[b, 1]), 0.0)
                inter = iw * ih
                area_b = max(corners[b, 2] - corners[b, 0], 0.0) * max(corners[b, 3] - corners[b, 1], 0.0)
                union = area_a + area_b - inter
                if union > 0 and inter / union > iou:
                    suppressed = True
                    break
            if not suppressed:
                keep[kept] = a
                kept += 1
        for q in range(m):
            if q < kept:
                a = keep[q]
                for i in range(4):
                    v = (corners[a, i] - (dx if i % 2 == 0 else dy)) / scale
                    if clip:
                        v = min(max(v, 0.0), clip_w if i % 2 == 0 else clip_h)
                    out_boxes[n, q, i] = v
                out_scores[n, q] = best[a]
                out_classes[n, q] = cls[a]
            else:
                out_boxes[n, q, :] = 0.0
                out_scores[n, q] = 0.0
                out_classes[n, q] = -1
        out_count[n] = kept


def nms(boxes: Array, scores: Array, max_detections: int, box_format: str = "xyxy", class_agnostic: bool = False,
        iou_threshold: float = 0.5, score_threshold: float = 0.0, scale: float = 1.0,
        offset: tuple[float, float] = (0.0, 0.0),
        clip: tuple[float, float] | None = None) -> tuple[Array, Array, Array, Array]:
    """NMS of boxes [N, A, 4] by scores [N, A] or [N, A, C]: float32 boxes [N, M, 4] (corners, letterbox
    undone: `(x - offset) / scale`, clipped to `clip` = [width, height] if given), float32 scores [N, M],
    int64 classes [N, M] (-1: padding) and int64 count [N], for M = `max_detections`."""
    x = np.ascontiguousarray(boxes)
    s = np.ascontiguousarray(scores)
    s = s if s.ndim == 3 else s[:, :, None]  # one class
    m = max_detections
    out_boxes = np.empty((x.shape[0], m, 4), dtype=np.float32)
    out_scores = np.empty((x.shape[0], m), dtype=np.float32)
    out_classes = np.empty((x.shape[0], m), dtype=np.int64)
    out_count = np.empty(x.shape[0], dtype=np.int64)
    clip_w, clip_h = (0.0, 0.0) if clip is None else (float(clip[0]), float(clip[1]))
    _nms_rows(x, s, BOX_FORMATS.index(box_format), bool(class_agnostic), float(iou_threshold),
              float(score_threshold), float(scale), float(offset[0]), float(offset[1]), clip is not None,
              clip_w, clip_h, out_boxes, out_scores, out_classes, out_count)
    return out_boxes, out_scores, out_classes, out_count
