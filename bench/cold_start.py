"""Cold start: process start -> first successful response, with and without the shipped Numba cache.

    python bench/cold_start.py [--spec specs/digits/digits.yaml ...] [--bundle DIR ...] [--rounds 5]

Builds each spec (or takes built bundles), then, round after round, copies the
bundle's shipped files (its manifest's list) into a fresh folder, once with
`kernels/__pycache__` (Numba's cache, shipped when the build host is the target)
and once without, starts `python serve.py` there and polls until an inference
request answers 200. Reported per variant: seconds to ready (`/v2/health/ready`)
and to the first successful response, median and min over the rounds; the
variants alternate so machine load hits both alike. Not a test: numbers move
with the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SPECS = [ROOT / "specs" / "digits" / "digits.yaml"]
TEXT = "Return the absolute path of the file, resolving any symlinks."


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _copy(bundle: Path, dest: Path, cache: bool) -> Path:
    manifest = json.loads((bundle / "manifest.json").read_text())
    for rel in [*manifest["files"], *manifest.get("measurements", {}).get("files", {}), "manifest.json"]:
        if cache or "__pycache__" not in rel:
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(bundle / rel, dest / rel)
    return dest


def _request(manifest: dict[str, Any]) -> dict[str, Any]:
    """One row of zeros (numbers) or a sentence (bytes) per input, as KServe V2 JSON."""
    inputs = []
    for t in manifest["inputs"]:
        shape = [1, *(1 if d < 0 else d for d in t["shape"])]
        count = 1
        for d in shape:
            count *= d
        datatype = "BYTES" if t["dtype"] == "bytes" else t["dtype"].upper().replace("FLOAT", "FP")
        inputs.append({"name": t["name"], "datatype": datatype, "shape": shape,
                       "data": [TEXT] * count if datatype == "BYTES" else [0] * count})
    return {"inputs": inputs}


def _start_to_first_response(bundle: Path, timeout: float = 300) -> tuple[float, float]:
    manifest = json.loads((bundle / "manifest.json").read_text())
    port, body = _port(), _request(manifest)
    url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, str(bundle / "serve.py"), "--host", "127.0.0.1", "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    ready = None
    try:
        with httpx.Client(base_url=url, timeout=30) as client:
            while time.perf_counter() - start < timeout:
                if proc.poll() is not None:
                    raise RuntimeError(f"{bundle}: the server exited with {proc.returncode}")
                try:
                    if ready is None and client.get("/v2/health/ready").status_code == 200:
                        ready = time.perf_counter() - start
                    if ready is not None:
                        response = client.post(f"/v2/models/{manifest['name']}/infer", json=body)
                        if response.status_code == 200:
                            return ready, time.perf_counter() - start
                except httpx.TransportError:
                    pass
                time.sleep(0.01)
        raise RuntimeError(f"{bundle}: no response within {timeout} s")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def _measure(bundle: Path, rounds: int) -> dict[str, dict[str, list[float]]]:
    times: dict[str, dict[str, list[float]]] = {v: {"ready": [], "first": []} for v in ("cache", "no cache")}
    for _ in range(rounds):
        for variant in times:
            with tempfile.TemporaryDirectory(prefix="cold-") as tmp:
                ready, first = _start_to_first_response(_copy(bundle, Path(tmp) / bundle.name, variant == "cache"))
            times[variant]["ready"].append(ready)
            times[variant]["first"].append(first)
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", type=Path, action="append", help="spec to build (default: the digits example)")
    parser.add_argument("--bundle", type=Path, action="append", default=[], help="an already built bundle")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    bundles = list(args.bundle)
    with tempfile.TemporaryDirectory(prefix="cold-build-") as out:
        if args.spec or not bundles:
            from infc.build import build

            for spec in args.spec or DEFAULT_SPECS:
                path = build(spec, out, iterations=50, lock="ignore").path
                assert path is not None
                bundles.append(path)
        print("| bundle | Numba cache | files | ready s (median, min) | first response s (median, min) |")
        print("|---|---|---|---|---|")
        for bundle in bundles:
            manifest = json.loads((bundle / "manifest.json").read_text())
            cache = manifest.get("measurements", {}).get("kernel_cache", {})
            if not cache.get("shipped"):
                print(f"{bundle.name}: no shipped cache ({cache.get('reason', 'built before infc shipped one')})",
                      file=sys.stderr)
            for variant, t in _measure(bundle, args.rounds).items():
                files = len(cache.get("files", [])) if variant == "cache" else 0
                print(f"| {bundle.name} | {variant} | {files} | {statistics.median(t['ready']):.2f}, "
                      f"{min(t['ready']):.2f} | {statistics.median(t['first']):.2f}, {min(t['first']):.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
