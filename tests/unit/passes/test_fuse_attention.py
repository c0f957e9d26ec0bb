"""fuse_attention on the dynamo (SDPA) export of the tiny BERT, which onnxruntime.transformers leaves unfused.

Tolerances as for fuse_transformer: fused hidden states within 1e-4 of fp32
(measured ~1e-6); dynamic int8 after both fusions keeps every real token's
hidden state at cosine >= 0.995 to fp32, mean >= 0.999.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from infc.passes import PASSES, PassContext, run_passes

ROOT = Path(__file__).resolve().parents[3]
MODELS = ROOT / "tests" / "models"
VOCAB = 1000


@pytest.fixture(scope="module")
def dynamo_bert() -> onnx.ModelProto:
    return onnx.load(str(MODELS / "tiny_bert_dynamo.onnx"))


def _tokens(batch: int, seq: int, seed: int = 0) -> dict[str, np.ndarray]:
    """[CLS] ids [SEP] then padding of random length per row (the first row full)."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(3, seq + 1, size=batch)
    lengths[0] = seq
    mask = (np.arange(seq)[None, :] < lengths[:, None]).astype(np.int64)
    ids = rng.integers(5, VOCAB, size=(batch, seq)) * mask
    ids[:, 0] = 1
    ids[np.arange(batch), lengths - 1] = 2
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}


def _run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> np.ndarray:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(["last_hidden_state"], feeds)[0]


def test_registered() -> None:
    assert "fuse_attention" in PASSES


def test_onnxruntime_transformers_leaves_the_sdpa_export_unfused(dynamo_bert: onnx.ModelProto,
                                                                  tmp_path: Path) -> None:
    """The gap this pass closes: fuse_transformer alone fuses norms and GELUs, not attention."""
    _, records = run_passes(dynamo_bert, [("fuse_transformer", {})], PassContext(workdir=tmp_path))
    assert "Attention" not in records[0]["fused"]
    assert records[0]["notes"] == ["attention not fused: 2 Softmax node(s) remain"]


def test_fuses_attention_after_fuse_transformer(dynamo_bert: onnx.ModelProto, tmp_path: Path) -> None:
    before = dynamo_bert.SerializeToString()
    steps = [("fuse_transformer", {}), ("fuse_attention", {})]
    fused, records = run_passes(dynamo_bert, steps, PassContext(workdir=tmp_path))
    onnx.checker.check_model(fused)
    record = records[-1]
    assert record["modified"] is True and record["attention_fused"] == 2
    assert record["ops_after"]["com.microsoft.Attention"] == 2 and "Softmax" not in record["ops_after"]
    assert record["nodes_after"] < record["nodes_before"] / 2  # 109 -> 45 (125 as exported)
    assert dynamo_bert.SerializeToString() == before, "a pass never mutates its input"


@pytest.mark.parametrize(("batch", "seq"), [(4, 32), (1, 7), (3, 128)])
def test_fused_outputs_match_fp32(dynamo_bert: onnx.ModelProto, tmp_path: Path, batch: int, seq: int) -> None:
    fused, _ = run_passes(dynamo_bert, [("fuse_transformer", {}), ("fuse_attention", {})],
                          PassContext(workdir=tmp_path))
    feeds = _tokens(batch, seq, seed=seq)
    np.testing.assert_allclose(_run(fused, feeds), _run(dynamo_bert, feeds), rtol=0, atol=1e-4)


def test_both_exports_agree_after_fusion(dynamo_bert: onnx.ModelProto, tmp_path: Path) -> None:
    """Same weights, two exporters, two fusers: the same hidden states."""
    torchscript = onnx.load(str(MODELS / "tiny_bert.onnx"))
    steps = [("fuse_transformer", {}), ("fuse_attention", {})]
    a, _ = run_passes(torchscript, steps, PassContext(workdir=tmp_path))
    b, _ = run_passes(dynamo_bert, steps, PassContext(workdir=tmp_path))
    feeds = _tokens(4, 48)
    keep = feeds["attention_mask"].astype(bool)
    np.testing.assert_allclose(_run(a, feeds)[keep], _run(b, feeds)[keep], rtol=0, atol=1e-4)


def test_dynamic_int8_after_fusion_stays_close(dynamo_bert: onnx.ModelProto, tmp_path: Path) -> None:
    steps = [("fuse_transformer", {}), ("fuse_attention", {}), ("quantize_dynamic", {})]
    quantized, records = run_passes(dynamo_bert, steps, PassContext(workdir=tmp_path))
    onnx.checker.check_model(quantized)
    ops = records[-1]["ops_after"]
    # the rewriter's Attention takes the mask as an additive bias, which onnxruntime's quantizer leaves in
    # fp32 (no QAttention); the six dense projections around it are quantized
    assert ops.get("MatMulInteger") == 6 and ops.get("com.microsoft.Attention") == 2
    feeds = _tokens(8, 64)
    keep = feeds["attention_mask"].astype(bool)
    ref, got = _run(dynamo_bert, feeds)[keep], _run(quantized, feeds)[keep]
    cosine = np.sum(ref * got, axis=-1) / (np.linalg.norm(ref, axis=-1) * np.linalg.norm(got, axis=-1))
    assert cosine.mean() >= 0.999 and cosine.min() >= 0.995, (cosine.mean(), cosine.min())


def test_nothing_to_do_on_a_fused_graph_or_a_cnn(tmp_path: Path) -> None:
    fused, _ = run_passes(onnx.load(str(MODELS / "tiny_bert.onnx")), [("fuse_transformer", {})],
                          PassContext(workdir=tmp_path))
    digits = onnx.load(str(ROOT / "specs" / "digits" / "digits.onnx"))
    for model in (fused, digits):
        result, records = run_passes(model, [("fuse_attention", {})], PassContext(workdir=tmp_path))
        assert result is model and records[0]["modified"] is False
        assert records[0]["reason"] == "no unfused attention: the graph has no Softmax node"
