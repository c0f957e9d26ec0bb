"""`python -m infc_runtime measure BUNDLE_DIR`: measure a bundle's latency where it runs.

Loads the bundle exactly as the server does (`serve.load_bundle`: its files
are verified against the manifest first, unless `--no-verify`), warms it up,
settles the heap as the server does after warm-up (unless `--no-gc-freeze`),
optionally times whole batches per size (`--batches`), then times single
requests through `Pipeline.run_batch` (what the server's worker runs) with
`latency.measure`: adaptive sample counts, a confidence interval per
percentile, a verdict per budget. Request i is row `i % n` of `--requests`
(an .npz with one array per request input, named as in the manifest; other
arrays are ignored), else the bundle's zero-filled example request.

With `--public-key PUB` (or INFC_PUBLIC_KEY, as `serve`) the bundle must be
signed by that key's private key (`infc sign`), checked before anything of it
is read: an unsigned or wrongly signed bundle is refused (exit 2). A bundle
built for CUDA where CUDA cannot be used is refused (exit 3) unless
`--allow-cpu-fallback` (or INFC_ALLOW_CPU_FALLBACK=1); the document's
`providers` (those the session used) and `cpu_fallback` (those it was built
for and did without) say where it was measured.

Prints one JSON document on stdout (`Measurement.to_dict()` plus `"format": 1`,
`providers`, `cpu_fallback`) and nothing else there. Exit codes: 0 measured
(the verdict is in the JSON); 1 a request failed; 2 usage error, or the bundle
(its files, its signature) or the requests are unusable (one line on stderr);
3 the bundle needs an execution provider this host lacks (one line on stderr).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .bundle_options import NO_VERIFY_WITH_KEY, add_bundle_options
from .latency import PERCENTILES, measure, measure_batches, settle_heap
from .pipeline import Pipeline
from .providers import ProviderError, allow_cpu_fallback_env
from .types import Tensors, numpy_dtype
from .verify import BundleError

__all__ = ["FORMAT", "add_options", "load_requests", "run"]

FORMAT = 1
EXIT_OK, EXIT_REQUEST_FAILED, EXIT_USAGE, EXIT_NO_PROVIDER = 0, 1, 2, 3


class _Unusable(Exception):
    """The bundle or the requests cannot be measured (exit 2)."""


class _RequestFailed(Exception):
    """The pipeline returned an error for a request (exit 1)."""


def _budget(text: str) -> tuple[str, float]:
    name, sep, value = text.partition("=")
    names = [n for n, _ in PERCENTILES]
    try:
        ms = float(value)
    except ValueError:
        ms = -1.0
    if not sep or name not in names or not ms > 0:
        raise argparse.ArgumentTypeError(f"expected NAME=MS with NAME one of {', '.join(names)}, got {text!r}")
    return name, ms


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(s) for s in text.split(",")]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"expected positive batch sizes separated by commas, got {text!r}")
    return sizes


def add_options(parser: argparse.ArgumentParser) -> None:
    """The `measure` command's arguments."""
    parser.add_argument("bundle_dir", metavar="BUNDLE_DIR", help="the bundle directory (holds manifest.json)")
    parser.add_argument("--requests", metavar="FILE.npz", help="request rows, one array per input (default: zeros)")
    parser.add_argument("--budget", type=_budget, action="append", default=[], metavar="NAME=MS",
                        help="a latency budget, e.g. p99=10 (repeatable; p50, p95, p99)")
    parser.add_argument("--batches", type=_sizes, metavar="SIZES", help="also time batches of these sizes, e.g. 1,2,4")
    parser.add_argument("--stop-above-ms", type=float, metavar="X", help="stop growing batches once a p99 passes X")
    parser.add_argument("--min-samples", type=int, default=300, metavar="N", help="(default: %(default)s)")
    parser.add_argument("--max-samples", type=int, default=20000, metavar="N", help="(default: %(default)s)")
    parser.add_argument("--min-seconds", type=float, default=1.0, metavar="S", help="(default: %(default)s)")
    parser.add_argument("--max-seconds", type=float, default=10.0, metavar="S", help="(default: %(default)s)")
    parser.add_argument("--no-gc-freeze", action="store_true", help="do not settle the heap after warm-up")
    parser.add_argument("--no-single", action="store_true", help="time only the batches, not single requests")
    add_bundle_options(parser, verb="measure", says=" (the JSON says so)", exits=f"exits {EXIT_NO_PROVIDER}")


def load_requests(path: str | Path, pipeline: Pipeline) -> Tensors:
    """The request inputs in an .npz, cast to the bundle's dtypes and checked against its shapes."""
    if not zipfile.is_zipfile(path):  # else np.load tries .npy, then pickle, and says so
        raise _Unusable(f"requests {path}: not an .npz file (missing, or not a zip archive)")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:  # corrupt, pickled objects
        raise _Unusable(f"requests {path}: cannot read the .npz ({type(exc).__name__}: {exc})") from None
    requests: Tensors = {}
    for spec in pipeline.inputs:
        if spec.name not in arrays:
            raise _Unusable(f"requests {path}: no array {spec.name!r} (the bundle's inputs: "
                            f"{', '.join(s.name for s in pipeline.inputs)})")
        arr = arrays[spec.name]
        shape_ok = arr.ndim == len(spec.shape) + 1 and all(
            want < 0 or got == want for got, want in zip(arr.shape[1:], spec.shape, strict=True))
        if not shape_ok or len(arr) == 0:
            expected = ", ".join(["rows >= 1", *map(str, spec.shape)])
            raise _Unusable(f"requests {path}: {spec.name!r} has shape {list(arr.shape)}, expected [{expected}]")
        try:
            requests[spec.name] = np.ascontiguousarray(arr, dtype=numpy_dtype(spec.dtype))
        except (TypeError, ValueError) as exc:
            raise _Unusable(f"requests {path}: {spec.name!r} ({arr.dtype}) is not {spec.dtype}: {exc}") from None
    if len({len(a) for a in requests.values()}) > 1:
        raise _Unusable(f"requests {path}: the inputs have different numbers of rows")
    return requests


def _run_one(pipeline: Pipeline, request: Tensors, what: str) -> None:
    result = pipeline.run_batch([request])[0]
    if isinstance(result, Exception):
        raise _RequestFailed(f"{what} failed: {type(result).__name__}: {result}")


def _measure(args: argparse.Namespace, pipeline: Pipeline) -> dict[str, Any]:
    """Warm up, settle, sweep batches, time single requests: the JSON document."""
    requests = pipeline.example_request(1) if args.requests is None else load_requests(args.requests, pipeline)
    n = len(next(iter(requests.values())))
    try:
        pipeline.warmup()
    except Exception as exc:
        raise _RequestFailed(f"warm-up failed: {type(exc).__name__}: {exc}") from None
    settled = None if args.no_gc_freeze else settle_heap()
    points = []
    if args.batches:
        batches: dict[int, Tensors] = {}

        def run_batch(size: int) -> None:
            if size not in batches:
                idx = np.arange(size) % n
                batches[size] = {k: v[idx] for k, v in requests.items()}
            _run_one(pipeline, batches[size], f"a batch of {size}")

        points = measure_batches(run_batch, args.batches, stop_above_ms=args.stop_above_ms)
    # where it ran: a bundle built for CUDA measured on CPU (allowed) must not pass for the GPU's figures
    ran = {"providers": list(pipeline.providers), "cpu_fallback": list(pipeline.cpu_fallback)}
    if args.no_single:
        return {"format": FORMAT, "gc": {"settled": settled}, "batches": [p.to_dict() for p in points], **ran}
    rows = [{k: v[j:j + 1] for k, v in requests.items()} for j in range(n)]
    result = measure(lambda i: _run_one(pipeline, rows[i % n], f"request {i} (row {i % n})"),
                     budgets=dict(args.budget), min_samples=args.min_samples, max_samples=args.max_samples,
                     min_seconds=args.min_seconds, max_seconds=args.max_seconds)
    result = dataclasses.replace(result, gc={**result.gc, "settled": settled}, batches=tuple(points))
    return {"format": FORMAT, **result.to_dict(), **ran}


def run(args: argparse.Namespace, load_bundle: Callable[..., Pipeline]) -> int:
    """Run the parsed `measure` command; print the JSON document; return the exit code.

    `load_bundle`: `serve.load_bundle` (passed in: serve imports this module for its parser).
    `args.public_key`: the key file, the environment's already resolved (`serve.public_key`).
    """
    if not 1 <= args.min_samples <= args.max_samples or not 0 <= args.min_seconds <= args.max_seconds:
        print("error: need 1 <= --min-samples <= --max-samples and 0 <= --min-seconds <= --max-seconds",
              file=sys.stderr)
        return EXIT_USAGE
    key = args.public_key
    if key is not None and args.no_verify:
        print(f"error: {NO_VERIFY_WITH_KEY}", file=sys.stderr)
        return EXIT_USAGE
    try:
        fallback = args.allow_cpu_fallback or allow_cpu_fallback_env()
    except ValueError as exc:
        _error(exc)
        return EXIT_USAGE
    try:
        doc = _measure(args, load_bundle(args.bundle_dir, verify=not args.no_verify, public_key=key,
                                         allow_cpu_fallback=fallback))
    except (BundleError, _Unusable) as exc:
        _error(exc)
        return EXIT_USAGE
    except ProviderError as exc:
        _error(f"{args.bundle_dir}: {exc}")
        return EXIT_NO_PROVIDER
    except _RequestFailed as exc:
        _error(exc)
        return EXIT_REQUEST_FAILED
    print(json.dumps(doc, allow_nan=False))
    return EXIT_OK


def _error(exc: Exception | str) -> None:
    """One line on stderr, whatever the message holds (ORT's can span lines)."""
    print("error: " + " ".join(str(exc).split()), file=sys.stderr)
