"""Each pass: outputs under onnxruntime stay within tolerance of fp32, the checker passes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from infc.errors import PassError
from infc.passes import PASSES, PassContext, op_counts, run_passes, summary
from infc.passes.base import register

ROOT = Path(__file__).resolve().parents[3]
DIGITS = ROOT / "specs" / "digits" / "digits.onnx"


def _inputs() -> np.ndarray:
    with np.load(ROOT / "specs" / "digits" / "val.npz") as data:
        images = data["image"][:128]
    return ((images.astype(np.float32) / 255.0 - 0.5) / 0.5)[:, None]


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"image": x})[0]


def _ctx(tmp_path: Path) -> PassContext:
    x = _inputs()

    def feeds() -> Iterator[dict[str, Any]]:
        for i in range(0, len(x), 16):
            yield {"image": x[i:i + 16]}

    return PassContext(workdir=tmp_path, calibration=feeds)


@pytest.fixture(scope="module")
def digits() -> onnx.ModelProto:
    return onnx.load(str(DIGITS))


def test_registry_lists_every_pass() -> None:
    assert {"normalize", "fuse_graph", "quantize_dynamic", "quantize_static"} <= set(PASSES)


def test_fuse_graph_keeps_outputs_and_fuses_matmul_add(digits: onnx.ModelProto, tmp_path: Path) -> None:
    model, records = run_passes(digits, [("fuse_graph", {"level": "extended"})], _ctx(tmp_path))
    onnx.checker.check_model(model)
    x = _inputs()
    np.testing.assert_allclose(_run(model, x), _run(digits, x), rtol=1e-5, atol=1e-5)
    fuse = records[-1]
    assert fuse["ops_before"].get("MatMul", 0) == 3 and fuse["ops_after"].get("MatMul", 0) == 0
    assert len(model.graph.node) < len(digits.graph.node)


def test_normalize_folds_upgrades_and_keeps_outputs(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    w, b = rng.normal(size=(4, 3)).astype(np.float32), rng.normal(size=3).astype(np.float32)
    nodes = [helper.make_node("Identity", ["w"], ["w2"]),  # constant subgraph: folded away
             helper.make_node("MatMul", ["x", "w2"], ["m"]), helper.make_node("Add", ["m", "b"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
                              [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    old = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)])
    old.ir_version = 7
    model, records = run_passes(old, [("normalize", {"min_opset": 13})], _ctx(tmp_path))
    onnx.checker.check_model(model, full_check=True)
    assert records[0]["opset"] == 11 and records[0]["opset_after"] == 13
    assert records[0]["ops_after"] == {"Add": 1, "MatMul": 1}  # Identity folded away
    x = rng.normal(size=(5, 4)).astype(np.float32)
    got = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, x @ w + b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("name", "params"), [("quantize_dynamic", {}), ("quantize_static", {"method": "minmax"})])
def test_int8_passes_quantize_and_stay_close(digits: onnx.ModelProto, tmp_path: Path, name: str,
                                             params: dict[str, Any]) -> None:
    model, records = run_passes(digits, [("normalize", {}), (name, params)], _ctx(tmp_path))
    onnx.checker.check_model(model)
    assert records[-1]["quantized_ops"], "the pass must quantize something"
    assert records[-1]["modified"] is True
    x = _inputs()
    ref, got = _run(digits, x), _run(model, x)
    # tolerance: int8 logits move, decisions must not (>= 97% top-1 agreement on real digits)
    assert np.mean(ref.argmax(1) == got.argmax(1)) >= 0.97
    assert np.abs(ref - got).max() < 0.15 * np.abs(ref).max()


def _ml_model() -> onnx.ModelProto:
    node = helper.make_node("Normalizer", ["x"], ["y"], domain="ai.onnx.ml", norm="L2")
    graph = helper.make_graph([node], "ml", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 4])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 3)])


@pytest.mark.parametrize("name", ["quantize_dynamic", "quantize_static"])
def test_quantize_passes_ml_models_through_with_a_note(tmp_path: Path, name: str) -> None:
    tree = onnx.load(str(ROOT / "tests" / "models" / "tree.onnx"))
    for model in (_ml_model(), tree):
        out, records = run_passes(model, [("normalize", {}), (name, {})], _ctx(tmp_path))
        assert records[-1]["modified"] is False
        assert "ai.onnx.ml operators" in records[-1]["skipped"]
        assert op_counts(out) == op_counts(model) or records[0]["modified"]


def test_failure_names_the_pass_and_what_ran_before(tmp_path: Path) -> None:
    broken = helper.make_model(helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
        [numpy_helper.from_array(np.zeros(2, np.float32), "x")]), opset_imports=[helper.make_opsetid("", 17)])
    broken.graph.node.append(helper.make_node("NoSuchOp", ["y"], ["z"]))
    with pytest.raises(PassError) as info:
        run_passes(broken, [("fuse_graph", {"level": "basic"})], _ctx(tmp_path))
    assert info.value.pass_name == "fuse_graph" and "after: none" in str(info.value)


def test_op_counts_qualify_contrib_domains() -> None:
    node = helper.make_node("FusedMatMul", ["a", "b"], ["c"], domain="com.microsoft")
    graph = helper.make_graph([node], "g", [], [])
    assert op_counts(helper.make_model(graph)) == {"com.microsoft.FusedMatMul": 1}


def test_fp16_keeps_overflowing_nodes_fp32(tmp_path: Path) -> None:
    # y = (x * 1000) * 1000 overflows fp16 in its second Mul for |x| >= 0.07; the first stays in range
    nodes = [helper.make_node("Mul", ["x", "k"], ["a"], name="small"),
             helper.make_node("Mul", ["a", "k"], ["y"], name="huge")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
                              [numpy_helper.from_array(np.array(1000.0, np.float32), "k")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    x = np.linspace(-1, 1, 32, dtype=np.float32).reshape(8, 4)
    ctx = PassContext(workdir=tmp_path, calibration=lambda: iter([{"x": x}]))
    out, records = run_passes(model, [("convert_fp16", {})], ctx)
    onnx.checker.check_model(out)
    assert list(records[0]["kept_fp32"]) == ["huge"]
    got = ort.InferenceSession(out.SerializeToString()).run(None, {"x": x})[0]
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, x * 1e6, rtol=2e-3)


@pytest.mark.parametrize(("record", "line"), [
    ({"pass": "normalize", "modified": True, "level": "basic (constant folding)", "opset": 13,
      "ops_before": {"Add": 2, "MatMul": 1}, "ops_after": {"Add": 1, "Gemm": 1}},
     "level basic (constant folding): removed Add, MatMul; added Gemm"),
    ({"pass": "fuse_graph", "modified": False, "level": "all", "ops_before": {"Add": 1}, "ops_after": {"Add": 1}},
     "level all: no change"),
    ({"pass": "fuse_transformer", "modified": False, "reason": "not a transformer", "fused": {}},
     "no change: not a transformer"),
    ({"pass": "fuse_attention", "modified": True, "fused": {"sdpa": 2, "gelu": 1}},
     "fused: sdpa x2, gelu x1"),
    ({"pass": "quantize_dynamic", "modified": False, "skipped": "nothing to quantize", "quantized_ops": {}},
     "skipped: nothing to quantize"),
    ({"pass": "quantize_static", "modified": True, "quantized_ops": {"QLinearConv": 2}, "excluded": ["Conv_3"]},
     "quantized: QLinearConv x2; kept in fp32: Conv_3"),
    ({"pass": "convert_fp16", "modified": True, "fp16_initializers": 7}, "7 fp16 initializers, I/O kept fp32"),
])
def test_each_pass_summarises_its_own_record(record: dict[str, Any], line: str) -> None:
    assert summary(record) == line


def test_a_pass_without_a_summary_is_refused_when_registered() -> None:
    class NoSummaryPass:
        name = "no_summary"

        def call(self, model: onnx.ModelProto, ctx: PassContext) -> Any:
            return model

    with pytest.raises(ValueError, match="'no_summary' has no summary"):
        register(NoSummaryPass)  # type: ignore[type-var]
    assert "no_summary" not in PASSES
