"""ConvertFloat16Pass: fp16 weights and compute for CUDA, with fp32 inputs and outputs.

Uses `onnxruntime.transformers.float16`; the graph's I/O stays fp32 (so the
request and the kernels do not change) and the result is re-sorted
topologically (the converter appends its Cast nodes at the end).
"""

from __future__ import annotations

import onnx
from onnxruntime.transformers.float16 import convert_float_to_float16

from .base import PassContext, PassResult, op_counts, register

__all__ = ["ConvertFloat16Pass", "toposort"]


def toposort(graph: onnx.GraphProto) -> None:
    """Reorder `graph.node` in place so every node comes after its producers."""
    ready = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending = list(graph.node)
    ordered: list[onnx.NodeProto] = []
    while pending:
        rest = []
        for node in pending:
            if all(i in ready for i in node.input):
                ordered.append(node)
                ready.update(node.output)
            else:
                rest.append(node)
        if len(rest) == len(pending):
            raise ValueError(f"graph has a cycle or a missing input near node {rest[0].name or rest[0].op_type}")
        pending = rest
    del graph.node[:]
    graph.node.extend(ordered)


@register
class ConvertFloat16Pass:
    """Convert float tensors to fp16, keeping graph inputs and outputs fp32."""

    name = "convert_fp16"

    def __init__(self, block_ops: tuple[str, ...] = ()) -> None:
        self.block_ops = list(block_ops)

    def call(self, model: onnx.ModelProto, ctx: PassContext) -> PassResult:
        converted = convert_float_to_float16(model, keep_io_types=True, op_block_list=self.block_ops or None)
        toposort(converted.graph)
        onnx.checker.check_model(converted)
        fp16 = sum(1 for t in converted.graph.initializer if t.data_type == onnx.TensorProto.FLOAT16)
        return PassResult(converted, modified=True,
                          record={"ops_before": op_counts(model), "ops_after": op_counts(converted),
                                  "fp16_initializers": fp16})
