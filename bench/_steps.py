"""One start of a bundle's server, step by step: wall ms and RSS MB after each step (bench/cold_start.py --breakdown).

    python bench/_steps.py BUNDLE_DIR

Runs what `python serve.py` runs before it is ready, in its order, with the
bundle's own runtime: verify the files, import the runtime, read the manifest,
create the ONNX Runtime session, import the kernel modules, import the HTTP
stack, create the app, warm up, settle the heap; the collector off while loading,
then what loaded frozen, as `infc_runtime.serve` does since issue 10 (older
runtimes collected all along). Listening is left out (uvicorn's start: a few
ms). Ends with the heavy third-party packages the process imported.
"""

from __future__ import annotations

import gc
import os
import sys
import time

T0 = time.perf_counter()
HEAVY = ("numba", "llvmlite", "scipy", "yaml", "jinja2", "jsonschema", "pydantic", "grpc", "google.protobuf", "PIL",
         "tokenizers", "prometheus_client", "onnx", "starlette", "uvicorn", "anyio", "email", "http.cookies")


def _rss_mb() -> tuple[float, float]:
    found = {}
    with open(f"/proc/{os.getpid()}/status") as status:
        for line in status:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                found[key] = int(value.split()[0]) / 1024
    return found["VmRSS"], found["VmHWM"]


class _Steps:
    def __init__(self) -> None:
        self.last = T0
        print(f"{'step':32s} {'ms':>8s} {'total ms':>9s} {'RSS MB':>7s} {'peak MB':>8s}")

    def __call__(self, name: str) -> None:
        now = time.perf_counter()
        rss, peak = _rss_mb()
        print(f"{name:32s} {1000 * (now - self.last):8.1f} {1000 * (now - T0):9.1f} {rss:7.1f} {peak:8.1f}",
              flush=True)
        self.last = now


def main(bundle: str) -> None:
    import json
    from pathlib import Path

    step = _Steps()
    step("interpreter up")
    sys.path.insert(0, bundle)
    from infc_runtime import verify

    verify.verify_bundle(bundle)
    step("verify_bundle (sha256 of files)")
    import numpy  # noqa: F401

    step("import numpy")
    import onnxruntime  # noqa: F401

    step("import onnxruntime")
    from infc_runtime import serve  # noqa: F401

    step("import infc_runtime.serve")
    gc.disable()
    from infc_runtime.abi import Manifest, kernel_module
    from infc_runtime.pipeline import Pipeline, load_kernel_module, make_session

    root = Path(bundle)
    manifest = Manifest.from_dict(json.loads((root / "manifest.json").read_text()))
    step("import pipeline, read manifest")
    session = make_session(root / manifest.model.path, dict(manifest.session))
    step("ONNX Runtime session")
    pre = kernel_module(load_kernel_module(root / manifest.kernels.pre))
    post = kernel_module(load_kernel_module(root / manifest.kernels.post))
    step("import kernel modules")
    pipeline = Pipeline(name=manifest.name, version=manifest.version, inputs=manifest.inputs,
                        outputs=manifest.outputs, session=session, pre=pre, post=post, serving=manifest.serving)
    from infc_runtime.app import create_app

    step("import app (starlette, metrics)")
    from infc_runtime import http_server  # noqa: F401

    step("import http_server (uvicorn)")
    create_app(pipeline)
    gc.freeze()
    gc.enable()
    step("create_app, gc.freeze")
    pipeline.warmup()
    step("warm-up (Numba cache, ORT)")
    from infc_runtime.latency import settle_heap

    settle_heap()
    step("settle_heap (gc.collect, freeze)")
    loaded = [name for name in HEAVY if name in sys.modules]
    print("imported:", ", ".join(loaded) or "none of " + ", ".join(HEAVY))


if __name__ == "__main__":
    main(sys.argv[1])
