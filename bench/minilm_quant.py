"""MiniLM (all-MiniLM-L6-v2) quantization variants against fp32, side by side, on one thread.

    python specs/minilm/make_model.py      # once: writes specs/minilm/minilm.onnx
    python bench/minilm_quant.py [--rounds 5] [--seconds 1.0] [--only NAME ...] [--json FILE]

Every variant is made from specs/minilm/minilm.onnx (the unfused TorchScript
export): fp32 and fp32 fused (infc's fuse_transformer); dynamic int8 (S8
weights) per tensor and per channel, each unfused and fused; onnxruntime's
blockwise weight-only `MatMulNBits` (8 and 4 bits, blocks of 32 and 128,
symmetric, accuracy_level 4: int8 compute); FFN-only dynamic int8 (only the
two feed-forward MatMuls of each layer); static QDQ int8 of the dense MatMuls
(S8S8, per-channel weights, minmax on calib.npz; the attention's own two
activation x activation MatMuls stay fp32, as dynamic int8 leaves them) plain and after SmoothQuant-style scaling
(alpha 0.5: each MatMul's input channel j divided by
s_j = max|X_j|^a / max|W_j|^(1-a), its weight row multiplied by s_j, X's
maxima from the calibration sentences); and padding removal at the batch level
(each batch padded to its longest sentence, which the spec's `tokenize` step
does by default, against padding to 128).

Speed: each variant is timed against fp32 in the same round, fp32 first then
the variant, for `--seconds` each, one intra-op thread; the ratio is
fp32 time / variant time, and the median over `--rounds` rounds is reported.
Shapes: batch 1 at 128 tokens (a request padded to max_length) and batch 8 x 64
tokens (the validation sentences truncated to 64); the padding rows use 8 real
validation sentences per batch. Accuracy over specs/minilm/val.npz (128 tokens)
with infc's own metrics on the sentence embeddings (mean pooling under the
mask, L2 normalization): cosine mean and min, recall@10, nn1
(neighbour_agreement, k 1) and spearman. Not a test: numbers move with the
machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from _machine import cpu_model
from onnx import numpy_helper
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_dynamic,
    quantize_static,
)
from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

from infc.accuracy import cosine, cosine_min, neighbour_agreement, recall_at_k, spearman
from infc.kernels.reference import run_reference
from infc.passes import PassContext, run_passes
from infc.passes.convert_fp16 import toposort

ROOT = Path(__file__).resolve().parents[1]
HERE = ROOT / "specs" / "minilm"
MODEL, VAL, CALIB, TOKENIZER = HERE / "minilm.onnx", HERE / "val.npz", HERE / "calib.npz", HERE / "tokenizer.json"
INPUTS = ("input_ids", "attention_mask", "token_type_ids")
OUTPUT = "last_hidden_state"
Feeds = dict[str, np.ndarray]


# ---------------------------------------------------------------- data


def tokens(path: Path, max_length: int, padding: str = "max_length") -> Feeds:
    """The sentences of an .npz tokenized as the spec's `tokenize` step does."""
    with np.load(path) as data:
        texts = data["text"].astype(object)
    step = [("tokenize", {"tokenizer": str(TOKENIZER), "max_length": max_length, "padding": padding})]
    return {k: v.astype(np.int64) for k, v in run_reference(step, {"text": texts}).items() if k in INPUTS}


def rows(feeds: Feeds, start: int, stop: int, longest: bool = False) -> Feeds:
    """Rows start:stop; `longest`: cut to the longest sentence among them (padding removed)."""
    part = {k: v[start:stop] for k, v in feeds.items()}
    if longest:
        width = int(part["attention_mask"].sum(1).max())
        part = {k: v[:, :width] for k, v in part.items()}
    return part


# ---------------------------------------------------------------- variants


def _dynamic(per_channel: bool, nodes: list[str] | None = None) -> Callable[[onnx.ModelProto, Path], onnx.ModelProto]:
    def make(model: onnx.ModelProto, tmp: Path) -> onnx.ModelProto:
        src, out = tmp / "dyn.in.onnx", tmp / "dyn.onnx"
        onnx.save(model, str(src))
        quantize_dynamic(str(src), str(out), per_channel=per_channel, weight_type=QuantType.QInt8,
                         nodes_to_quantize=nodes or [],
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
        return onnx.load(str(out))
    return make


def _nbits(bits: int, block: int) -> Callable[[onnx.ModelProto, Path], onnx.ModelProto]:
    def make(model: onnx.ModelProto, tmp: Path) -> onnx.ModelProto:
        quantizer = MatMulNBitsQuantizer(model, bits=bits, block_size=block, is_symmetric=True, accuracy_level=4)
        quantizer.process()
        return quantizer.model.model
    return make


def _fused(model: onnx.ModelProto, tmp: Path) -> onnx.ModelProto:
    return run_passes(model, [("fuse_transformer", {})], PassContext(workdir=tmp))[0]


def _weight_matmuls(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """MatMul nodes whose second input is a 2-d initializer (the dense layers)."""
    weights = {i.name for i in model.graph.initializer if len(i.dims) == 2}
    return [n for n in model.graph.node if n.op_type == "MatMul" and n.input[1] in weights]


def ffn_nodes(model: onnx.ModelProto) -> list[str]:
    """The feed-forward MatMuls of every layer (`intermediate/dense`, then `output/dense` not under attention)."""
    return [n.name for n in _weight_matmuls(model)
            if "/intermediate/" in n.name or ("/output/dense" in n.name and "/attention/" not in n.name)]


class _Reader(CalibrationDataReader):
    def __init__(self, feeds: Feeds, batch: int = 16) -> None:
        self.batches = iter([rows(feeds, i, i + batch) for i in range(0, len(feeds["input_ids"]), batch)])

    def get_next(self) -> Feeds | None:
        return next(self.batches, None)


def _static(calib: Feeds) -> Callable[[onnx.ModelProto, Path], onnx.ModelProto]:
    def make(model: onnx.ModelProto, tmp: Path) -> onnx.ModelProto:
        src, out = tmp / "static.in.onnx", tmp / "static.onnx"
        onnx.save(model, str(src))
        quantize_static(str(src), str(out), _Reader(calib), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax,
                        nodes_to_quantize=[n.name for n in _weight_matmuls(model)],
                        extra_options={"ActivationSymmetric": True})
        return onnx.load(str(out))
    return make


def smooth(model: onnx.ModelProto, calib: Feeds, alpha: float = 0.5) -> onnx.ModelProto:
    """SmoothQuant-style scaling: for each input X shared by dense MatMuls, per input channel j,
    s_j = max|X_j|^alpha / max_k|W_jk|^(1-alpha) over those MatMuls' weights; X is divided by s
    (a Mul node) and each weight's row j multiplied by s_j. The fp32 result is unchanged."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    dense = _weight_matmuls(out)
    inputs = sorted({n.input[0] for n in dense})
    # the activations' per-channel maxima over the calibration sentences (padding included, as served)
    probe = onnx.ModelProto()
    probe.CopyFrom(out)
    probe.graph.output.extend([onnx.helper.make_tensor_value_info(x, onnx.TensorProto.FLOAT, None) for x in inputs])
    sess = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    peak: dict[str, np.ndarray] = {}
    for start in range(0, len(calib["input_ids"]), 16):
        values = sess.run(inputs, rows(calib, start, start + 16))
        for name, v in zip(inputs, values, strict=True):
            m = np.abs(v.reshape(-1, v.shape[-1])).max(0)
            peak[name] = np.maximum(peak[name], m) if name in peak else m
    weights = {i.name: i for i in out.graph.initializer}
    for x in inputs:
        users = [n for n in dense if n.input[0] == x]
        w = [numpy_helper.to_array(weights[n.input[1]]) for n in users]
        w_peak = np.max([np.abs(a).max(1) for a in w], axis=0)
        s = (np.maximum(peak[x], 1e-5) ** alpha / np.maximum(w_peak, 1e-5) ** (1 - alpha)).astype(np.float32)
        for node, a in zip(users, w, strict=True):
            weights[node.input[1]].CopyFrom(numpy_helper.from_array((a * s[:, None]).astype(np.float32),
                                                                    node.input[1]))
        scale, scaled = f"{x}/smooth_inv", f"{x}/smoothed"
        out.graph.initializer.append(numpy_helper.from_array((1.0 / s).astype(np.float32), scale))
        for node in users:
            node.input[0] = scaled
        out.graph.node.append(onnx.helper.make_node("Mul", [x, scale], [scaled], name=f"{x}/smooth"))
    toposort(out.graph)  # the appended Mul nodes before their users
    return out


def variants(calib: Feeds) -> dict[str, Callable[[onnx.ModelProto, Path], onnx.ModelProto]]:
    """Name -> how to make it from the fp32 model (in a scratch folder)."""
    def then(first: Callable[[onnx.ModelProto, Path], onnx.ModelProto],
             second: Callable[[onnx.ModelProto, Path], onnx.ModelProto]) -> Callable[..., onnx.ModelProto]:
        return lambda model, tmp: second(first(model, tmp), tmp)

    return {
        "fp32 fused": _fused,
        "dynamic per-tensor, unfused": _dynamic(False),
        "dynamic per-tensor, fused": then(_fused, _dynamic(False)),
        "dynamic per-channel, unfused": _dynamic(True),
        "dynamic per-channel, fused": then(_fused, _dynamic(True)),
        "MatMulNBits 8 bit, block 32": _nbits(8, 32),
        "MatMulNBits 8 bit, block 128": _nbits(8, 128),
        "MatMulNBits 4 bit, block 32": _nbits(4, 32),
        "MatMulNBits 4 bit, block 128": _nbits(4, 128),
        "FFN-only dynamic per-channel": lambda model, tmp: _dynamic(True, ffn_nodes(model))(model, tmp),
        "static QDQ S8S8 per-channel": _static(calib),
        "SmoothQuant a=0.5 + static QDQ": lambda model, tmp: _static(calib)(smooth(model, calib), tmp),
    }


# ---------------------------------------------------------------- measuring


def session(data: bytes) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads, opts.inter_op_num_threads = 1, 1
    return ort.InferenceSession(data, sess_options=opts, providers=["CPUExecutionProvider"])


def embed(sess: ort.InferenceSession, feeds: Feeds, batch: int = 16) -> np.ndarray:
    """Sentence embeddings: mean over real tokens, L2-normalized (the spec's post-processing)."""
    out = []
    for start in range(0, len(feeds["input_ids"]), batch):
        part = rows(feeds, start, start + batch)
        hidden = sess.run([OUTPUT], part)[0]
        mask = part["attention_mask"][..., None].astype(np.float32)
        pooled = (hidden * mask).sum(1) / np.maximum(mask.sum(1), 1e-9)
        out.append(pooled / np.linalg.norm(pooled, axis=1, keepdims=True))
    return np.concatenate(out)


def per_call_ms(sess: ort.InferenceSession, batches: list[Feeds], seconds: float) -> float:
    """Mean milliseconds per batch over about `seconds`, cycling through `batches`."""
    calls, start = 0, time.perf_counter()
    while True:
        sess.run([OUTPUT], batches[calls % len(batches)])
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds and calls >= len(batches):
            return elapsed * 1e3 / calls


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds (default 5)")
    parser.add_argument("--seconds", type=float, default=1.0, help="seconds per timing, each side (default 1)")
    parser.add_argument("--only", nargs="*", help="measure only these variants (default: all)")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args(argv)
    if not MODEL.exists():
        print(f"{MODEL} is missing: run `python specs/minilm/make_model.py` first", file=sys.stderr)
        return 2
    source = onnx.load(str(MODEL))
    val, calib = tokens(VAL, 128), tokens(CALIB, 128)
    shapes: dict[str, list[Feeds]] = {
        "b1x128": [rows(val, i, i + 1) for i in range(8)],
        "b8x64": [rows(short, i, i + 8) for short in [tokens(VAL, 64)] for i in range(0, 64, 8)],
    }
    real = [rows(val, i, i + 8) for i in range(0, 64, 8)]  # 8 real sentences, padded to 128
    trimmed = [rows(val, i, i + 8, longest=True) for i in range(0, 64, 8)]  # ... to their longest

    # 1. make every variant
    makers = variants(calib)
    chosen = [n for n in makers if not args.only or n in args.only]
    models: dict[str, bytes] = {"fp32": source.SerializeToString()}
    with tempfile.TemporaryDirectory(prefix="minilm-quant-") as tmp:
        for name in chosen:
            print(f"making {name}", file=sys.stderr)
            fresh = onnx.ModelProto()  # MatMulNBitsQuantizer changes the model it is given
            fresh.CopyFrom(source)
            models[name] = makers[name](fresh, Path(tmp)).SerializeToString()

    # 2. accuracy against fp32 over the validation sentences
    sessions = {name: session(data) for name, data in models.items()}
    reference = embed(sessions["fp32"], val)
    results: dict[str, dict[str, Any]] = {}
    for name, sess in sessions.items():
        emb = embed(sess, val)
        results[name] = {
            "size_mb": len(models[name]) / 1e6, "cos_mean": cosine(reference, emb),
            "cos_min": cosine_min(reference, emb),
            "recall10": recall_at_k(reference, emb, k=10), "nn1": neighbour_agreement(reference, emb),
            "spearman": spearman(reference, emb), "ratios": {s: [] for s in [*shapes, "b8 real, padded to longest"]}}

    # 3. speed: each variant against fp32 in the same round
    base = sessions["fp32"]
    for sess in sessions.values():
        for batches in shapes.values():
            per_call_ms(sess, batches, 0.0)  # warm-up
    for r in range(args.rounds):
        print(f"round {r + 1}/{args.rounds}", file=sys.stderr)
        for name, sess in sessions.items():
            for shape, batches in shapes.items():
                if name != "fp32":
                    results[name]["ratios"][shape].append(
                        per_call_ms(base, batches, args.seconds) / per_call_ms(sess, batches, args.seconds))
            # padding removal: the same 8 real sentences padded to 128 under fp32, to their longest here
            results[name]["ratios"]["b8 real, padded to longest"].append(
                per_call_ms(base, real, args.seconds) / per_call_ms(sess, trimmed, args.seconds))

    lengths = val["attention_mask"][:64].sum(1)
    print(f"MiniLM-L6 (specs/minilm), onnxruntime {ort.__version__}, 1 intra-op thread, {args.rounds} rounds of "
          f"{args.seconds:g} s a side, {len(val['input_ids'])} validation sentences (128 tokens); {cpu_model()}; "
          f"timed sentences: {lengths.min()}-{lengths.max()} tokens, median {np.median(lengths):g}")
    print("| variant | size MB | b1x128 vs fp32 | b8x64 vs fp32 | b8 real, padded to longest, vs fp32 at 128 "
          "| cosine mean | cosine min | recall@10 | nn1 | spearman |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, r in results.items():
        speed = {s: statistics.median(v) if v else 1.0 for s, v in r["ratios"].items()}
        r["speed"] = speed
        print(f"| {name} | {r['size_mb']:.1f} | " + " | ".join(f"x{v:.2f}" for v in speed.values())
              + f" | {r['cos_mean']:.4f} | {r['cos_min']:.4f} | {r['recall10']:.3f} | {r['nn1']:.3f} "
              f"| {r['spearman']:.4f} |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
