"""FuseTransformerPass: transformer fusions of `onnxruntime.transformers` (Attention, SkipLayerNormalization...).

Model type, number of heads and hidden size come from the pass params or, when
not given, from the graph (`detect_transformer`); ORT's own auto-detection
(heads and hidden size 0) is the last resort. Only layout-independent work is
done here (`opt_level` 0: fusions only, 1: ORT's basic optimizations first), so
the result runs on any provider. Torch is never needed: the basic optimizations
run through an ORT session here rather than through the optimizer's helper
(which imports torch).

The fused graph is left ready for quantization: the outputs of the contrib ops
get their element types as value_info (onnx shape inference cannot type them),
and the `com.microsoft` opset is imported.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import onnx
import onnxruntime as ort
from onnxruntime.transformers.optimizer import MODEL_TYPES, optimize_model

from ._transformer_graph import TransformerShape, detect_transformer, prepare_for_quantization
from .base import PassContext, PassResult, fused, op_counts, ops_change, register, unchanged

__all__ = ["FuseTransformerPass"]

MS_DOMAIN = "com.microsoft"


@contextmanager
def _captured_log(lines: list[str]) -> Iterator[None]:
    """The optimizer's modules log to the root logger; keep their warnings for the record, off the console."""

    class _Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(f"{record.name}: {record.getMessage()}")

    root = logging.getLogger()
    handler = _Keep(logging.WARNING)
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    return out


@register
class FuseTransformerPass:
    """Fuse attention, layer norms and GELU of a transformer graph into ORT's contrib ops."""

    name = "fuse_transformer"

    @staticmethod
    def summary(record: Mapping[str, Any]) -> str:
        """The patterns fused, or why none was."""
        return unchanged(record) or fused(record) or ops_change(record)

    def __init__(self, model_type: str | None = None, num_heads: int = 0, hidden_size: int = 0, opt_level: int = 1,
                 use_gpu: bool | None = None) -> None:
        if model_type is not None and model_type not in MODEL_TYPES:
            raise ValueError(f"model_type must be one of {sorted(MODEL_TYPES)}, got {model_type!r}")
        if opt_level not in (0, 1):
            raise ValueError(f"opt_level must be 0 or 1 (layout-independent), got {opt_level!r}")
        if num_heads < 0 or hidden_size < 0 or (num_heads and hidden_size and hidden_size % num_heads):
            raise ValueError(f"hidden_size ({hidden_size}) must be a multiple of num_heads ({num_heads}), both >= 0")
        self.model_type, self.num_heads, self.hidden_size = model_type, num_heads, hidden_size
        self.opt_level, self.use_gpu = opt_level, use_gpu

    def call(self, model: onnx.ModelProto, ctx: PassContext) -> PassResult:
        before = op_counts(model)
        if not before.get("Softmax") and not any(op.startswith(MS_DOMAIN) for op in before):
            return PassResult(model, modified=False, record={
                "reason": "not a transformer: the graph has no attention (no Softmax node)", "fused": {}})
        shape, notes = self._shape(model)
        use_gpu = ctx.target == "cuda" if self.use_gpu is None else self.use_gpu
        log: list[str] = []
        with _captured_log(log):
            source = self._basic_optimized(model, ctx, use_gpu) if self.opt_level == 1 else _copy(model)
            # opt_level 0: the ORT step (if any) was done above; this call only fuses (and mutates `source`)
            optimizer = optimize_model(source, model_type=shape.model_type, num_heads=shape.num_heads,
                                       hidden_size=shape.hidden_size, opt_level=0)
            stats = optimizer.get_fused_operator_statistics()
        fused_model = optimizer.model
        after_plain = Counter(n.op_type for n in fused_model.graph.node)
        plain_before = Counter(n.op_type for n in model.graph.node)
        fused = {op: after_plain[op] - plain_before[op] for op in sorted(stats) if after_plain[op] > plain_before[op]}
        record: dict[str, Any] = {
            "model_type": shape.model_type, "num_heads": shape.num_heads, "hidden_size": shape.hidden_size,
            "detected_from": shape.source, "opt_level": self.opt_level, "use_gpu": use_gpu, "fused": fused,
        }
        if not fused:
            reason = (f"onnxruntime.transformers found nothing to fuse (model_type {shape.model_type}, "
                      f"{shape.num_heads} heads, hidden size {shape.hidden_size})")
            return PassResult(model, modified=False, record={**record, "reason": reason, "log": log})
        prepare_for_quantization(fused_model)
        onnx.checker.check_model(fused_model)
        if after_plain["Softmax"]:
            notes.append(f"attention not fused: {after_plain['Softmax']} Softmax node(s) remain")
        return PassResult(fused_model, modified=True, record={
            **record, "ops_before": before, "ops_after": op_counts(fused_model), "notes": notes, "log": log})

    def _shape(self, model: onnx.ModelProto) -> tuple[TransformerShape, list[str]]:
        """Params win over the graph; a disagreement between them is noted (it would fuse wrongly)."""
        detected = detect_transformer(model)
        if not (self.num_heads and self.hidden_size):
            return TransformerShape(self.model_type or detected.model_type, detected.num_heads,
                                    detected.hidden_size, detected.source), []
        notes = []
        if detected.num_heads and (detected.num_heads, detected.hidden_size) != (self.num_heads, self.hidden_size):
            notes.append(f"params say {self.num_heads} heads, hidden size {self.hidden_size}; the graph says "
                         f"{detected.num_heads} heads, hidden size {detected.hidden_size}")
        return TransformerShape(self.model_type or detected.model_type, self.num_heads, self.hidden_size,
                                "params"), notes

    def _basic_optimized(self, model: onnx.ModelProto, ctx: PassContext, use_gpu: bool) -> onnx.ModelProto:
        """ORT's basic (provider-independent) optimizations: constant folding, redundant-node removal."""
        out = ctx.workdir / f"{self.name}.basic.onnx"
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        opts.optimized_model_filepath = str(out)
        opts.log_severity_level = 3
        gpu = use_gpu and "CUDAExecutionProvider" in ort.get_available_providers()
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if gpu else ["CPUExecutionProvider"]
        # ConstantSharing merges equal initializers, which hides the per-layer weights the fusions match
        ort.InferenceSession(model.SerializeToString(), sess_options=opts, providers=providers,
                             disabled_optimizers=["ConstantSharing"])
        return onnx.load(str(out))
