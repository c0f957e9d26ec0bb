"""FuseAttentionPass: attention fusion with onnxscript's rewriter, for graphs onnxruntime.transformers leaves unfused.

The default (torch.export-based) exporter writes SDPA attention as a MatMul /
Softmax / masking subgraph that `onnxruntime.transformers` does not recognise;
onnxscript's ORT fusions (`optimize_for_ort`) match it (SDPA -> MultiHeadAttention
-> Attention) along with skip layer norms and GELUs. The two fusers complement
each other: run `fuse_transformer` first (it fuses TorchScript exports fully,
embeddings included), then this pass for whatever attention is left.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import onnx

from ._transformer_graph import prepare_for_quantization
from .base import PassContext, PassResult, fused, op_counts, ops_change, register, unchanged

__all__ = ["FuseAttentionPass"]

_ATTENTION_OPS = ("com.microsoft.Attention", "com.microsoft.MultiHeadAttention", "com.microsoft.GroupQueryAttention")


@register
class FuseAttentionPass:
    """Fuse attention (and the norms and GELUs around it) with onnxscript's rewriter."""

    name = "fuse_attention"

    @staticmethod
    def summary(record: Mapping[str, Any]) -> str:
        """The patterns fused, or why none was."""
        return unchanged(record) or fused(record) or ops_change(record)

    def call(self, model: onnx.ModelProto, ctx: PassContext) -> PassResult:
        import onnx_ir as ir  # imported here: onnxscript is heavy and most builds never need it
        from onnxscript.rewriter.ort_fusions import optimize_for_ort

        before = op_counts(model)
        if not before.get("Softmax"):
            return PassResult(model, modified=False, record={
                "reason": "no unfused attention: the graph has no Softmax node", "fused": {}})
        source = onnx.ModelProto()
        source.CopyFrom(model)  # the rewriter works in place on IR that may share the proto's buffers
        quiet = logging.getLogger("onnxscript")
        level = quiet.level
        quiet.setLevel(logging.ERROR)  # it logs each rule it tries; the record has the counts
        try:
            rewritten, counts = optimize_for_ort(ir.from_proto(source))
        finally:
            quiet.setLevel(level)
        fused = {rule: n for rule, n in sorted(counts.items()) if n}
        out = ir.to_proto(rewritten)
        after = op_counts(out)
        attention = sum(after.get(op, 0) - before.get(op, 0) for op in _ATTENTION_OPS)
        record: dict[str, Any] = {"fused": fused, "attention_fused": attention}
        if not fused:
            return PassResult(model, modified=False, record={
                **record, "reason": "onnxscript's rewriter matched no attention, norm or GELU pattern"})
        prepare_for_quantization(out)
        onnx.checker.check_model(out)
        notes = [f"attention not fused: {after['Softmax']} Softmax node(s) remain"] if after.get("Softmax") else []
        return PassResult(out, modified=True, record={**record, "ops_before": before, "ops_after": after,
                                                      "notes": notes})
