"""What the response cache costs when it never hits: the miss path alone, and a server with it on vs off.

    python bench/cache_miss.py [--bundle build/digits-1.0.0] [--seconds 5] [--rounds 3] [--concurrency 16]

1. In process: `ResponseCache.key` + a missing `get` + `put` of the result, per request, for the digits
   request (8x8 uint8, three small outputs) and for a 224x224x3 uint8 image (a ResNet-sized input).
2. Over HTTP: the bundle's own `serve.py`, with `serving.cache` off and on (a copy of the bundle whose manifest
   says `cache: {max_entries: 1024}`, resealed), driven by `wrk` with a unique image in every request (0%
   hits: a counter written into the first pixels), in interleaved rounds. Prints req/s per round and the
   ratio of the medians, and the cache's own counters (hits must be 0). Needs `wrk`; only talks to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

from infc.bundle import content_hash
from infc_runtime.cache import ResponseCache
from infc_runtime.types import CacheConfig

_LUA = """counter = 0
init = function(args)
  counter = tonumber(args[1])
end
request = function()
  counter = counter + 1
  local a, b, c = counter % 256, math.floor(counter / 256) % 256, math.floor(counter / 65536) % 256
  local body = string.format('{"inputs":[{"name":"image","datatype":"UINT8","shape":[1,8,8],"data":[%d,%d,%d{rest}]}]}',
    a, b, c)
  return wrk.format("POST", nil, {["Content-Type"] = "application/json"}, body)
end
done = function(summary, latency, requests)
  io.write(string.format("RESULT %d %f\\n", summary.requests, summary.duration / 1e6))
end
"""


def micro(shape: tuple[int, ...], outputs: dict[str, np.ndarray], n: int = 20000) -> float:
    """Microseconds per miss: key, get, put (the cache kept at its entry bound, as on a long-running server)."""
    cache = ResponseCache(CacheConfig(max_entries=1024), "bench")
    rng = np.random.default_rng(0)
    requests = [{"image": rng.integers(0, 255, size=shape, dtype=np.uint8)} for _ in range(64)]
    started = time.perf_counter()
    for i in range(n):
        request = requests[i % 64]
        request["image"].flat[0] = i % 251  # unique enough: never a hit within 64 requests
        request["image"].flat[1] = i // 251 % 251
        t0 = time.perf_counter()
        key = cache.key(request)
        assert cache.get(key, t0) is None
        cache.put(key, outputs)
    return (time.perf_counter() - started) / n * 1e6


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def variant(bundle: Path, into: Path, cache: bool) -> Path:
    copy = shutil.copytree(bundle, into / ("on" if cache else "off"))
    if cache:
        manifest = json.loads((copy / "manifest.json").read_text())
        manifest["serving"]["cache"] = {"max_entries": 1024, "ttl_s": 600, "max_bytes": 64 << 20,
                                        "max_entry_bytes": 1 << 20}
        manifest["content_hash"] = content_hash(manifest)
        (copy / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return copy


def serve_round(bundle: Path, seconds: float, connections: int, workdir: Path) -> tuple[float, str]:
    port = _free_port()
    proc = subprocess.Popen([sys.executable, str(bundle / "serve.py"), "--host", "127.0.0.1", "--port", str(port),
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
        script = workdir / "unique.lua"
        script.write_text(_LUA.replace("{rest}", ",0" * 61))
        infer = f"{url}/v2/models/digits/infer"
        # warm-up from 0, the timed run from 2^23 on (the counter picks the first pixels): never the same request
        subprocess.run(["wrk", "-t1", f"-c{connections}", "-d1s", "-s", str(script), infer, "--", "0"],
                       capture_output=True, check=True, timeout=60)
        cpu = _cpu_seconds(proc.pid)
        out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "-s", str(script), infer, "--",
                              str(1 << 23)], capture_output=True, text=True, check=True, timeout=seconds + 60).stdout
        cpu = _cpu_seconds(proc.pid) - cpu
        metrics = httpx.get(f"{url}/metrics").text
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    requests, duration = (float(v) for v in next(ln for ln in out.splitlines() if ln.startswith("RESULT")).split()[1:])
    counters = " ".join(ln.split("{")[0] + " " + ln.rsplit(" ", 1)[1] for ln in metrics.splitlines()
                        if ln.startswith(("infc_cache_hits_total", "infc_cache_misses_total")))
    return requests / duration, cpu / requests * 1e6, counters


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process `pid` (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=Path("build/digits-1.0.0"))
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--no-http", action="store_true", help="only the in-process figures")
    args = parser.parse_args()
    small = {"probabilities": np.zeros((1, 10), np.float32), "indices": np.zeros((1, 3), np.int64),
             "labels": np.array([[b"three", b"eight", b"five"]], dtype=object)}
    print(f"miss path, digits request (8x8 uint8): {micro((1, 8, 8), small):.1f} us per request")
    print(f"miss path, 224x224x3 uint8 image: {micro((1, 224, 224, 3), small, n=2000):.1f} us per request")
    if args.no_http:
        return
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        bundles = {False: variant(args.bundle, work, False), True: variant(args.bundle, work, True)}
        rps: dict[bool, list[float]] = {False: [], True: []}
        cpu: dict[bool, list[float]] = {False: [], True: []}
        for r in range(args.rounds):
            for on in ((False, True) if r % 2 == 0 else (True, False)):  # alternate who goes first
                value, us, counters = serve_round(bundles[on], args.seconds, args.concurrency, work)
                rps[on].append(value)
                cpu[on].append(us)
                print(f"cache {'on ' if on else 'off'}: {value:.0f} req/s, {us:.0f} server CPU us/req {counters}",
                      flush=True)
    print(f"| cache | req/s ({args.rounds} rounds, {args.concurrency} connections, unique requests) "
          "| server CPU us/req |")
    print("|---|---|---|")
    for on in (False, True):
        print(f"| {'on, 0% hits' if on else 'off'} | {', '.join(f'{v:.0f}' for v in rps[on])} "
              f"| {', '.join(f'{v:.0f}' for v in cpu[on])} |")
    print(f"on/off, medians: req/s {statistics.median(rps[True]) / statistics.median(rps[False]):.3f}, "
          f"CPU per request {statistics.median(cpu[True]) / statistics.median(cpu[False]):.3f}")


if __name__ == "__main__":
    main()
