"""Read an ONNX model's input/output signature as runtime `TensorSpec`s."""

from __future__ import annotations

import onnx
from onnx import helper

from infc_runtime.types import TensorSpec

__all__ = ["graph_inputs", "graph_outputs", "dtype_name", "shape_matches"]


def dtype_name(elem_type: int) -> str:
    """ONNX element type -> numpy dtype name (`bytes` for strings)."""
    if elem_type == onnx.TensorProto.STRING:
        return "bytes"
    return str(helper.tensor_dtype_to_np_dtype(elem_type))


def _spec(value: onnx.ValueInfoProto) -> TensorSpec:
    tensor = value.type.tensor_type
    dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tensor.shape.dim]
    return TensorSpec(value.name, dtype_name(tensor.elem_type), tuple(dims[1:]))


def graph_inputs(model: onnx.ModelProto) -> list[TensorSpec]:
    """The model's real inputs (not initializers), batch dimension dropped."""
    inits = {i.name for i in model.graph.initializer}
    return [_spec(v) for v in model.graph.input if v.name not in inits]


def graph_outputs(model: onnx.ModelProto) -> list[TensorSpec]:
    """The model's outputs, batch dimension dropped."""
    return [_spec(v) for v in model.graph.output]


def shape_matches(have: tuple[int, ...], want: tuple[int, ...]) -> bool:
    """Equal rank and equal sizes where both are known (-1 = any)."""
    return len(have) == len(want) and all(h == w or h < 0 or w < 0 for h, w in zip(have, want, strict=True))
