"""The candidate search on real models: sensitivity exclusions, fp32 kept when int8 is not faster,
ai.onnx.ml models passed through, CUDA plans checked structurally."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from examples import ROOT, digits_copy

from infc.build import build
from infc.errors import BudgetError
from infc.plan import make_plan
from infc.search import MIN_SPEEDUP
from infc.spec import load_spec

MODELS = ROOT / "tests" / "models"


def test_sensitivity_exclusion_restores_a_missed_accuracy_budget(tmp_path: Path) -> None:
    # dynamic int8 of every MatMul moves a logit by ~0.17; keeping some layers fp32 brings it down. How far,
    # which layers and how many depends on the host's int8 kernels (AVX2, AVX-512, VNNI round differently):
    # the budget is set below what this host's dynamic int8 gives, and the behaviour is asserted, not one
    # host's exclusion list.
    probe = digits_copy(tmp_path, {"quantize: auto": "quantize: dynamic",
                             "accuracy: {metric: top1_agreement, min: 0.99}":
                             "accuracy: {metric: max_abs_error, max: 10}"})
    full_int8 = build(probe, tmp_path / "probe", iterations=20, latency_gate="off", lock="ignore").accuracy[0].value
    budget = round(0.7 * full_int8, 4)
    spec = digits_copy(tmp_path, {"quantize: auto": "quantize: dynamic",
                            "accuracy: {metric: top1_agreement, min: 0.99}":
                            f"accuracy: {{metric: max_abs_error, max: {budget}}}"})
    result = build(spec, tmp_path / "out", iterations=30, latency_gate="off", lock="ignore")
    names = [e.candidate.name for e in result.evaluations]
    assert names[0] == "dynamic" and not result.evaluations[0].accurate
    quantizable = [n.name for n in onnx.load(str(tmp_path / "digits.onnx")).graph.node if n.op_type == "MatMul"]
    quant = next(r for r in result.chosen.records if r["pass"] == "quantize_dynamic")
    excluded = quant["excluded"]
    assert 0 < len(excluded) < len(quantizable) and set(excluded) <= set(quantizable), excluded
    assert len(set(excluded)) == len(excluded)
    assert result.chosen.candidate.name == f"dynamic+fp32x{len(excluded)}"
    assert result.chosen.accurate
    assert result.accuracy[0].passed and result.accuracy[0].value <= budget
    manifest = json.loads((result.path / "manifest.json").read_text())
    assert [c["name"] for c in manifest["measurements"]["candidates"]] == names
    report = (result.path / "report.md").read_text()
    kept = [re.split(r"\s*[|;]", line.split("kept in fp32: ", 1)[1])[0].split(", ")
            for line in report.splitlines() if "kept in fp32: " in line]
    assert kept and all(nodes == excluded for nodes in kept), kept


def test_auto_keeps_fp32_unless_int8_is_clearly_faster(tmp_path: Path) -> None:
    spec = digits_copy(tmp_path, {}, model=MODELS / "digits_cnn.onnx")
    result = build(spec, tmp_path / "out", iterations=100, latency_gate="off", lock="ignore")
    by_name = {e.candidate.name: e for e in result.evaluations}
    assert {"fp32", "dynamic", "static"} <= set(by_name)
    assert "dynamic_unfused" not in by_name  # a CNN: the fusions it leaves out change nothing
    fp32 = by_name["fp32"]
    assert fp32.latency is not None
    chosen = result.chosen
    assert chosen.latency is not None and chosen.accurate
    if chosen is not fp32:  # only ever for a measured, clear win: by the rule's own percentile (p50), and
        # the figures it was chosen on (another percentile's ratio is timing noise, not the rule)
        assert fp32.latency.p50_ms / chosen.latency.p50_ms >= MIN_SPEEDUP
    for ev in result.evaluations:
        verdict = result.choice.verdict(ev)
        assert verdict, f"{ev.candidate.name} has no verdict"
        if ev is not chosen and ev.accurate and ev.latency and ev is not fp32:
            assert ("not faster than fp32" in verdict) or ("slower than the chosen" in verdict)
    report = (result.path / "report.md").read_text()
    assert "## Candidates" in report and all(f"| {n} |" in report for n in ("fp32", "dynamic", "static"))


def test_ml_domain_model_passes_through_with_a_note(tmp_path: Path) -> None:
    tree = MODELS / "tree.onnx"
    shutil.copy(tree, tmp_path / "tree.onnx")
    (tmp_path / "spec.yaml").write_text("name: tree\nversion: 0.1.0\nmodel: tree.onnx\ntarget: x86\n"
                                        "optimize: {quantize: dynamic}\n")
    result = build(tmp_path / "spec.yaml", tmp_path / "out", iterations=20, latency_gate="off", lock="ignore")
    quant = next(r for r in result.chosen.records if r["pass"] == "quantize_dynamic")
    assert quant["modified"] is False and "ai.onnx.ml operators (TreeEnsembleClassifier)" in quant["skipped"]
    assert "skipped: nothing to quantize" in (result.path / "report.md").read_text()
    shipped = onnx.load(str(result.path / "model.onnx"))
    assert any(n.op_type == "TreeEnsembleClassifier" for n in shipped.graph.node)


def test_top1_agreement_on_a_classifiers_label_output(tmp_path: Path) -> None:
    # skl2onnx puts `label` (int64, one per sample) first: top-1 agreement is label agreement there
    from sklearn.datasets import load_breast_cancer

    shutil.copy(MODELS / "tree.onnx", tmp_path / "tree.onnx")
    data = load_breast_cancer()
    np.savez(tmp_path / "val.npz", X=data.data[:200].astype(np.float32), labels=data.target[:200])
    (tmp_path / "spec.yaml").write_text("name: tree\nversion: 0.1.0\nmodel: tree.onnx\ntarget: x86\n"
                                        "budget:\n  accuracy:\n    - {metric: top1_agreement, min: 0.95}\n"
                                        "    - {metric: accuracy, min: 0.9}\n"
                                        "optimize: {validation: val.npz}\n")
    result = build(tmp_path / "spec.yaml", tmp_path / "out", iterations=20, latency_gate="off", lock="ignore")
    assert result.chosen.candidate.name == "fp32"
    top1, acc = result.accuracy
    assert (top1.metric, top1.value, top1.passed) == ("top1_agreement", 1.0, True)
    assert acc.metric == "accuracy" and acc.passed and acc.value >= 0.9


def test_cuda_fp16_plan_structure(tmp_path: Path) -> None:
    cuda = "target: {hardware: cuda, fp16: true}"
    spec = load_spec(digits_copy(tmp_path, {"target: {hardware: x86, isa: native}": cuda})).spec
    plan = make_plan(spec)
    assert [c.name for c in plan.candidates] == ["fp32", "fp16"]
    fp16 = dict(plan.candidates[1].passes)
    assert "convert_fp16" in fp16 and fp16["fuse_transformer"]["use_gpu"] is True
    assert plan.session["providers"][0] == "CUDAExecutionProvider"
    if not plan.host_matches_target:
        assert any("latency budget is not enforced" in n for n in plan.notes)


def test_cuda_fp16_build_keeps_io_fp32_and_is_checked_on_this_host(tmp_path: Path) -> None:
    spec = digits_copy(tmp_path, {"target: {hardware: x86, isa: native}": "target: {hardware: cuda, fp16: true}",
                                  "quantize: auto": "quantize: fp16",
                                  "latency_ms: {p95: 5, p99: 10}": "latency_ms: {p99: 0.000001}"})
    try:
        result = build(spec, tmp_path / "out", iterations=20, latency_gate="off", lock="ignore")
    except BudgetError as exc:  # only possible where a GPU runs the target (then latency is enforced)
        pytest.fail(f"fp16 build failed: {exc}")
    model = onnx.load(str(result.path / "model.onnx"))
    onnx.checker.check_model(model)
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in model.graph.initializer)
    assert result.accuracy[0].passed
    if not result.plan.host_matches_target:
        assert not result.latency.fails_build, "a latency budget is never failed on a host that cannot run the target"
        assert result.latency.state == "not measured on the target"
    assert "onnxruntime-gpu==" in (result.path / "requirements.txt").read_text()


def _token_data(path: Path, rows: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(4, 33, rows)
    mask = (np.arange(32)[None, :] < lengths[:, None]).astype(np.int64)
    ids = np.where(mask == 1, rng.integers(1, 1000, (rows, 32)), 0).astype(np.int64)
    np.savez(path, input_ids=ids, attention_mask=mask, token_type_ids=np.zeros_like(ids))


def test_transformer_gets_fused_and_an_int8_candidate_inside_the_budget(tmp_path: Path) -> None:
    shutil.copy(MODELS / "tiny_bert.onnx", tmp_path / "bert.onnx")
    _token_data(tmp_path / "calib.npz", 32, 0)
    _token_data(tmp_path / "val.npz", 64, 1)
    (tmp_path / "spec.yaml").write_text("""\
name: tiny-bert
version: 0.1.0
model: bert.onnx
target: {hardware: x86, isa: native}
inputs:
  - {name: input_ids, dtype: int64, shape: [32]}
  - {name: attention_mask, dtype: int64, shape: [32]}
  - {name: token_type_ids, dtype: int64, shape: [32]}
budget:
  accuracy: {metric: cosine, output: embedding, min: 0.98}
optimize: {quantize: auto, calibration: calib.npz, validation: val.npz}
postprocess:
  - mean_pool: {mask: attention_mask, output: embedding}
  - l2_normalize
""")
    result = build(tmp_path / "spec.yaml", tmp_path / "out", iterations=50, latency_gate="off", lock="ignore")
    by_name = {e.candidate.name: e for e in result.evaluations}
    fused = next(r for r in by_name["fp32"].records if r["pass"] == "fuse_transformer")
    assert fused["fused"].get("Attention") == 2 and fused["nodes_after"] < fused["nodes_before"] / 5
    dynamic = by_name["dynamic"]
    assert dynamic.accurate, result.choice.verdict(dynamic)  # int8 keeps the embedding within cosine 0.98
    quant = next(r for r in dynamic.records if r["pass"] == "quantize_dynamic")
    assert quant["quantized_ops"]
    # the same int8 before the fusions: MatMuls quantized, no Attention anywhere
    unfused = by_name["dynamic_unfused"]
    assert [r["pass"] for r in unfused.records] == ["normalize", "quantize_dynamic", "fuse_graph"]
    assert "com.microsoft.Attention" not in unfused.records[-1]["ops_after"]
    assert next(r for r in unfused.records if r["pass"] == "quantize_dynamic")["quantized_ops"].get("MatMulInteger")
    chosen, fp32 = result.chosen, by_name["fp32"]
    assert chosen.accurate and chosen.latency is not None and fp32.latency is not None
    if chosen is not fp32:
        assert fp32.latency.p50_ms / chosen.latency.p50_ms >= MIN_SPEEDUP
    elif dynamic.latency is not None:  # not faster in the first pass, or not when re-measured side by side
        verdict = result.choice.verdict(dynamic)
        assert (fp32.latency.p50_ms / dynamic.latency.p50_ms < MIN_SPEEDUP or "slower" in verdict
                or "not faster than fp32" in verdict)
