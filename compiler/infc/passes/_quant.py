"""What the int8 passes share: which ops are quantizable, the skip note, the record."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import onnx

from .base import PassResult, op_counts

__all__ = ["COMPUTE_OPS", "quiet", "skip_reason", "quant_record", "quant_summary", "quantizable_nodes", "skipped"]

# ops onnxruntime.quantization turns into integer kernels (the ones that carry the compute)
COMPUTE_OPS = {"MatMul", "Gemm", "Conv", "ConvTranspose", "Attention", "LSTM", "EmbedLayerNormalization",
               "FusedMatMul", "MultiHeadAttention"}


@contextmanager
def quiet() -> Iterator[None]:
    """onnxruntime.quantization logs advice to the root logger; the report says what matters."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def quantizable_nodes(model: onnx.ModelProto) -> list[str]:
    """The named nodes an int8 pass would quantize (what an `exclude` list may name), in graph order."""
    return [n.name for n in model.graph.node if n.op_type in COMPUTE_OPS and n.name]


def skip_reason(model: onnx.ModelProto) -> str | None:
    """Why quantizing this model would do nothing (None: there is something to quantize)."""
    if any(n.op_type in COMPUTE_OPS for n in model.graph.node):
        return None
    ml_ops = sorted({n.op_type for n in model.graph.node if n.domain == "ai.onnx.ml"})
    if ml_ops:
        return (f"nothing to quantize: the model computes with ai.onnx.ml operators ({', '.join(ml_ops)}), "
                "which onnxruntime cannot quantize; kept as it is")
    return "nothing to quantize: no MatMul, Gemm, Conv or attention nodes; kept as it is"


def quant_record(before: onnx.ModelProto, after: onnx.ModelProto, **extra: Any) -> dict[str, Any]:
    ops = op_counts(after)
    quantized = {k: v for k, v in ops.items() if "Integer" in k or "QLinear" in k or "Quantize" in k}
    return {"ops_before": op_counts(before), "ops_after": ops, "quantized_ops": quantized, **extra}


def quant_summary(record: Mapping[str, Any]) -> str:
    """The report's line for an int8 pass that ran: quantized op types, nodes kept in fp32."""
    done = "quantized: " + (", ".join(f"{k} x{v}" for k, v in record["quantized_ops"].items()) or "nothing")
    return done + (f"; kept in fp32: {', '.join(record['excluded'])}" if record.get("excluded") else "")


def skipped(model: onnx.ModelProto, reason: str) -> PassResult:
    """The model unchanged, with the reason in the record (shown in the report)."""
    return PassResult(model, modified=False, record={"skipped": reason, "quantized_ops": {}})
