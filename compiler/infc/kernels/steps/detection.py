"""Detection post-processing: `nms` (greedy non-maximum suppression) with letterbox box rescale.

Per row: the boxes [A, 4] the step reads and the `scores` [A] or [A, C] beside
them (both used up). Each box takes its best class (ties: the lower class; NaN
scores never win); boxes scoring at least `score_threshold` with four finite
coordinates are candidates. Candidates are visited by score, highest first (ties:
the lower box index), and kept unless their IoU with a box already kept (of the
same class, unless `class_agnostic`) is above `iou_threshold`, up to
`max_detections`. IoU is computed in float64 on corner boxes; boxes with no area
overlap nothing. Kept boxes are then mapped back to the original image, undoing
a letterbox (`x = (x' - offset_x) / scale`), clipped to it if `clip` is given,
and written as float32 corners [x1, y1, x2, y2].

Results (fixed size, so rows batch): `boxes` [max_detections, 4] float32,
`scores` [max_detections] float32, `classes` [max_detections] int64 and `count`
[] int64; rows past `count` are padding (zero boxes and scores, class -1).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from infc_runtime.types import TensorSpec

from ...modelio import shape_matches
from ..registry import StepDef, register
from ..types import NUMERIC, EmitContext, ModuleText, ResolvedStep, StepIssue, literal

Array = npt.NDArray[Any]
Out = tuple[tuple[TensorSpec, ...], dict[str, Any]]

FORMATS = ("xyxy", "xywh", "cxcywh")


def _rescale(p: Mapping[str, Any]) -> tuple[float, float, float]:
    r = p.get("rescale", {})
    offset = r.get("offset", [0.0, 0.0])
    return float(r.get("scale", 1.0)), float(offset[0]), float(offset[1])


def _nms_infer(t: TensorSpec, p: Mapping[str, Any], out: str, others: Mapping[str, TensorSpec]) -> Out:
    if t.dtype not in NUMERIC or len(t.shape) != 2 or t.shape[1] not in (4, -1):
        raise StepIssue(f"expected boxes [A, 4] per row, got {t.dtype} tensor {t.name!r} of shape {list(t.shape)}")
    scores = others.get(p["scores"])
    if scores is None:
        raise StepIssue(f"no tensor named {p['scores']!r} to read scores from (have: {', '.join(others)})", "scores")
    if scores.dtype not in NUMERIC or len(scores.shape) not in (1, 2):
        raise StepIssue(f"expected scores [A] or [A, classes], got {scores.dtype} tensor {scores.name!r} of shape "
                        f"{list(scores.shape)}", "scores")
    if not shape_matches(scores.shape[:1], t.shape[:1]):
        raise StepIssue(f"{scores.name!r} scores {scores.shape[0]} boxes, but {t.name!r} holds {t.shape[0]}", "scores")
    for key in ("iou_threshold", "score_threshold"):
        if not math.isfinite(float(p.get(key, 0.0))):
            raise StepIssue("expected a finite number", key)
    if not _rescale(p)[0] > 0:
        raise StepIssue("expected a positive scale", "rescale")
    m = int(p.get("max_detections", 100))
    prefix = f"{p['output']}_" if "output" in p else ""
    outputs = (TensorSpec(f"{prefix}boxes", "float32", (m, 4)), TensorSpec(f"{prefix}scores", "float32", (m,)),
               TensorSpec(f"{prefix}classes", "int64", (m,)), TensorSpec(f"{prefix}count", "int64", ()))
    return outputs, {}


def _corners(b: Array, fmt: str) -> Array:
    """[A, 4] boxes in `fmt` as float64 corners, by the kernel's arithmetic."""
    b = b.astype(np.float64)
    if fmt == "xyxy":
        return b
    if fmt == "xywh":
        return np.stack([b[:, 0], b[:, 1], b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]], axis=1)
    hw, hh = b[:, 2] * 0.5, b[:, 3] * 0.5
    return np.stack([b[:, 0] - hw, b[:, 1] - hh, b[:, 0] + hw, b[:, 1] + hh], axis=1)


def _iou(box: Array, kept: Array) -> Array:
    """IoU of one corner box with each of `kept` [K, 4] (0 where the union has no area)."""
    iw = np.maximum(np.minimum(box[2], kept[:, 2]) - np.maximum(box[0], kept[:, 0]), 0.0)
    ih = np.maximum(np.minimum(box[3], kept[:, 3]) - np.maximum(box[1], kept[:, 1]), 0.0)
    inter = iw * ih
    area = max(box[2] - box[0], 0.0) * max(box[3] - box[1], 0.0)
    areas = np.maximum(kept[:, 2] - kept[:, 0], 0.0) * np.maximum(kept[:, 3] - kept[:, 1], 0.0)
    union = area + areas - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def _nms_row(boxes: Array, scores: Array, p: Mapping[str, Any]) -> tuple[Array, Array, Array, int]:
    m = int(p.get("max_detections", 100))
    corners = _corners(boxes, p.get("box_format", "xyxy"))
    s = scores.astype(np.float64)
    s = s[:, None] if s.ndim == 1 else s
    s = np.where(np.isnan(s), -np.inf, s)  # NaN never wins a class, nor passes the threshold
    cls = np.argmax(s, axis=1) if s.shape[1] else np.zeros(len(s), np.int64)
    best = s[np.arange(len(s)), cls] if s.shape[1] else np.full(len(s), -np.inf)
    ok = (best >= float(p.get("score_threshold", 0.0))) & np.isfinite(corners).all(axis=1)
    candidates = np.flatnonzero(ok)
    order = candidates[np.argsort(-best[candidates], kind="stable")]
    keep: list[int] = []
    for a in order:
        if len(keep) == m:
            break
        others = np.array(keep, dtype=np.int64)
        if not p.get("class_agnostic", False):
            others = others[cls[others] == cls[a]]
        if not (_iou(corners[a], corners[others]) > float(p.get("iou_threshold", 0.5))).any():
            keep.append(int(a))
    out_boxes = np.zeros((m, 4), np.float32)
    out_scores = np.zeros(m, np.float32)
    out_classes = np.full(m, -1, np.int64)
    if keep:
        scale, dx, dy = _rescale(p)
        k = corners[keep]
        k = (k - np.array([dx, dy, dx, dy])) / scale
        clip = p.get("clip")
        if clip is not None:
            k = np.minimum(np.maximum(k, 0.0), np.array([clip[0], clip[1], clip[0], clip[1]], np.float64))
        out_boxes[:len(keep)] = k
        out_scores[:len(keep)] = best[keep]
        out_classes[:len(keep)] = cls[keep]
    return out_boxes, out_scores, out_classes, len(keep)


def _nms_ref(x: Array, p: Mapping[str, Any], scores: Array | None = None) -> tuple[Array, ...]:
    assert scores is not None
    rows = [_nms_row(x[n], scores[n], p) for n in range(len(x))]
    m = int(p.get("max_detections", 100))
    if not rows:
        return (np.zeros((0, m, 4), np.float32), np.zeros((0, m), np.float32), np.zeros((0, m), np.int64),
                np.zeros(0, np.int64))
    return (np.stack([r[0] for r in rows]), np.stack([r[1] for r in rows]), np.stack([r[2] for r in rows]),
            np.array([r[3] for r in rows], np.int64))


def _nms_emit(text: ModuleText, step: ResolvedStep, ctx: EmitContext) -> None:
    p = step.params
    scale, dx, dy = _rescale(p)
    clip = p.get("clip")
    text.call(ctx, "nms", f"t[{p['scores']!r}]", str(int(p.get("max_detections", 100))),
              repr(p.get("box_format", "xyxy")), repr(bool(p.get("class_agnostic", False))),
              literal(p.get("iou_threshold", 0.5)), literal(p.get("score_threshold", 0.0)), literal(scale),
              f"({literal(dx)}, {literal(dy)})",
              "None" if clip is None else f"({literal(clip[0])}, {literal(clip[1])})",
              outputs=[o.name for o in step.outputs])


_pair = {"type": "array", "items": {"type": "number"}, "minItems": 2, "maxItems": 2}
register(StepDef(
    "nms", ("post",), "non-maximum suppression of boxes [A, 4] by `scores` [A] or [A, C], boxes mapped back "
    "through a letterbox: `boxes`, `scores`, `classes`, `count`", _nms_infer, _nms_ref, emit=_nms_emit,
    side=("scores",), consumes=("scores",), required=("scores",),
    params={
        "scores": {"type": "string", "minLength": 1, "description": "tensor of scores [A] or [A, classes]"},
        "iou_threshold": {"type": "number", "minimum": 0, "maximum": 1,
                          "description": "a box overlapping a kept one by more than this is dropped; default 0.5"},
        "score_threshold": {"type": "number", "description": "lowest score a box may have; default 0"},
        "max_detections": {"type": "integer", "minimum": 1, "maximum": 100000,
                           "description": "boxes kept per row (the results' fixed size); default 100"},
        "box_format": {"enum": list(FORMATS), "description": "xyxy (corners, default), xywh (corner, size), "
                                                             "cxcywh (centre, size)"},
        "class_agnostic": {"type": "boolean", "description": "suppress across classes; default false"},
        "rescale": {"type": "object", "additionalProperties": False,
                    "description": "undo a letterbox: x = (x' - offset[0]) / scale, y = (y' - offset[1]) / scale",
                    "properties": {"scale": {"type": "number", "exclusiveMinimum": 0},
                                   "offset": {**_pair, "description": "padding [x, y] the letterbox added"}}},
        "clip": {**_pair, "description": "[width, height] of the original image: clip boxes to it"},
    }))
