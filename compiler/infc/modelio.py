"""Read an ONNX model's input/output signature, once, as runtime `TensorSpec`s."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import onnx
from onnx import helper

from infc_runtime.types import TensorSpec

__all__ = ["Signature", "read_signature", "dtype_name", "shape_matches"]


@dataclass(frozen=True)
class Signature:
    """A model's graph inputs (initializers excluded) and outputs, batch dimension dropped, symbolic
    dimensions as -1; and, by input name, why an input cannot be a request tensor."""

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    problems: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def request_inputs(self) -> list[TensorSpec]:
        """The inputs a request can carry as they are (the model's own request inputs)."""
        return [t for t in self.inputs if t.name not in self.problems]


def dtype_name(elem_type: int) -> str:
    """ONNX element type -> numpy dtype name (`bytes` for strings)."""
    if elem_type == onnx.TensorProto.STRING:
        return "bytes"
    return str(helper.tensor_dtype_to_np_dtype(elem_type))


def _spec(value: onnx.ValueInfoProto) -> TensorSpec:
    tensor = value.type.tensor_type
    dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tensor.shape.dim]
    return TensorSpec(value.name, dtype_name(tensor.elem_type), tuple(dims[1:]))


def _dtype(value: onnx.ValueInfoProto) -> str | None:
    """The numpy dtype name of a tensor value (None: not a tensor, or of a type numpy has none for)."""
    if not value.type.HasField("tensor_type"):
        return None
    try:
        return dtype_name(value.type.tensor_type.elem_type)
    except Exception:  # element types numpy has no dtype for (float8, undefined, ...)
        return None


def _request_problem(value: onnx.ValueInfoProto, carried: tuple[str, ...]) -> str | None:
    """Why the graph input `value` cannot be a request tensor (None: it can)."""
    if not value.type.HasField("tensor_type"):
        return f"model input {value.name!r} is not a tensor"
    kind = value.type.tensor_type
    if _dtype(value) not in carried:
        return (f"model input {value.name!r} has element type "
                f"{onnx.TensorProto.DataType.Name(kind.elem_type)}, which a request cannot carry")
    if not kind.HasField("shape") or not kind.shape.dim:
        return (f"model input {value.name!r} has no batch dimension (unknown or zero rank); "
                "list the request tensors under `inputs`")
    return None


def read_signature(model: onnx.ModelProto, carried: tuple[str, ...]) -> Signature:
    """The signature of `model`; `carried`: the dtypes a request tensor may have (`infc.spec.schema.DTYPES`)."""
    weights = {init.name for init in model.graph.initializer}
    real = [v for v in model.graph.input if v.name not in weights]
    problems = {v.name: p for v in real if (p := _request_problem(v, carried)) is not None}
    return Signature(tuple(_spec(v) for v in real if _dtype(v) is not None),
                     tuple(_spec(v) for v in model.graph.output), MappingProxyType(problems))


def shape_matches(have: tuple[int, ...], want: tuple[int, ...]) -> bool:
    """Equal rank and equal sizes where both are known (-1 = any)."""
    return len(have) == len(want) and all(h == w or h < 0 or w < 0 for h, w in zip(have, want, strict=True))
