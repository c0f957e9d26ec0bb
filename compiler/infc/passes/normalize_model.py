"""NormalizeModelPass: check, upgrade, infer shapes and fold constants before anything else.

- the ONNX checker (a broken model fails here, named, not deep inside a later pass);
- opset upgrade to `min_opset` when the model is older (per-channel QDQ needs 13);
- shape inference (later passes and the quantizer rely on value types);
- constant folding with ONNX Runtime's basic level, which only emits standard
  ONNX ops and so stays portable across execution providers;
- a name for every node (exclusion lists and reports refer to nodes by name).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import onnx
import onnxruntime as ort
from onnx import version_converter

from .base import PassContext, PassResult, op_counts, ops_change, register, unchanged

__all__ = ["NormalizeModelPass", "name_nodes"]


def name_nodes(model: onnx.ModelProto) -> onnx.ModelProto:
    """Give every unnamed node a stable name (exclusion lists refer to nodes by name)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    used = {n.name for n in out.graph.node if n.name}
    for i, node in enumerate(out.graph.node):
        if not node.name:
            name = f"{node.op_type}_{i}"
            while name in used:
                name += "_"
            node.name = name
            used.add(name)
    return out


def _opset(model: onnx.ModelProto) -> int:
    return max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)


@register
class NormalizeModelPass:
    """Checker, opset upgrade, shape inference, constant folding, node names."""

    name = "normalize"

    @staticmethod
    def summary(record: Mapping[str, Any]) -> str:
        """The op types constant folding removed and added."""
        return unchanged(record) or ops_change(record)

    def __init__(self, min_opset: int = 13, fold_constants: bool = True) -> None:
        self.min_opset, self.fold_constants = min_opset, fold_constants

    def call(self, model: onnx.ModelProto, ctx: PassContext) -> PassResult:
        onnx.checker.check_model(model, full_check=False)
        opset = _opset(model)
        out = model
        if opset < self.min_opset:
            out = version_converter.convert_version(out, self.min_opset)
        out = onnx.shape_inference.infer_shapes(out, check_type=True, strict_mode=True)
        if self.fold_constants:
            path = ctx.workdir / f"{self.name}.onnx"
            opts = ort.SessionOptions()
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
            opts.optimized_model_filepath = str(path)
            opts.log_severity_level = 3
            # MatMul+Add stay apart: Gemm with a bias trips onnxruntime's per-channel QDQ quantizer
            ort.InferenceSession(out.SerializeToString(), sess_options=opts, providers=["CPUExecutionProvider"],
                                 disabled_optimizers=["MatMulAddFusion"])
            out = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
        out = name_nodes(out)
        record = {"opset": opset, "opset_after": _opset(out), "ops_before": op_counts(model),
                  "ops_after": op_counts(out), "level": "basic (constant folding)"}
        return PassResult(out, modified=op_counts(model) != op_counts(out) or opset != _opset(out), record=record)
