"""Image pre-processing side by side: the fused Numba kernel infc generates against the
numpy reference, OpenCV and Pillow, on the same batch in one run.

The work (issue 4): 32 images 480x640x3 uint8 -> bilinear resize to 224x224 ->
x / 255 -> (x - mean) / std with ImageNet's mean and std -> NCHW float32.

- infc fused: the generated `kernels/pre.py` (one loop over the output). As codegen
  writes it for this size: a `prange` loop (vectorized) on INFC_KERNEL_THREADS
  threads, default 1; also timed with 2 threads, and as a plain loop (no prange);
- numpy reference: the steps' numpy references (what the kernel is tested against);
- OpenCV: `cv2.resize(INTER_LINEAR)` per image (OpenCV's own threads), then numpy
  normalize and transpose;
- Pillow: `Image.resize(BILINEAR)` per image (Pillow antialiases when it shrinks, so
  its numbers differ), then the same numpy.

Run: `pip install -e '.[bench]' && python bench/image_pre.py [--repeat 20]`.
Prints a markdown table (median and fastest ms per batch, each pipeline's median over the
fused kernel's), the machine, and how far each result is from the fused one.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numba
import numpy as np
from _machine import cpu_model
from PIL import Image

from infc.kernels import fusion
from infc.kernels.codegen import generate
from infc.kernels.graph import StepIssue, resolve
from infc.kernels.reference import run_reference
from infc_runtime.pipeline import load_kernel_module
from infc_runtime.types import TensorSpec

MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)
STEPS: list[tuple[str, dict[str, Any]]] = [
    ("resize", {"size": [224, 224], "method": "bilinear"}),
    ("to_float", {"scale": 1 / 255}),
    ("normalize", {"mean": MEAN.tolist(), "std": STD.tolist()}),
    ("layout", {"from": "HWC", "to": "CHW"}),
]
Array = np.ndarray[Any, Any]


def _kernel(folder: Path, parallel: bool, steps: list[tuple[str, dict[str, Any]]] = STEPS,
            threads: int = 1) -> Callable[[dict[str, Array]], dict[str, Array]]:
    """The generated pre module for `steps`, with a prange loop on `threads` threads, or a plain loop."""

    def fail(i: int, issue: StepIssue) -> None:
        raise SystemExit(f"step {i}: {issue}")

    flow = resolve(steps, [TensorSpec("image", "uint8", (-1, -1, 3))], fail)
    saved = fusion.PARALLEL_MIN_ELEMENTS
    fusion.PARALLEL_MIN_ELEMENTS = 0 if parallel else 1 << 62
    try:
        source = generate("pre", flow, name="bench", version="0")
    finally:
        fusion.PARALLEL_MIN_ELEMENTS = saved
    path = folder / f"pre_{'parallel' if parallel else 'serial'}_{len(steps)}_{threads}.py"
    path.write_text(source)
    module = load_kernel_module(path)
    if parallel:
        module.THREADS = threads  # as INFC_KERNEL_THREADS would set it
    return module.run  # type: ignore[no-any-return]


def _normalize_nchw(resized: Array) -> Array:
    x = resized.astype(np.float32) * np.float32(1 / 255)
    x = (x - MEAN) / STD
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def opencv(images: Array) -> Array:
    resized = np.stack([cv2.resize(img, (224, 224), interpolation=cv2.INTER_LINEAR) for img in images])
    return _normalize_nchw(resized)


def pillow(images: Array) -> Array:
    resized = np.stack([np.asarray(Image.fromarray(img).resize((224, 224), Image.Resampling.BILINEAR))
                        for img in images])
    return _normalize_nchw(resized)


def _time(fn: Callable[[], Any], repeat: int) -> tuple[float, float]:
    """Median and fastest ms of `repeat` calls (the fastest: the machine's other load least in the way)."""
    fn()  # warm: compile, allocate
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000.0, min(times) * 1000.0


def _tail(fn: Callable[[], Any], calls: int) -> tuple[float, float, float]:
    """p50, p99 and max microseconds of single calls."""
    fn()
    times = np.empty(calls)
    for i in range(calls):
        start = time.perf_counter()
        fn()
        times[i] = time.perf_counter() - start
    return float(np.percentile(times, 50)) * 1e6, float(np.percentile(times, 99)) * 1e6, float(times.max()) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--calls", type=int, default=2000, help="single-image calls for the latency tail")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    # a smooth image plus noise: resampling sees real gradients, not only noise
    yy, xx = np.mgrid[0:480, 0:640]
    base = np.stack([(xx * 255 // 639), (yy * 255 // 479), ((xx + yy) * 255 // 1118)], axis=-1)
    noise = rng.integers(-20, 21, (args.batch, 480, 640, 3))
    images = np.clip(base[None] + noise, 0, 255).astype(np.uint8)
    request = {"image": images}

    with tempfile.TemporaryDirectory() as tmp:
        fused = _kernel(Path(tmp), parallel=True)
        two = _kernel(Path(tmp), parallel=True, threads=2)
        plain = _kernel(Path(tmp), parallel=False)
        rows = [
            ("infc fused (codegen's choice: prange loop, 1 thread)", lambda: fused(request)["image"]),
            ("infc fused, INFC_KERNEL_THREADS=2", lambda: two(request)["image"]),
            ("infc fused, plain loop (no prange)", lambda: plain(request)["image"]),
            ("numpy reference", lambda: run_reference(STEPS, request)["image"]),
            ("OpenCV resize + numpy", lambda: opencv(images)),
            ("Pillow resize + numpy", lambda: pillow(images)),
        ]
        want = rows[0][1]()
        results = []
        for name, fn in rows:
            ms, fastest = _time(fn, args.repeat)
            diff = float(np.abs(fn() - want).max())
            results.append((name, ms, fastest, diff))
        # one image per call, as the server runs it: the tail is what threads cost on a busy machine
        single = {"image": images[:1]}
        tails = {n: _tail(lambda k=k: k(single), args.calls) for n, k in (("1 thread", fused), ("2 threads", two))}
        # the resize alone, uint8 against OpenCV's (11-bit fixed-point weights)
        resized = _kernel(Path(tmp), parallel=True, steps=STEPS[:1])(request)["image"].astype(int)
        cv = np.stack([cv2.resize(img, (224, 224), interpolation=cv2.INTER_LINEAR) for img in images]).astype(int)
        off = np.abs(resized - cv)
    base_ms = results[0][1]
    print(f"- command: `python bench/image_pre.py --batch {args.batch} --repeat {args.repeat} --calls {args.calls}`")
    print(f"- machine: {os.cpu_count()} cores ({len(os.sched_getaffinity(0))} usable), {cpu_model()}, "
          f"Python {platform.python_version()}, numba {numba.__version__} ({numba.config.NUMBA_NUM_THREADS} threads, "
          f"{numba.threading_layer()} layer), numpy {np.__version__}, OpenCV {cv2.__version__} "
          f"({cv2.getNumThreads()} threads), Pillow {Image.__version__}")
    print()
    print(f"| pipeline ({args.batch} x 480x640x3 -> {args.batch}x3x224x224) | median ms | x fused | "
          "fastest ms | max abs diff vs fused |")
    print("|---|---|---|---|---|")
    for name, ms, fastest, diff in results:
        print(f"| {name} | {ms:.2f} | {ms / base_ms:.2f} | {fastest:.2f} | {diff:.3g} |")
    print()
    print("| one image per call (480x640x3 -> 3x224x224) | p50 us | p99 us | max us |")
    print("|---|---|---|---|")
    for name, (p50, p99, worst) in tails.items():
        print(f"| infc fused, {name} | {p50:.0f} | {p99:.0f} | {worst:.0f} |")
    print()
    print(f"Bilinear resize alone, uint8, infc against OpenCV INTER_LINEAR: max |difference| {off.max()}, "
          f"{(off > 0).mean():.2%} of values differ.")


if __name__ == "__main__":
    sys.exit(main())
