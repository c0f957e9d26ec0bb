"""A small real bundle for runtime tests: an ONNX model, kernel modules, a manifest.

The pipeline it describes:

    pixels uint8 [4], offset float32 [3]
      -> pre:   x = pixels / 255 (float32); offset must be finite, or the request fails
      -> model: logits = x @ W + offset               (ONNX MatMul + Add)
      -> post:  probabilities float32 [3] (softmax), class_id int64 [] (argmax),
                label bytes [] (the class name; one is not ASCII)

`numba=True` writes a pre kernel whose scaling loop is `@numba.njit`, as the
compiler's generated kernels are.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable
from importlib.resources import files
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from infc.bundle import content_hash, is_measured
from infc_runtime.pipeline import Pipeline, load_kernel_module, make_session
from infc_runtime.types import ServingConfig, Tensors, TensorSpec

__all__ = [
    "DEFAULT_SERVING",
    "INPUTS",
    "LABELS",
    "OUTPUTS",
    "WEIGHTS",
    "gated_pipeline",
    "holds",
    "make_request",
    "model_bytes",
    "seal",
    "write_bundle",
]

INPUTS = [TensorSpec("pixels", "uint8", (4,)), TensorSpec("offset", "float32", (3,))]
OUTPUTS = [
    TensorSpec("probabilities", "float32", (3,)),
    TensorSpec("class_id", "int64", ()),
    TensorSpec("label", "bytes", ()),
]
LABELS = [b"cat", b"dog", "\u017c\u00f3\u0142w".encode()]  # "żółw" (turtle)
DEFAULT_SERVING = {"max_batch_size": 8, "max_queue_delay_ms": 5, "max_queue": 64, "timeout_ms": 2000}
WEIGHTS = np.array([[1, -1, 0], [0, 2, -1], [-1, 0, 3], [2, 1, -2]], dtype=np.float32)

_PRE = '''"""Pre kernel: pixels to [0, 1] floats; offsets pass through (must be finite)."""

import numpy as np


def run(tensors):
    offset = tensors["offset"]
    if not np.isfinite(offset).all():
        raise ValueError("offset must be finite")
    return {"x": tensors["pixels"].astype(np.float32) * np.float32(1 / 255), "offset": offset}
'''

_PRE_NUMBA = '''"""Pre kernel (Numba): pixels to [0, 1] floats; offsets pass through (must be finite)."""

import numba
import numpy as np


@numba.njit(cache=True)
def _scale(pixels, out):
    for i in range(pixels.shape[0]):
        for j in range(pixels.shape[1]):
            out[i, j] = pixels[i, j] * np.float32(1 / 255)


def run(tensors):
    offset = tensors["offset"]
    if not np.isfinite(offset).all():
        raise ValueError("offset must be finite")
    pixels = tensors["pixels"]
    x = np.empty(pixels.shape, dtype=np.float32)
    _scale(pixels, x)
    return {"x": x, "offset": offset}
'''

_POST = f'''"""Post kernel: softmax, argmax and the label of the top class."""

import numpy as np

LABELS = {LABELS!r}


def run(tensors):
    logits = tensors["logits"]
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    probabilities = (e / e.sum(axis=1, keepdims=True)).astype(np.float32)
    class_id = probabilities.argmax(axis=1).astype(np.int64)
    label = np.empty(len(class_id), dtype=object)
    label[:] = [LABELS[i] for i in class_id]
    return {{"probabilities": probabilities, "class_id": class_id, "label": label}}
'''


def model_bytes() -> bytes:
    """The ONNX model: logits = x @ WEIGHTS + offset, batch dimension `N`."""
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "W"], ["xw"]),
            helper.make_node("Add", ["xw", "offset"], ["logits"]),
        ],
        "toy",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4]),
            helper.make_tensor_value_info("offset", TensorProto.FLOAT, ["N", 3]),
        ],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])],
        initializer=[numpy_helper.from_array(WEIGHTS, "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    return model.SerializeToString()


def write_bundle(
    root: Path,
    *,
    name: str = "toy",
    version: str = "1",
    serving: dict[str, Any] | None = None,
    numba: bool = False,
) -> Path:
    """Write the bundle into `root` (created if missing) and return `root`."""
    (root / "kernels").mkdir(parents=True, exist_ok=True)
    (root / "model.onnx").write_bytes(model_bytes())
    (root / "kernels" / "pre.py").write_text(_PRE_NUMBA if numba else _PRE)
    (root / "kernels" / "post.py").write_text(_POST)
    manifest = {
        "name": name,
        "version": version,
        "inputs": [s.to_dict() for s in INPUTS],
        "outputs": [s.to_dict() for s in OUTPUTS],
        "model": {"path": "model.onnx"},
        "kernels": {"pre": "kernels/pre.py", "post": "kernels/post.py"},
        "session": {"graph_optimization_level": "all", "intra_op_num_threads": 1},
        "serving": {**DEFAULT_SERVING, **(serving or {})},
    }
    (root / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return seal(root)


def with_runtime(root: Path) -> Path:
    """`root` with a copy of the installed runtime's modules in `infc_runtime/`, as a built bundle has."""
    runtime = root / "infc_runtime"
    runtime.mkdir()
    for entry in files("infc_runtime").iterdir():
        if entry.name.endswith(".py"):
            (runtime / entry.name).write_bytes(entry.read_bytes())
    return root


def seal(root: Path) -> Path:
    """List the sha256 of every file under `root` in its manifest and set the content hash, as a build does
    (after a test edits a file, to get past the runtime's verification)."""
    manifest = json.loads((root / "manifest.json").read_text())
    hashes = {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
              for p in sorted(root.rglob("*")) if p.is_file() and p.suffix != ".pyc"}
    del hashes["manifest.json"]
    manifest["files"] = {rel: h for rel, h in hashes.items() if not is_measured(rel)}
    manifest["measurements"] = {**manifest.get("measurements", {}),
                                "files": {rel: h for rel, h in hashes.items() if is_measured(rel)}}
    manifest["content_hash"] = content_hash(manifest)
    (root / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return root


def make_request(rows: int, seed: int = 0) -> Tensors:
    """Request tensors of `rows` rows with reproducible random values."""
    rng = np.random.default_rng(seed)
    return {
        "pixels": rng.integers(0, 255, size=(rows, 4), dtype=np.uint8),  # 255 first: held (gated_pipeline)
        "offset": rng.normal(size=(rows, 3)).astype(np.float32),
    }


def holds(tensors: Tensors) -> bool:
    """The default `hold` of `gated_pipeline`: requests whose first pixel is 255."""
    return bool(tensors["pixels"][0, 0] == 255)


def gated_pipeline(
    bundle: Path,
    serving: ServingConfig,
    gate: threading.Event,
    calls: list[int] | None = None,
    hold: Callable[[Tensors], bool] = holds,
) -> Pipeline:
    """The bundle's pipeline, whose pre kernel waits for `gate` on requests `hold` picks.

    Lets a test keep the worker thread busy for as long as it wants; `calls`
    collects the row count of every request that reached pre-processing.
    """
    pre: Callable[[Tensors], Tensors] = load_kernel_module(bundle / "kernels" / "pre.py").run

    def gated_pre(tensors: Tensors) -> Tensors:
        if calls is not None:
            calls.append(len(tensors["pixels"]))
        if hold(tensors):
            gate.wait(timeout=10)
        return pre(tensors)

    return Pipeline(
        name="toy",
        version="1",
        inputs=INPUTS,
        outputs=OUTPUTS,
        session=make_session(bundle / "model.onnx", {"intra_op_num_threads": 1}),
        pre=gated_pre,
        post=load_kernel_module(bundle / "kernels" / "post.py").run,
        serving=serving,
        more_sessions=[make_session(bundle / "model.onnx", {"intra_op_num_threads": 1})
                       for _ in range(serving.instances - 1)],
    )
