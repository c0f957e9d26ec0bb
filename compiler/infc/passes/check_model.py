"""CheckModelPass: the ONNX checker and shape inference, before anything else runs."""

from __future__ import annotations

import onnx

from .base import PassContext, PassResult, register

__all__ = ["CheckModelPass"]


@register
class CheckModelPass:
    """Validate the graph and annotate it with inferred shapes."""

    name = "check_model"

    def call(self, model: onnx.ModelProto, ctx: PassContext) -> PassResult:
        onnx.checker.check_model(model, full_check=False)
        inferred = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
        opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
        return PassResult(inferred, modified=False, record={"opset": opset})
