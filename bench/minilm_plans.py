"""MiniLM (all-MiniLM-L6-v2) plans side by side: fp32, transformer-fused fp32, dynamic int8 with and without fusion.

    python specs/minilm/make_model.py      # once: writes specs/minilm/minilm.onnx
    python bench/minilm_plans.py [--rounds 5] [--threads 2] [--json FILE]

Each plan is made with infc's own passes, then measured in one process, the
plans interleaved round by round (so a change in the machine's load hits all
of them alike): session creation time, p50 latency at sequence length 128 for
batch 1 and batch 32, throughput at batch 32, model size, and accuracy over
specs/minilm/val.npz against fp32: cosine of the sentence embeddings (mean
pooling under the attention mask, then L2 normalization, as the spec's
post-processing does; mean and min) and nearest-neighbour agreement (does each
sentence's nearest other sentence stay the same). Not a test: numbers move
with the machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

from infc.kernels.reference import run_reference
from infc.passes import PassContext, run_passes
from infc.spec import load_spec

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "specs" / "minilm" / "minilm.onnx"
VAL = ROOT / "specs" / "minilm" / "val.npz"
SPEC = ROOT / "specs" / "minilm" / "minilm.yaml"
INPUTS = ("input_ids", "attention_mask", "token_type_ids")
PLANS: dict[str, list[tuple[str, dict[str, Any]]]] = {
    "fp32": [],
    "fp32 fused": [("fuse_transformer", {})],
    "int8 dynamic": [("quantize_dynamic", {})],
    "int8 dynamic, fused": [("fuse_transformer", {}), ("quantize_dynamic", {})],
}


def _session(data: bytes, threads: int) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    return ort.InferenceSession(data, sess_options=opts, providers=["CPUExecutionProvider"])


def _embed(sess: ort.InferenceSession, feeds: dict[str, np.ndarray], batch: int = 32) -> np.ndarray:
    """Sentence embeddings: mean over real tokens, L2-normalized (the spec's post-processing)."""
    out = []
    for start in range(0, len(feeds["input_ids"]), batch):
        part = {k: v[start:start + batch] for k, v in feeds.items()}
        hidden = sess.run(["last_hidden_state"], part)[0]
        mask = part["attention_mask"][..., None].astype(np.float32)
        pooled = (hidden * mask).sum(1) / np.maximum(mask.sum(1), 1e-9)
        out.append(pooled / np.linalg.norm(pooled, axis=1, keepdims=True))
    return np.concatenate(out)


def _neighbours(emb: np.ndarray) -> np.ndarray:
    sim = emb @ emb.T
    np.fill_diagonal(sim, -np.inf)
    return np.asarray(sim.argmax(1))


def _time_ms(sess: ort.InferenceSession, feeds: dict[str, np.ndarray], iterations: int) -> list[float]:
    times = []
    for _ in range(iterations):
        start = time.perf_counter()
        sess.run(["last_hidden_state"], feeds)
        times.append((time.perf_counter() - start) * 1e3)
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds (default 5)")
    parser.add_argument("--threads", type=int, default=2, help="ORT intra-op threads (default 2)")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args(argv)
    if not MODEL.exists():
        print(f"{MODEL} is missing: run `python specs/minilm/make_model.py` first", file=sys.stderr)
        return 2
    source = onnx.load(str(MODEL))
    with np.load(VAL) as data:
        texts = data["text"].astype(object)
    # token ids as the bundle makes them: the spec's own pre-processing (its tokenize step)
    steps = [(s.name, dict(s.params)) for s in load_spec(SPEC).spec.preprocess]
    val = {k: v.astype(np.int64) for k, v in run_reference(steps, {"text": texts}).items() if k in INPUTS}
    seq = val["input_ids"].shape[1]
    one = {k: v[:1] for k, v in val.items()}
    full = {k: v[:32] for k, v in val.items()}

    # 1. make every plan with infc's passes
    models: dict[str, bytes] = {}
    records: dict[str, list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="minilm-bench-") as tmp:
        for name, steps in PLANS.items():
            model, records[name] = run_passes(source, steps, PassContext(workdir=Path(tmp)))
            models[name] = model.SerializeToString()

    # 2. accuracy against fp32 over the validation sentences
    sessions = {name: _session(data, args.threads) for name, data in models.items()}
    reference = _embed(sessions["fp32"], val)
    ref_nn = _neighbours(reference)
    results: dict[str, dict[str, Any]] = {}
    for name, sess in sessions.items():
        emb = _embed(sess, val)
        cos = np.sum(emb * reference, axis=1)
        fused: dict[str, int] = next((r["fused"] for r in records[name] if r["pass"] == "fuse_transformer"), {})
        nodes = len(onnx.load_from_string(models[name]).graph.node)
        results[name] = {"size_mb": len(models[name]) / 1e6, "nodes": nodes,
                         "cos_mean": float(cos.mean()), "cos_min": float(cos.min()),
                         "nn_agreement": float(np.mean(_neighbours(emb) == ref_nn)), "fused": fused,
                         "create_s": [], "b1_ms": [], "b32_ms": []}

    # 3. timing, plans interleaved round by round
    for sess in sessions.values():  # warm-up
        _time_ms(sess, one, 3)
        _time_ms(sess, full, 1)
    for _ in range(args.rounds):
        for name, data in models.items():
            start = time.perf_counter()
            _session(data, args.threads)
            results[name]["create_s"].append(time.perf_counter() - start)
            results[name]["b1_ms"] += _time_ms(sessions[name], one, 20)
            results[name]["b32_ms"] += _time_ms(sessions[name], full, 2)

    base = results["fp32"]
    b1_base, b32_base = statistics.median(base["b1_ms"]), statistics.median(base["b32_ms"])
    print(f"MiniLM-L6 (specs/minilm), sequence length {seq}, {args.threads} threads, "
          f"{len(val['input_ids'])} validation sentences, onnxruntime {ort.__version__}, {args.rounds} rounds")
    print("| plan | nodes | size MB | session s | b1 p50 ms | b32 p50 ms | b32 seq/s | vs fp32 b1 | vs fp32 b32 "
          "| cos mean | cos min | NN agree |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, r in results.items():
        b1, b32 = statistics.median(r["b1_ms"]), statistics.median(r["b32_ms"])
        r.update(b1_p50_ms=b1, b32_p50_ms=b32, b32_per_s=32e3 / b32, create_s=statistics.median(r["create_s"]))
        print(f"| {name} | {r['nodes']} | {r['size_mb']:.1f} | {r['create_s']:.3f} | {b1:.2f} | {b32:.1f} | "
              f"{32e3 / b32:.0f} | x{b1_base / b1:.2f} | x{b32_base / b32:.2f} | {r['cos_mean']:.4f} | "
              f"{r['cos_min']:.4f} | {r['nn_agreement']:.3f} |")
    for name, r in results.items():
        if r["fused"]:
            print(f"{name}: fused {r['fused']}")
    if args.json:
        args.json.write_text(json.dumps({k: {kk: vv for kk, vv in v.items() if not isinstance(vv, list)}
                                         for k, v in results.items()}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
