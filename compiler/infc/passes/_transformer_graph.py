"""Transformer graph helpers: read its shape (model type, heads, hidden size); ready a fused graph for int8.

Attention splits the hidden state into heads with a Reshape to
[batch, sequence, heads, head_size] followed by a Transpose to
[batch, heads, sequence, head_size] (or [.., head_size, sequence] for the keys).
The Reshape's target shape holds the two numbers we need, either as one
constant tensor or as a Concat of dynamic batch/sequence sizes and constants;
the projection weight feeding it confirms heads * head_size, or supplies the
one the exporter left as -1 (onnxruntime's own detection gives up on those).
Every attention block votes; the most common answer wins.

Fused graphs hold `com.microsoft` contrib ops that onnx shape inference cannot
type, and the quantizer needs every MatMul input typed: `prepare_for_quantization`
declares the contrib outputs' element types.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import onnx
from onnx import TensorProto, helper, numpy_helper

__all__ = ["TransformerShape", "detect_transformer", "prepare_for_quantization"]

_HEAD_PERMS = ([0, 2, 1, 3], [0, 2, 3, 1])
MS_DOMAIN = "com.microsoft"
_FLOATS = {TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16}
# contrib outputs that are not of the op's float type T
_OUTPUT_TYPES = {("EmbedLayerNormalization", 1): TensorProto.INT32}


@dataclass(frozen=True)
class TransformerShape:
    """What the transformer fusions need; 0 heads/hidden size lets onnxruntime detect them itself."""

    model_type: str
    num_heads: int
    hidden_size: int
    source: str
    """Where the numbers come from: `graph`, `params` or `onnxruntime auto-detect`."""


def detect_transformer(model: onnx.ModelProto) -> TransformerShape:
    """The model type (from the graph inputs) and the heads and hidden size (from the head splits)."""
    graph = _Graph(model)
    votes = Counter(graph.head_splits())
    model_type = _model_type(model)
    if not votes:
        return TransformerShape(model_type, 0, 0, "onnxruntime auto-detect")
    (heads, head_size), _ = votes.most_common(1)[0]
    return TransformerShape(model_type, heads, heads * head_size, "graph")


def _model_type(model: onnx.ModelProto) -> str:
    """Decoders take past keys/values, vision transformers pixels; everything else is an encoder (BERT-like)."""
    names = [i.name.lower() for i in model.graph.input]
    if any(n.startswith("past") for n in names):
        return "gpt2"
    if "pixel_values" in names:
        return "vit"
    return "bert"


class _Graph:
    """Producers, consumers and constants of a graph, for pattern reading."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.producer = {out: n for n in model.graph.node for out in n.output}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for n in model.graph.node:
            for name in n.input:
                self.consumers.setdefault(name, []).append(n)
        self.initializers = {i.name: i for i in model.graph.initializer}
        self.nodes = list(model.graph.node)

    def const(self, name: str) -> list[int] | None:
        """The values of a constant int tensor (initializer or Constant node), flattened."""
        if name in self.initializers:
            return [int(v) for v in numpy_helper.to_array(self.initializers[name]).ravel()]
        node = self.producer.get(name)
        if node is not None and node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    return [int(v) for v in numpy_helper.to_array(attr.t).ravel()]
                if attr.name in ("value_int", "value_ints"):
                    return [int(v) for v in onnx.helper.get_attribute_value(attr)] if attr.name == "value_ints" \
                        else [int(attr.i)]
        return None

    def shape_dims(self, name: str) -> list[int | None] | None:
        """A Reshape target: constants where known, None for dynamic sizes; None if its length is unknown."""
        values = self.const(name)
        if values is not None:
            return list(values)
        node = self.producer.get(name)
        if node is None or node.op_type != "Concat":
            return None
        dims: list[int | None] = []
        for part in node.input:
            known = self.const(part)
            producer = self.producer.get(part)
            if known is not None:
                dims += known
            elif producer is not None and producer.op_type == "Unsqueeze":  # one dynamic size (Shape -> Gather)
                dims.append(None)
            else:
                return None
        return dims

    def projection_width(self, name: str) -> int | None:
        """Output width of the MatMul weight that makes `name` (through an optional bias Add)."""
        node = self.producer.get(name)
        if node is not None and node.op_type == "Add":
            node = next((self.producer[i] for i in node.input
                         if i in self.producer and self.producer[i].op_type == "MatMul"), None)
        if node is None or node.op_type != "MatMul" or node.input[1] not in self.initializers:
            return None
        dims = self.initializers[node.input[1]].dims
        return int(dims[-1]) if len(dims) == 2 else None

    def head_splits(self) -> Iterator[tuple[int, int]]:
        """(heads, head_size) of every Reshape -> Transpose that splits a projection into heads."""
        for node in self.nodes:
            if node.op_type != "Reshape" or len(node.input) < 2:
                continue
            perms = [list(onnx.helper.get_attribute_value(a)) for c in self.consumers.get(node.output[0], [])
                     if c.op_type == "Transpose" for a in c.attribute if a.name == "perm"]
            if not any(p in _HEAD_PERMS for p in perms):
                continue
            dims = self.shape_dims(node.input[1])
            if dims is None or len(dims) != 4:
                continue
            heads, head_size = (d if d is not None and d > 0 else None for d in dims[2:])
            width = self.projection_width(node.input[0])
            # one of the two may be -1 (transformers 5 writes [batch, sequence, -1, head_size]): the weight says
            if width and heads and not head_size and width % heads == 0:
                head_size = width // heads
            if width and head_size and not heads and width % head_size == 0:
                heads = width // head_size
            if heads and head_size and (width is None or width == heads * head_size):
                yield heads, head_size


def prepare_for_quantization(model: onnx.ModelProto) -> None:
    """In place: import the `com.microsoft` opset and type the contrib ops' outputs, so onnx shape
    inference (and the quantizer, which relies on it) can type everything downstream of them."""
    _import_ms_opset(model)
    _type_contrib_outputs(model)


def _import_ms_opset(model: onnx.ModelProto) -> None:
    if any(n.domain == MS_DOMAIN for n in model.graph.node) and all(o.domain != MS_DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))


def _type_contrib_outputs(model: onnx.ModelProto) -> None:
    declared = {v.name for v in (*model.graph.value_info, *model.graph.output)}
    for _ in range(3):  # a contrib op may only be typed once the one before it is
        inferred = onnx.shape_inference.infer_shapes(model)
        types = {v.name: v.type.tensor_type.elem_type
                 for v in (*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output)}
        types.update({i.name: i.data_type for i in model.graph.initializer})
        added = 0
        for node in model.graph.node:
            if node.domain != MS_DOMAIN:
                continue
            float_type = next((types[i] for i in node.input if types.get(i) in _FLOATS), None)
            for k, name in enumerate(node.output):
                elem = _OUTPUT_TYPES.get((node.op_type, k), float_type)
                if name and name not in declared and elem is not None:
                    model.graph.value_info.append(helper.make_tensor_value_info(name, elem, None))
                    declared.add(name)
                    added += 1
        if not added:
            return
