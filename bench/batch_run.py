"""`infc run`'s rows/s against the in-process ONNX Runtime ceiling, on the tabular, digits, digits_png and
MiniLM examples.

    python bench/batch_run.py [--rows 200000] [--png-rows 20000] [--text-rows 2000] [--no-minilm]
                              [--rounds 3] [--out DIR]

Builds specs/tabular, specs/digits, specs/digits_png and specs/minilm (with
their committed locks where they have one, latency gate off; MiniLM only when
specs/minilm/minilm.onnx has been made by its make_model.py, and not with
`--no-minilm`) and writes their inputs, the validation rows repeated: tabular
as JSON lines (one raw row per line) and as CSV, digits as JSON lines (one row
naming its input: `{"image": [[...]]}`), each `--rows` rows; digits_png as a
folder of `--png-rows` PNG files; MiniLM as `--text-rows` JSON lines of one
text (a JSON string) each. Then, in rounds:

- `infc run BUNDLE INPUT -o OUT.jsonl` as a user runs it (a fresh process:
  start, verify, load, run, write); two figures: rows / the wall time of the
  whole command, and the rows/s the run prints (from its first batch to its
  last line written: the steady state, without the start);
- the ceiling: a bare `onnxruntime.InferenceSession` on the bundle's
  model.onnx with the bundle's session settings (`pipeline.make_session`: the
  same intra-op threads), the input's first `PREMADE` rows as pre-made batches
  of model inputs at the bundle's `max_batch_size` (pre-processed once,
  outside the timing), run in turn for the same number of rows (and at least a
  second);
- for the breakdown, `Pipeline.run_batch` on those batches as pre-made
  requests (pre-processing, model and post-processing; no reading, decoding of
  lines or writing): what the run could reach if reading and writing were free.

Prints the median over rounds of each and the ratio run/ceiling.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from _machine import cpu_model

ROOT = Path(__file__).resolve().parents[1]
SPECS = {"tabular": ROOT / "specs" / "tabular" / "tabular.yaml", "digits": ROOT / "specs" / "digits" / "digits.yaml",
         "digits_png": ROOT / "specs" / "digits_png" / "digits_png.yaml",
         "minilm": ROOT / "specs" / "minilm" / "minilm.yaml"}
PREMADE = 256
"""Rows of the input pre-made for the ceiling (in batches of the bundle's size, run in turn)."""
_RATE = re.compile(r"\(([\d.]+) rows/s\)")


def build_bundles(out: Path, names: list[str]) -> dict[str, Path]:
    from infc.build import build

    bundles = {}
    for name in names:
        spec = SPECS[name]
        result = build(spec, out / name, latency_gate="off", iterations=20)
        assert result.path is not None, f"{name} did not build"
        bundles[name] = result.path
    return bundles


def write_inputs(out: Path, rows: int, png_rows: int, text_rows: int,
                 names: list[str]) -> dict[str, tuple[str, Path, int]]:
    """(bundle name, input file or folder, rows) per case."""
    with np.load(SPECS["tabular"].parent / "val.npz") as val:
        records = [json.loads(r) for r in val["rows"]]
    with np.load(SPECS["digits"].parent / "val.npz") as val:
        images = val["image"]
    tab_jsonl, tab_csv, dig_jsonl = out / "tabular.jsonl", out / "tabular.csv", out / "digits.jsonl"
    with open(tab_jsonl, "w") as f:
        f.writelines(json.dumps(records[i % len(records)]) + "\n" for i in range(rows))
    fields = list(records[0])
    with open(tab_csv, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(fields)
        writer.writerows([records[i % len(records)][k] for k in fields] for i in range(rows))
    with open(dig_jsonl, "w") as f:
        f.writelines(json.dumps({"image": images[i % len(images)].tolist()}) + "\n" for i in range(rows))
    cases = {"tabular JSONL": ("tabular", tab_jsonl, rows), "tabular CSV": ("tabular", tab_csv, rows),
             "digits JSONL": ("digits", dig_jsonl, rows)}
    if "digits_png" in names:
        folder = out / "png"
        folder.mkdir(exist_ok=True)
        with np.load(SPECS["digits_png"].parent / "val.npz") as val:
            pngs = list(val["png"])
        for i in range(png_rows):
            (folder / f"{i:07d}.png").write_bytes(pngs[i % len(pngs)])
        cases["digits_png folder"] = ("digits_png", folder, png_rows)
    if "minilm" in names:
        texts = out / "texts.jsonl"
        with np.load(SPECS["minilm"].parent / "val.npz") as val:
            sentences = [t.decode() for t in val["text"]]
        with open(texts, "w") as f:
            f.writelines(json.dumps(sentences[i % len(sentences)]) + "\n" for i in range(text_rows))
        cases["MiniLM JSONL"] = ("minilm", texts, text_rows)
    return cases


def run_once(bundle: Path, source: Path, out: Path, rows: int) -> tuple[float, float]:
    """(rows/s of the whole command, rows/s the run printed)."""
    target = out / "out.jsonl"
    target.unlink(missing_ok=True)
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "infc", "run", str(bundle), str(source), "-o", str(target)],
                          capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"infc run failed ({done.returncode}): {done.stderr[-2000:]}")
    match = _RATE.search(done.stderr)
    assert match is not None, done.stderr
    with open(target, "rb") as f:
        assert sum(1 for _ in f) == rows
    return rows / wall, float(match.group(1))


def ceiling(bundle: Path, source: Path, rows: int) -> tuple[float, float]:
    """Rows/s of a bare ORT session on the bundle's model, pre-made inputs at the bundle's batch size (the first
    `PREMADE` rows of `source`, JSON lines or a folder, in batches, pre-processed once, run in turn: inputs of
    varying size, texts, cost what they cost in the run); and of `Pipeline.run_batch` on those batches as pre-made
    requests (pre + model + post, no reading or writing)."""
    sys.path.insert(0, str(ROOT / "runtime"))
    from infc_runtime.lines import decode_line
    from infc_runtime.pipeline import Pipeline, make_session

    pipeline = Pipeline.load(bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    size = pipeline.serving.max_batch_size
    count = max(size, min(PREMADE, rows) // size * size)
    requests = []
    if source.is_dir():  # a folder of files: one row each of the one BYTES input
        paths = sorted(source.iterdir())[:count]
        for start in range(0, len(paths), size):
            files = np.empty(len(paths[start:start + size]), dtype=object)
            files[:] = [path.read_bytes() for path in paths[start:start + size]]
            requests.append({pipeline.inputs[0].name: files})
    else:
        with open(source, "rb") as f:  # JSON lines (a CSV's rows are the same rows: the same model inputs)
            lines = [f.readline() for _ in range(count)]
        for start in range(0, len(lines), size):
            decoded = [decode_line(raw, pipeline.inputs, pipeline.outputs, pipeline.serving)
                       for raw in lines[start:start + size]]
            requests.append({k: np.concatenate([d.tensors[k] for d in decoded]) for k in decoded[0].tensors})
    session = make_session(bundle / manifest["model"]["path"], manifest.get("session", {}))
    names = [o.name for o in session.get_outputs()]
    feeds = [{i.name: feed[i.name] for i in session.get_inputs()}
             for feed in map(pipeline.preprocess, requests)]
    next_feed, next_request = itertools.cycle(feeds), itertools.cycle(requests)
    return (_rate(lambda: session.run(names, next(next_feed)), size, rows),
            _rate(lambda: pipeline.run_batch([next(next_request)]), size, rows))


def _rate(run: Callable[[], object], size: int, rows: int) -> float:
    """Rows/s of `run` (a batch of `size` rows), called for `rows` rows and at least a second, after a warm-up."""
    for _ in range(20):
        run()
    batches, started = 0, time.perf_counter()
    while batches * size < rows or time.perf_counter() - started < 1.0:
        run()
        batches += 1
    return batches * size / (time.perf_counter() - started)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=200_000, help="rows of the tabular and digits inputs")
    parser.add_argument("--png-rows", type=int, default=20_000, help="PNG files of the digits_png folder")
    parser.add_argument("--text-rows", type=int, default=2_000, help="texts of the MiniLM input")
    parser.add_argument("--no-minilm", action="store_true", help="leave MiniLM out")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None, help="work folder (default: a temporary one)")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="infc-bench-run-"))
    out.mkdir(parents=True, exist_ok=True)
    names = ["tabular", "digits", "digits_png"]
    if not args.no_minilm and (SPECS["minilm"].parent / "minilm.onnx").is_file():
        names.append("minilm")
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {cpu_model()}, {os.cpu_count()} CPUs, "
          f"{platform.python_version()}; {args.rows} rows, {args.rounds} rounds; {', '.join(names)}", flush=True)
    bundles = build_bundles(out, names)
    cases = write_inputs(out, args.rows, args.png_rows, args.text_rows, names)
    results: dict[str, dict[str, list[float]]] = {c: {"wall": [], "run": [], "ceiling": [], "pipeline": []}
                                                  for c in cases}
    for _ in range(args.rounds):
        for case, (name, source, rows) in cases.items():
            wall, steady = run_once(bundles[name], source, out, rows)
            results[case]["wall"].append(wall)
            results[case]["run"].append(steady)
            premade = source.with_suffix(".jsonl") if source.is_file() else source
            top, pipeline = _in_fresh(bundles[name], premade, rows)
            results[case]["ceiling"].append(top)
            results[case]["pipeline"].append(pipeline)
    print("| input | rows | batch | `infc run`, whole command (rows/s) | `infc run`, steady (rows/s) | ORT ceiling "
          "(rows/s) | steady / ceiling | whole / ceiling | `run_batch`, pre-made (rows/s) | steady / `run_batch` |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for case, figures in results.items():
        name, _, rows = cases[case]
        batch = json.loads((bundles[name] / "manifest.json").read_text())["serving"]["max_batch_size"]
        wall, steady, top, pipe = (statistics.median(figures[k]) for k in ("wall", "run", "ceiling", "pipeline"))
        print(f"| {case} | {rows:,} | {batch} | {wall:,.0f} | {steady:,.0f} | {top:,.0f} | {steady / top:.3f} | "
              f"{wall / top:.3f} | {pipe:,.0f} | {steady / pipe:.2f} |")
    return 0


def _in_fresh(bundle: Path, source: Path, rows: int) -> tuple[float, float]:
    """`ceiling` in a fresh interpreter (as `infc run` runs in one)."""
    code = (f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); from batch_run import ceiling; "
            f"from pathlib import Path; print(*ceiling(Path({str(bundle)!r}), Path({str(source)!r}), {rows}))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    top, pipeline = done.stdout.strip().splitlines()[-1].split()
    return float(top), float(pipeline)


if __name__ == "__main__":
    sys.exit(main())
