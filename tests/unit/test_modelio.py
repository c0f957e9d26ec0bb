"""infc.modelio: one reader of an ONNX model's signature, and why an input cannot be a request tensor."""

from __future__ import annotations

import onnx
from onnx import TensorProto, helper

from infc.modelio import read_signature
from infc.spec.schema import DTYPES
from infc_runtime.types import TensorSpec


def _model(inputs: list[onnx.ValueInfoProto], weights: tuple[str, ...] = ()) -> onnx.ModelProto:
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])
    inits = [helper.make_tensor(w, TensorProto.FLOAT, [1], [0.0]) for w in weights]
    node = helper.make_node("Identity", [inputs[0].name], ["y"])
    return helper.make_model(helper.make_graph([node], "g", [*inputs, *(
        helper.make_tensor_value_info(w, TensorProto.FLOAT, [1]) for w in weights)], [out], inits))


def test_inputs_and_outputs_drop_the_batch_dimension_and_initializers() -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, None])
    ids = helper.make_tensor_value_info("ids", TensorProto.INT64, [1, 4])
    sig = read_signature(_model([x, ids], weights=("w",)), DTYPES)
    assert sig.inputs == (TensorSpec("x", "float32", (3, -1)), TensorSpec("ids", "int64", (4,)))
    assert sig.outputs == (TensorSpec("y", "float32", (3,)),)
    assert sig.problems == {} and sig.request_inputs == list(sig.inputs)


def test_an_input_a_request_cannot_carry_is_a_problem_by_name() -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])
    scalar = helper.make_tensor_value_info("t", TensorProto.FLOAT, [])
    half = helper.make_tensor_value_info("b", TensorProto.BFLOAT16, ["N", 2])
    sig = read_signature(_model([x, scalar, half]), DTYPES)
    assert dict(sig.problems) == {
        "t": "model input 't' has no batch dimension (unknown or zero rank); list the request tensors under `inputs`",
        "b": "model input 'b' has element type BFLOAT16, which a request cannot carry",
    }
    assert [t.name for t in sig.inputs] == ["x", "t", "b"], "the model still takes them (the pipeline check)"
    assert sig.request_inputs == [TensorSpec("x", "float32", (3,))]
