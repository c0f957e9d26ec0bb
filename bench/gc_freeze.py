"""Heap settling: single-request latency of a bundle with and without `gc.freeze()` after warm-up.

    python bench/gc_freeze.py [--spec specs/digits/digits.yaml ...] [--rounds 5] [--inflate 3000000]
                              [--min-seconds 2]

Builds each spec (`infc build SPEC --no-latency-gate`, in a subprocess), then,
round after round, runs the bundle's own `python -m infc_runtime measure` in a
fresh process from inside the bundle, once as shipped (warm-up, then
`settle_heap`: collect, freeze, gen-0 threshold 10000) and once with
`--no-gc-freeze`, the order flipping every round so machine load hits both
alike. The same pair runs again with the process holding `--inflate` small
Python objects (one-element lists, tracked by the collector) allocated before
the bundle loads, as the compiler's process holds models and candidates.
Requests are the spec's validation rows. Reported per variant: medians over
the rounds of p50 and p99 (the command's estimates; p99's min-max over the
rounds too), of the p99 interval's width, of the collections (gen 0/1/2) that
ran while measuring and of the host's noise (the reference workload's p99/p50,
and how many runs called the host quiet); and the p99 ratio without / with
freezing. Last, what one full collection costs in
this process with the inflated heap, unfrozen and frozen. Not a test: numbers
move with the machine.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SPECS = [ROOT / "specs" / "digits" / "digits.yaml", ROOT / "specs" / "tabular" / "tabular.yaml"]

# run from inside the bundle: its own runtime copy, after the inflated heap is allocated
_RUN = ("import sys; sys.path.insert(0, '.'); _heap = [[i] for i in range(int(sys.argv.pop(1)))]; "
        "from infc_runtime.serve import main; sys.exit(main(sys.argv[1:]))")


def _build(spec: Path, out: Path) -> Path:
    done = subprocess.run([sys.executable, "-m", "infc", "build", str(spec), "-o", str(out), "--no-latency-gate"],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"infc build {spec} failed (exit {done.returncode}): {done.stderr.strip()}")
    meta = yaml.safe_load(spec.read_text())
    return out / f"{meta['name']}-{meta['version']}"


def _requests(spec: Path) -> Path | None:
    validation = (yaml.safe_load(spec.read_text()).get("optimize") or {}).get("validation")
    return None if validation is None else spec.parent / validation


def _measure(bundle: Path, requests: Path | None, *, freeze: bool, inflate: int, min_seconds: float) -> dict[str, Any]:
    cmd = [sys.executable, "-c", _RUN, str(inflate), "measure", ".", "--min-seconds", f"{min_seconds:g}",
           "--max-seconds", f"{max(min_seconds, 10):g}"]
    cmd += [] if requests is None else ["--requests", str(requests)]
    cmd += [] if freeze else ["--no-gc-freeze"]
    done = subprocess.run(cmd, cwd=bundle, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"measure {bundle} failed (exit {done.returncode}): {done.stderr.strip()}")
    doc: dict[str, Any] = json.loads(done.stdout)
    return doc


def _full_collection_ms(inflate: int, repeats: int = 5) -> tuple[float, float]:
    """Median ms of `gc.collect()` with `inflate` small objects alive: unfrozen, then frozen."""
    heap = [[i] for i in range(inflate)]
    try:
        times = []
        for frozen in (False, True):
            if frozen:
                gc.freeze()
            runs = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                gc.collect()
                runs.append((time.perf_counter() - t0) * 1000)
            times.append(statistics.median(runs))
        return times[0], times[1]
    finally:
        gc.unfreeze()
        del heap


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", type=Path, action="append", help="spec to build (default: digits and tabular)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--inflate", type=int, default=3_000_000, help="small objects held before the bundle loads")
    parser.add_argument("--min-seconds", type=float, default=2.0, help="of single requests per measurement")
    args = parser.parse_args(argv)
    print("| bundle | heap | gc after warm-up | p50 ms | p99 ms (min-max) | p99 interval width ms "
          "| collections 0/1/2 | samples | host spread (quiet runs) | p99 no freeze / freeze |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="gc-freeze-") as out:
        for spec in args.spec or DEFAULT_SPECS:
            spec = spec.resolve()  # the measure command runs from inside the bundle
            bundle, requests = _build(spec, Path(out)), _requests(spec)
            for inflate in (0, args.inflate):
                runs: dict[bool, list[dict[str, Any]]] = {True: [], False: []}
                for r in range(args.rounds):
                    for freeze in (True, False) if r % 2 == 0 else (False, True):
                        runs[freeze].append(_measure(bundle, requests, freeze=freeze, inflate=inflate,
                                                     min_seconds=args.min_seconds))
                p99 = {f: statistics.median(d["percentiles"][2]["value_ms"] for d in runs[f]) for f in runs}
                for freeze in (True, False):
                    docs = runs[freeze]
                    p50 = statistics.median(d["percentiles"][0]["value_ms"] for d in docs)
                    width = statistics.median(d["percentiles"][2]["high_ms"] - d["percentiles"][2]["low_ms"]
                                              for d in docs)
                    collections = "/".join(f"{statistics.median(d['gc']['collections'][g] for d in docs):g}"
                                           for g in range(3))
                    samples = statistics.median(d["samples"] for d in docs)
                    p99s = [d["percentiles"][2]["value_ms"] for d in docs]
                    spread = statistics.median(d["noise"]["spread"] or float("inf") for d in docs)
                    quiet = sum(bool(d["noise"]["quiet"]) for d in docs)
                    heap = "as loaded" if inflate == 0 else f"+{inflate:,} objects"
                    ratio = f"x{p99[False] / p99[True]:.2f}" if not freeze else ""
                    print(f"| {bundle.name} | {heap} | {'settle_heap' if freeze else 'untouched'} | {p50:.3f} "
                          f"| {p99[freeze]:.3f} ({min(p99s):.3f}-{max(p99s):.3f}) | {width:.3f} | {collections} "
                          f"| {samples:.0f} | {spread:.2f} ({quiet}/{len(docs)}) | {ratio} |")
    unfrozen, frozen = _full_collection_ms(args.inflate)
    print(f"\nOne full collection (gc.collect) with {args.inflate:,} small objects alive: "
          f"{unfrozen:.1f} ms unfrozen, {frozen:.1f} ms frozen (median of 5).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
