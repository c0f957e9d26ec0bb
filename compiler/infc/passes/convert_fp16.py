"""ConvertFloat16Pass: fp16 weights and compute for CUDA, with fp32 inputs and outputs.

Uses `onnxruntime.transformers.float16`; the graph's I/O stays fp32 (so the
request and the kernels do not change) and the result is re-sorted
topologically (the converter appends its Cast nodes at the end). With
calibration data, nodes whose outputs reach beyond `limit` (default: half of
fp16's largest finite value, 65504) on that data stay fp32: they would overflow.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import onnx
from onnxruntime.transformers.float16 import convert_float_to_float16

from .base import PassContext, PassResult, op_counts, register, unchanged

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


def _drop_round_trips(graph: onnx.GraphProto) -> None:
    """Cast(fp32->fp16) then Cast(fp16->fp32): the converter adds these around fp32 nodes that feed a
    graph output; they would squeeze an fp32 value through fp16. The second becomes an Identity of
    the first's input."""
    producer = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, int] = {}
    for n in graph.node:
        for i in n.input:
            consumers[i] = consumers.get(i, 0) + 1

    def cast_to(node: onnx.NodeProto) -> int | None:
        return next((a.i for a in node.attribute if a.name == "to"), None) if node.op_type == "Cast" else None

    dead = []
    for node in graph.node:
        first = producer.get(node.input[0]) if node.input else None
        if (cast_to(node) == onnx.TensorProto.FLOAT and first is not None
                and cast_to(first) == onnx.TensorProto.FLOAT16 and first.input[0] in producer):
            source = producer[first.input[0]]
            if source.op_type != "Cast" and consumers.get(first.output[0]) == 1:
                node.op_type = "Identity"
                del node.attribute[:]
                node.input[0] = first.input[0]
                dead.append(first)
    for node in dead:
        graph.node.remove(node)


@register
class ConvertFloat16Pass:
    """Convert float tensors to fp16, keeping graph inputs and outputs fp32."""

    name = "convert_fp16"

    @staticmethod
    def summary(record: Mapping[str, Any]) -> str:
        """How many initializers became fp16."""
        return unchanged(record) or f"{record['fp16_initializers']} fp16 initializers, I/O kept fp32"

    def __init__(self, block_ops: tuple[str, ...] = (), limit: float = 32752.0) -> None:
        self.block_ops, self.limit = list(block_ops), limit

    def _overflowing(self, model: onnx.ModelProto, ctx: PassContext) -> dict[str, float]:
        """Nodes whose float outputs exceed the limit on the calibration data: name -> largest |value|."""
        if ctx.calibration is None:
            return {}
        from ..sensitivity import float_outputs  # late: sensitivity imports this package

        peaks = float_outputs(model, list(ctx.calibration()))
        hot = {t: v for t, v in peaks.items() if v > self.limit}
        # a hot tensor must stay fp32 on both sides: its producer and every consumer
        out: dict[str, float] = {}
        for node in model.graph.node:
            touched = [hot[t] for t in (*node.input, *node.output) if t in hot]
            if touched:
                out[node.name] = max(touched)
        return out

    def call(self, model: onnx.ModelProto, ctx: PassContext) -> PassResult:
        hot = self._overflowing(model, ctx)
        converted = convert_float_to_float16(model, keep_io_types=True, op_block_list=self.block_ops or None,
                                             node_block_list=sorted(hot) or None)
        _drop_round_trips(converted.graph)
        toposort(converted.graph)
        onnx.checker.check_model(converted)
        fp16 = sum(1 for t in converted.graph.initializer if t.data_type == onnx.TensorProto.FLOAT16)
        return PassResult(converted, modified=True,
                          record={"ops_before": op_counts(model), "ops_after": op_counts(converted),
                                  "fp16_initializers": fp16,
                                  "kept_fp32": {name: round(peak, 1) for name, peak in sorted(hot.items())}})
