"""Load-test a built bundle's server on loopback: dynamic batching on vs off, side by side.

    python bench/serve_load.py [--bundle build/digits-1.0.0] [--seconds 10] [--concurrency 32]

Starts the bundle's own `serve.py` twice on a free loopback port: once with the
spec's serving settings, once with `max_batch_size: 1` (no batching), drives each
with the same closed-loop load from `wrk` (N connections, each sending one-row
KServe V2 JSON requests back to back) and prints throughput and client-side
latency percentiles. Needs `wrk` (Debian: `apt-get install wrk`; a Python load
generator on the same 2 cores measures itself, not the server) and httpx.
Bounded in time; only talks to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _payload(manifest: dict[str, Any]) -> dict[str, Any]:
    dtypes = {"uint8": "UINT8", "float32": "FP32", "int64": "INT64", "int32": "INT32", "float64": "FP64"}
    inputs = []
    for t in manifest["inputs"]:
        shape = [1, *(1 if s < 0 else s for s in t["shape"])]
        inputs.append({"name": t["name"], "datatype": dtypes[t["dtype"]], "shape": shape,
                       "data": [1] * int(np.prod(shape))})
    return {"inputs": inputs}


_LUA = """wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = [[{body}]]
done = function(summary, latency, requests)
  io.write(string.format("RESULT %d %f %f %f %f\\n", summary.requests, summary.duration / 1e6,
    latency:percentile(50) / 1e3, latency:percentile(95) / 1e3, latency:percentile(99) / 1e3))
end
"""


def _wrk(url: str, body: dict[str, Any], seconds: float, connections: int, workdir: Path) -> list[float]:
    script = workdir / "post.lua"
    script.write_text(_LUA.replace("{body}", json.dumps(body)))
    out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "-s", str(script), url],
                         capture_output=True, text=True, check=True, timeout=seconds + 60).stdout
    line = next(ln for ln in out.splitlines() if ln.startswith("RESULT"))
    return [float(v) for v in line.split()[1:]]


def run(bundle: Path, serving: dict[str, Any], seconds: float, concurrency: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / bundle.name
        shutil.copytree(bundle, copy)
        manifest = json.loads((copy / "manifest.json").read_text())
        manifest["serving"].update(serving)
        (copy / "manifest.json").write_text(json.dumps(manifest))
        port = _free_port()
        proc = subprocess.Popen([sys.executable, str(copy / "serve.py"), "--host", "127.0.0.1", "--port", str(port),
                                 "--log-level", "warning"])
        url = f"http://127.0.0.1:{port}"
        try:
            for _ in range(600):
                try:
                    if httpx.get(f"{url}/v2/health/ready").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.1)
            body = _payload(manifest)
            infer = f"{url}/v2/models/{manifest['name']}/infer"
            _wrk(infer, body, 1.0, concurrency, Path(tmp))  # warm up connections and caches
            requests, duration, p50, p95, p99 = _wrk(infer, body, seconds, concurrency, Path(tmp))
            metrics = httpx.get(f"{url}/metrics").text
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    batches = [ln for ln in metrics.splitlines() if ln.startswith("infc_batch_size_") and "_bucket" not in ln]
    counts = {ln.split("{")[0]: float(ln.rsplit(" ", 1)[1]) for ln in batches}
    mean_batch = counts.get("infc_batch_size_sum", 0) / max(counts.get("infc_batch_size_count", 1), 1)
    return {"rps": requests / duration, "p50": p50, "p95": p95, "p99": p99, "mean_batch": mean_batch}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=Path("build/digits-1.0.0"))
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    results = {
        "batching (spec settings)": run(args.bundle, {}, args.seconds, args.concurrency),
        "no batching (max_batch_size 1)": run(args.bundle, {"max_batch_size": 1}, args.seconds, args.concurrency),
    }
    head = f"config ({args.concurrency} connections, {args.seconds:g} s)"
    print(f"| {head} | req/s | p50 ms | p95 ms | p99 ms | mean batch |")
    print("|---|---|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {r['rps']:.0f} | {r['p50']:.2f} | {r['p95']:.2f} | {r['p99']:.2f} | {r['mean_batch']:.1f} |")
    a, b = results.values()
    print(f"\nthroughput ratio batching / no batching: {a['rps'] / b['rps']:.2f}x")


if __name__ == "__main__":
    main()
