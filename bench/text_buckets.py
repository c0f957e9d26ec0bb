"""Text batches padded to their own length vs to max_length: sentences/s on the tiny BERT (issue 10).

Builds the tiny BERT text bundle (tests/models) twice, `max_length: 128`: once with
`padding: max_length` (every row 128 tokens: the old behaviour) and once with the
default `padding: longest` (each batch padded to its longest request, rounded up
to 8; requests grouped by length bucket). Each is served in process by the real
`Batcher` under closed-loop load (CONCURRENCY clients, one sentence per request)
over a fixed mix of short sentences (6-34 tokens); a third configuration keeps
per-batch padding but turns the length buckets off. The runs are interleaved
(REPEATS rounds). Prints a markdown table: sentences/s, mean batch, p50/p99
request latency (medians over the rounds), and the worst cosine between each
sentence's embedding and its max_length embedding.

    python bench/text_buckets.py [--seconds 4] [--concurrency 64] [--repeats 3]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from infc.build import build
from infc_runtime.batching import Batcher
from infc_runtime.metrics import Metrics
from infc_runtime.pipeline import Pipeline

MODELS = Path(__file__).resolve().parents[1] / "tests" / "models"
SENTENCES = [
    "Return the path.", "The file is open.", "A new list object is returned.", "Read the value of the name.",
    "Close the file when you are done with it.", "The name of the value is not in the list.",
    "Return a new list of the names in the path, in the order they were found.",
    "If the file does not exist, the function returns the empty list and no error is raised.",
    "Open the file, read every line, and return the list of values that are not empty.",
    "The value is the same.", "Each name in the list is the name of a file in the path given to the function.",
    "Set the value.", "This returns the object.", "An error is raised when the value is not a number or a name.",
    "The path of the new file is returned as a string, and the old file is closed before the new one is opened.",
    "List the files.", "Is the list empty?", "The first value of the list is returned, or none if it is empty.",
    "When the object is closed, every file it opened is closed too.", "Return the number of names.",
]
SPEC = """\
name: tiny-text
version: 0.1.0
model: bert.onnx
target: {hardware: x86, isa: native}
inputs:
  - {name: text, dtype: bytes, shape: []}
budget:
  accuracy: {metric: cosine, output: embedding, min: 0.99}
optimize: {quantize: none, calibration: texts.npz, validation: texts.npz}
preprocess:
  - tokenize: {tokenizer: tokenizer/tiny.json, max_length: 128, padding: PADDING}
postprocess:
  - mean_pool: {mask: attention_mask, output: embedding}
  - l2_normalize
serving: {max_batch_size: 32, max_queue_delay_ms: 2}
"""


def _bundle(root: Path, padding: str) -> Path:
    (root / "tokenizer").mkdir(parents=True)
    shutil.copy(MODELS / "tiny_bert.onnx", root / "bert.onnx")
    shutil.copy(MODELS / "tiny_tokenizer.json", root / "tokenizer" / "tiny.json")
    np.savez(root / "texts.npz", text=np.array([s.encode() for s in SENTENCES]))
    (root / "spec.yaml").write_text(SPEC.replace("PADDING", padding))
    result = build(root / "spec.yaml", root / "out", iterations=20, lock="ignore")
    assert result.path is not None, "the build failed"
    return result.path


def _request(i: int) -> dict[str, np.ndarray]:
    return {"text": np.array([SENTENCES[i % len(SENTENCES)].encode()], dtype=object)}


async def _load(pipeline: Pipeline, seconds: float, concurrency: int) -> tuple[int, list[float], Metrics]:
    metrics = Metrics(pipeline.name, max_batch_size=pipeline.serving.max_batch_size)
    batcher = Batcher(pipeline, metrics)
    latencies: list[float] = []
    stop = time.perf_counter() + seconds

    async def client(k: int) -> None:
        i = k
        while time.perf_counter() < stop:
            started = time.perf_counter()
            await batcher.submit(_request(i))
            latencies.append(time.perf_counter() - started)
            i += concurrency

    await asyncio.gather(*(client(k) for k in range(concurrency)))
    await batcher.drain()
    return len(latencies), latencies, metrics


def _measure(pipeline: Pipeline, seconds: float, concurrency: int) -> tuple[float, float, float, float]:
    """(sentences/s, mean batch, p50 ms, p99 ms) of one closed-loop run."""
    done, latencies, metrics = asyncio.run(_load(pipeline, seconds, concurrency))
    get = metrics.registry.get_sample_value
    batches = get("infc_batch_size_count", {"model": pipeline.name}) or 1
    rows = get("infc_batch_size_sum", {"model": pipeline.name}) or 0
    ms = sorted(x * 1000 for x in latencies)
    return done / seconds, rows / batches, statistics.median(ms), ms[int(0.99 * (len(ms) - 1))]


def _cosine(pipeline: Pipeline, reference: np.ndarray) -> float:
    """The worst cosine between a sentence's embedding (run alone) and its max_length one."""
    embeddings = np.concatenate([pipeline.run(_request(i))["embedding"] for i in range(len(SENTENCES))])
    return float(np.min(np.sum(embeddings * reference, axis=1)))  # both are L2-normalized


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        before = Pipeline.load(_bundle(Path(tmp) / "before", "max_length"))
        after_bundle = _bundle(Path(tmp) / "after", "longest")
        after = Pipeline.load(after_bundle)
        tok = after.preprocess({"text": np.array([s.encode() for s in SENTENCES], dtype=object)})
        lengths = tok["attention_mask"].sum(axis=1)
        print(f"{len(SENTENCES)} sentences, {lengths.min()}-{lengths.max()} tokens (median {np.median(lengths):g}), "
              f"max_length 128, concurrency {args.concurrency}, {args.seconds:g} s each\n")
        reference = np.concatenate([before.run(_request(i))["embedding"] for i in range(len(SENTENCES))])
        no_buckets = Pipeline.load(after_bundle)
        no_buckets.length_bucket = lambda request: 0  # type: ignore[method-assign]
        configs = {"max_length (before)": before, "per batch, no length buckets": no_buckets,
                   "per batch + length buckets (after)": after}
        runs: dict[str, list[tuple[float, float, float, float]]] = {name: [] for name in configs}
        for pipeline in configs.values():
            pipeline.warmup()
        for _ in range(args.repeats):  # interleaved: the machine's load drifts between runs
            for name, pipeline in configs.items():
                runs[name].append(_measure(pipeline, args.seconds, args.concurrency))
        print("| padding | sentences/s (median; min-max) | mean batch | p50 ms | p99 ms | min cosine vs max_length |")
        print("|---|---|---|---|---|---|")
        for name, pipeline in configs.items():
            rate = sorted(r[0] for r in runs[name])
            mid = [statistics.median(r[k] for r in runs[name]) for k in (1, 2, 3)]
            print(f"| {name} | {statistics.median(rate):.0f} ({rate[0]:.0f}-{rate[-1]:.0f}) | {mid[0]:.1f} | "
                  f"{mid[1]:.1f} | {mid[2]:.1f} | {_cosine(pipeline, reference):.6f} |")


if __name__ == "__main__":
    main()
