"""fuse_transformer on the committed tiny BERT: it fuses, keeps the outputs, stays quantizable; a CNN is left alone.

Tolerances: fusion reorders float arithmetic only, so fused and fp32 hidden
states agree to 1e-4 absolute (measured ~2e-6); dynamic int8 after fusion keeps
every token's hidden state at cosine >= 0.995 to fp32 and the mean >= 0.999
(measured 0.99994 min on this random model; real weights lose more, see bench/).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from infc.passes import PASSES, PassContext, run_passes
from infc.passes._transformer_graph import detect_transformer

ROOT = Path(__file__).resolve().parents[3]
TINY_BERT = ROOT / "tests" / "models" / "tiny_bert.onnx"
DIGITS = ROOT / "specs" / "digits" / "digits.onnx"
VOCAB = 1000


@pytest.fixture(scope="module")
def bert() -> onnx.ModelProto:
    return onnx.load(str(TINY_BERT))


def _tokens(batch: int, seq: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Token ids like a tokenizer's: [CLS] ... [SEP], then padding (id 0, mask 0) of random length per row."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(3, seq + 1, size=batch)
    lengths[0] = seq  # one full row
    mask = (np.arange(seq)[None, :] < lengths[:, None]).astype(np.int64)
    ids = rng.integers(5, VOCAB, size=(batch, seq)) * mask
    ids[:, 0] = 1
    ids[np.arange(batch), lengths - 1] = 2
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}


def _run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> np.ndarray:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(["last_hidden_state"], feeds)[0]


def _fuse(model: onnx.ModelProto, tmp_path: Path, **params: object) -> tuple[onnx.ModelProto, dict]:
    fused, records = run_passes(model, [("fuse_transformer", params)], PassContext(workdir=tmp_path))
    return fused, records[0]


def test_registered() -> None:
    assert "fuse_transformer" in PASSES


def test_detects_heads_and_hidden_size_from_the_graph(bert: onnx.ModelProto) -> None:
    shape = detect_transformer(bert)
    assert (shape.model_type, shape.num_heads, shape.hidden_size, shape.source) == ("bert", 4, 64, "graph")


def test_fuses_the_tiny_bert(bert: onnx.ModelProto, tmp_path: Path) -> None:
    before = bert.SerializeToString()
    fused, record = _fuse(bert, tmp_path)
    onnx.checker.check_model(fused)
    assert record["modified"] is True and record["detected_from"] == "graph"
    assert record["fused"] == {"Attention": 2, "BiasGelu": 2, "EmbedLayerNormalization": 1,
                               "SkipLayerNormalization": 4}
    assert record["ops_after"]["com.microsoft.Attention"] == 2 and "Softmax" not in record["ops_after"]
    assert record["nodes_after"] < record["nodes_before"] / 5  # 232 -> 18
    assert record["notes"] == []
    assert bert.SerializeToString() == before, "a pass never mutates its input"


@pytest.mark.parametrize(("batch", "seq"), [(4, 32), (1, 7), (3, 128)])
def test_fused_outputs_match_fp32(bert: onnx.ModelProto, tmp_path: Path, batch: int, seq: int) -> None:
    fused, _ = _fuse(bert, tmp_path)
    feeds = _tokens(batch, seq, seed=seq)
    np.testing.assert_allclose(_run(fused, feeds), _run(bert, feeds), rtol=0, atol=1e-4)


def test_params_override_detection_and_disagreement_is_noted(bert: onnx.ModelProto, tmp_path: Path) -> None:
    _, record = _fuse(bert, tmp_path, num_heads=4, hidden_size=64, opt_level=0)
    assert record["detected_from"] == "params" and record["fused"]["Attention"] == 2
    _, wrong = _fuse(bert, tmp_path, num_heads=8, hidden_size=64)
    assert any("the graph says 4 heads" in note for note in wrong["notes"])


def test_dynamic_int8_after_fusion_stays_close(bert: onnx.ModelProto, tmp_path: Path) -> None:
    steps = [("fuse_transformer", {}), ("quantize_dynamic", {})]
    quantized, records = run_passes(bert, steps, PassContext(workdir=tmp_path))
    onnx.checker.check_model(quantized)
    ops = records[-1]["ops_after"]
    assert ops.get("com.microsoft.QAttention") == 2 and ops.get("MatMulInteger", 0) > 0
    feeds = _tokens(8, 64)
    ref, got = _run(bert, feeds), _run(quantized, feeds)
    keep = feeds["attention_mask"].astype(bool)  # tokens that are not padding
    ref, got = ref[keep], got[keep]
    cosine = np.sum(ref * got, axis=-1) / (np.linalg.norm(ref, axis=-1) * np.linalg.norm(got, axis=-1))
    assert cosine.mean() >= 0.999 and cosine.min() >= 0.995, (cosine.mean(), cosine.min())


def test_not_a_transformer_is_left_alone_with_a_reason(tmp_path: Path) -> None:
    digits = onnx.load(str(DIGITS))
    model, record = _fuse(digits, tmp_path)
    assert record["modified"] is False and model is digits
    assert record["reason"] == "not a transformer: the graph has no attention (no Softmax node)"


def test_softmax_without_a_transformer_around_it_fuses_nothing(tmp_path: Path) -> None:
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((8, 4)).astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["logits"]), helper.make_node("Softmax", ["logits"], ["y"])],
        "classifier", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    result, record = _fuse(model, tmp_path)
    assert record["modified"] is False and result is model
    assert record["reason"].startswith("onnxruntime.transformers found nothing to fuse")


@pytest.mark.parametrize(("params", "message"), [
    ({"model_type": "lstm"}, "model_type must be one of"),
    ({"opt_level": 2}, "opt_level must be 0 or 1"),
    ({"num_heads": 5, "hidden_size": 64}, "must be a multiple of num_heads"),
])
def test_bad_params_are_rejected_when_the_pass_is_made(params: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PASSES["fuse_transformer"](**params)
