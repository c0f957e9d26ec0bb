"""The bundle ships Numba's compile cache (built on this host, the target): a fresh process does not JIT.

The bundle is copied file by file from its manifest (new paths, new mtimes), so
what is tested is exactly what ships, wherever it lands.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
from examples import DIGITS_DIR
from servers import Server

from infc.build import BuildOutcome

# in a fresh interpreter without the compiler: load the bundle, answer one request, report Numba's dispatchers
SCRIPT = r"""
import json, sys
sys.modules["infc"] = None
sys.path.insert(0, sys.argv[1])
import numba, numpy as np
from infc_runtime.pipeline import Pipeline
pipeline = Pipeline.load(sys.argv[1])
out = pipeline.run({"image": np.load(sys.argv[2])["image"][:1]})
stats = {}
# the generated kernels, and the runtime's ops they called
for module in [m for name, m in sys.modules.items() if name.startswith(("infc_kernels_", "infc_runtime.ops."))]:
    for name, obj in vars(module).items():
        if isinstance(obj, numba.core.registry.CPUDispatcher):
            s = obj.stats
            used = {"hits": sum(s.cache_hits.values()), "misses": sum(s.cache_misses.values())}
            if any(used.values()) or module.__name__.startswith("infc_kernels_"):
                stats[f"{module.__file__.rsplit('/', 1)[1]}:{name}"] = used
print(json.dumps({"labels": out["labels"].tolist(), "stats": stats}, default=bytes.decode))
"""


def _copy_shipped(bundle: Path, dest: Path, *, with_cache: bool = True) -> Path:
    """The manifest's files (and the manifest), copied without their times."""
    manifest = json.loads((bundle / "manifest.json").read_text())
    for rel in [*manifest["files"], *manifest["measurements"]["files"], "manifest.json"]:
        if with_cache or "__pycache__" not in rel:
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(bundle / rel, dest / rel)
    return dest


def _first_request(bundle: Path) -> dict[str, dict[str, int]]:
    done = subprocess.run([sys.executable, "-I", "-c", SCRIPT, str(bundle), str(DIGITS_DIR / "val.npz")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(result["labels"]) == 1
    stats: dict[str, dict[str, int]] = result["stats"]
    return stats


def test_the_manifest_lists_the_shipped_cache(digits_build: BuildOutcome, digits_bundle: Path) -> None:
    manifest = json.loads((digits_bundle / "manifest.json").read_text())
    cache = manifest["measurements"]["kernel_cache"]
    assert digits_build.plan.host_matches_target
    assert cache["shipped"] is True, cache["reason"]
    # the machine code embeds the build machine: hashed with the measurements, outside the content hash
    caches = ("kernels/__pycache__/", "infc_runtime/ops/__pycache__/")  # the kernels' and the ops they call
    assert not [f for f in manifest["files"] if f.startswith(caches)]
    shipped = [f for f in manifest["measurements"]["files"] if f.startswith(caches)]
    assert sorted(shipped) == sorted(cache["files"]) and shipped
    assert {Path(f).suffix for f in shipped} == {".nbi", ".nbc"}
    # pre's fused loop, and the ops post calls (softmax, topk: its steps are all calls into the library)
    assert any(Path(f).name.startswith("pre.") for f in shipped)
    assert {Path(f).name.split(".")[1].split("-")[0] for f in shipped if f.startswith(caches[1])} >= {
        "_softmax_rows", "_topk_rows"}


def test_a_copied_bundle_answers_its_first_request_from_the_cache(digits_bundle: Path, tmp_path: Path) -> None:
    stats = _first_request(_copy_shipped(digits_bundle, tmp_path / "copy"))
    assert stats, "the kernels have Numba functions"
    compiled = {name: s for name, s in stats.items() if s["misses"]}
    assert not compiled, f"compiled in the fresh process: {compiled}"
    assert all(s["hits"] >= 1 for s in stats.values()), stats


def test_without_the_cache_the_first_request_compiles(digits_bundle: Path, tmp_path: Path) -> None:
    # the control: the check above would see a compile if there were one
    stats = _first_request(_copy_shipped(digits_bundle, tmp_path / "bare", with_cache=False))
    assert stats and all(s["misses"] >= 1 and s["hits"] == 0 for s in stats.values()), stats


def test_the_server_warms_up_from_the_cache(digits_bundle: Path, tmp_path: Path) -> None:
    bundle = _copy_shipped(digits_bundle, tmp_path / "served")
    env = {**os.environ, "NUMBA_DEBUG_CACHE": "1"}
    log = tmp_path / "server.log"
    server = Server([sys.executable, str(bundle / "serve.py"), "--host", "127.0.0.1", "--port", "{port}"], log,
                    env=env)
    try:
        server.wait_ready(timeout=120)
        image = np.load(DIGITS_DIR / "val.npz")["image"][:1]
        body = {"inputs": [{"name": "image", "datatype": "UINT8", "shape": [1, 8, 8],
                            "data": image.ravel().tolist()}]}
        assert httpx.post(f"http://{server.url}/v2/models/digits/infer", json=body, timeout=30).status_code == 200
    finally:
        server.stop()
    text = log.read_text()
    assert "[cache] data loaded from" in text
    assert "[cache] data saved to" not in text, "the server compiled a kernel"
