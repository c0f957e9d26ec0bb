"""What the drift indicators cost the server: the monitor off, on at the default sample rate, and on every row.

    python bench/drift_cost.py [--spec specs/tabular/tabular.yaml] [--rounds 4] [--seconds 5] [--concurrency 32]

Builds the spec once (its lock reused), then serves three copies of the bundle, each with `--no-verify` (their
manifests are edited): `off` (monitor/reference.json left out of the manifest: no monitor), `on` (the reference
as built: the spec's sample rate, 0.1 by default) and `on, every row` (its sample rate set to 1). Each round
starts the three in turn (the order rotated per round), the server pinned to core 0, and drives it with `wrk`
on core 1 (N connections, one-row KServe V2 JSON requests from the spec's validation data, back to back).
Prints, per arm, the median over rounds of requests/s, latency percentiles and the server's CPU us per request,
and the ratios on/off. Needs `wrk` (Debian: `apt-get install wrk`). Only talks to 127.0.0.1.

`--handler N` measures the server in process instead, without sockets or a load generator: each arm in a fresh
interpreter (alternately, `--rounds` times) loads its bundle, warms up, and answers N one-row requests, 32 at a time
(`--concurrency`), by calling the ASGI app: the process's CPU us per request (event loop and worker thread) and
requests per second, medians and minimums over rounds (a shared machine only adds to either).

`--fold N` measures instead, in process, what one batch costs: `Pipeline.run_batch` of N one-row requests (the
validation rows) and `DriftMonitor.observe` of that batch at the built sample rate and at every row (medians of
2,000 calls, microseconds).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
from _machine import cpu_model
from peers import LOAD_CORE, Served, group_cpu_seconds

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = "monitor/reference.json"


def arms(bundle: Path, work: Path) -> dict[str, Path]:
    """Copies of `bundle`: without its reference, as built, and sampling every row."""
    out = {}
    for name, rate in (("off", None), ("on", 0.0), ("on, every row", 1.0)):
        copy = work / name.replace(", ", "-").replace(" ", "-")
        shutil.copytree(bundle, copy)
        manifest = json.loads((copy / "manifest.json").read_text())
        if rate is None:
            del manifest["files"][REFERENCE]
            (copy / REFERENCE).unlink()
        elif rate:
            reference = json.loads((copy / REFERENCE).read_text())
            reference["config"]["sample_rate"] = rate
            (copy / REFERENCE).write_text(json.dumps(reference))
        (copy / "manifest.json").write_text(json.dumps(manifest))
        out[name] = copy
    return out


def body(spec: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """A one-row request of the spec's first validation row."""
    data = np.load(spec.parent / _validation(spec))
    (tensor,) = manifest["inputs"]
    row = data[tensor["name"]][:1]
    if row.dtype.kind in "SO":
        value = row[0].decode() if isinstance(row[0], bytes) else str(row[0])
        return {"inputs": [{"name": tensor["name"], "shape": [1], "datatype": "BYTES", "data": [value]}]}
    types = {"u1": "UINT8", "f4": "FP32", "f8": "FP64", "i8": "INT64", "i4": "INT32"}
    return {"inputs": [{"name": tensor["name"], "shape": list(row.shape), "datatype": types[row.dtype.str[1:]],
                        "data": row.ravel().tolist()}]}


def _validation(spec: Path) -> str:
    for line in spec.read_text().splitlines():
        if line.strip().startswith("validation:"):
            return line.split(":", 1)[1].split("#")[0].strip()
    raise SystemExit(f"{spec}: no optimize.validation")


_LUA = """wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = [[{body}]]
done = function(summary, latency, requests)
  io.write(string.format("RESULT %d %f %f %f %f %d\\n", summary.requests, summary.duration / 1e6,
    latency:percentile(50) / 1e3, latency:percentile(99) / 1e3, latency:percentile(99.9) / 1e3,
    summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write))
end
"""


def drive(port: int, path: str, request: dict[str, Any], connections: int, seconds: float, work: Path,
          server: int) -> dict[str, float]:
    script = work / "post.lua"
    script.write_text(_LUA.replace("{body}", json.dumps(request)))
    url = f"http://127.0.0.1:{port}{path}"

    def wrk(duration: float) -> list[float]:
        out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{duration:g}s", "-s", str(script), url],
                             capture_output=True, text=True, check=True, timeout=duration + 60,
                             preexec_fn=lambda: os.sched_setaffinity(0, {LOAD_CORE})).stdout
        line = next(ln for ln in out.splitlines() if ln.startswith("RESULT"))
        return [float(v) for v in line.split()[1:]]

    wrk(1.0)  # connections and caches warm
    cpu = group_cpu_seconds(server)
    requests, duration, p50, p99, p999, errors = wrk(seconds)
    cpu_us = (group_cpu_seconds(server) - cpu) / max(1.0, requests) * 1e6
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    sums = {ln.split(" ")[0]: float(ln.rsplit(" ", 1)[1]) for ln in metrics.splitlines()
            if ln.startswith(("infc_batch_size_sum", "infc_batch_size_count"))}
    mean_batch = sum(v for k, v in sums.items() if "_sum" in k) / max(1.0, sum(v for k, v in sums.items()
                                                                                if "_count" in k))
    return {"rps": requests / duration, "p50": p50, "p99": p99, "p99.9": p999, "cpu_us": cpu_us, "errors": errors,
            "batch": mean_batch}


HANDLER = """\
import asyncio, json, sys, time
sys.path.insert(0, sys.argv[1])
import infc_runtime
from infc_runtime.app import create_app
from infc_runtime.pipeline import Pipeline

assert infc_runtime.__file__.startswith(sys.argv[1]), infc_runtime.__file__
pipeline = Pipeline.load(sys.argv[1])
n, concurrency = int(sys.argv[2]), int(sys.argv[3])
body = sys.argv[4].encode()
app = create_app(pipeline)
path = f"/v2/models/{pipeline.name}/infer"
scope = {"type": "http", "method": "POST", "path": path, "headers": [
    (b"host", b"localhost"), (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
    "client": ("127.0.0.1", 1), "http_version": "1.1", "scheme": "http", "query_string": b"", "root_path": ""}
statuses = []

async def receive():
    return {"type": "http.request", "body": body, "more_body": False}

async def send(message):
    if message["type"] == "http.response.start":
        statuses.append(message["status"])

async def client(count):
    for _ in range(count):
        await app(scope, receive, send)

async def main():
    async with app.router.lifespan_context(app):
        while not app.state.server.is_ready:
            await asyncio.sleep(0.01)
        await asyncio.gather(*(client(50) for _ in range(concurrency)))
        cpu, wall = time.process_time(), time.perf_counter()
        await asyncio.gather(*(client(n // concurrency) for _ in range(concurrency)))
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        done = n // concurrency * concurrency
        print(json.dumps({"cpu_us": cpu / done * 1e6, "rps": done / wall,
                          "rows": pipeline.drift.report()["rows_seen"] if pipeline.drift else 0}))

asyncio.run(main())
assert set(statuses) == {200}, set(statuses)
"""


def handler_cost(served: dict[str, Path], request: dict[str, Any], n: int, concurrency: int, rounds: int) -> None:
    """`--handler`: CPU us per request and requests/s of the server in process, the arms in turn per round."""
    results: dict[str, list[dict[str, float]]] = {}
    for round_ in range(rounds):
        names = list(served)
        names = names[round_ % len(names):] + names[:round_ % len(names)]
        for name in names:
            out = subprocess.run([sys.executable, "-c", HANDLER, str(served[name]), str(n), str(concurrency),
                                  json.dumps(request)], check=True, capture_output=True, text=True, timeout=120,
                                 preexec_fn=lambda: os.sched_setaffinity(0, {0})).stdout
            r = json.loads(out.strip().splitlines()[-1])
            results.setdefault(name, []).append(r)
            print(f"# round {round_ + 1} {name}: {r['cpu_us']:.1f} us/req, {r['rps']:.0f} req/s, "
                  f"{r['rows']} rows seen", file=sys.stderr)
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, nproc {os.cpu_count()}, {cpu_model()}, load "
          f"average {os.getloadavg()[0]:.2f}; in process, core 0, {rounds} rounds of {n} one-row requests, "
          f"{concurrency} at a time\n")
    print("| monitor | CPU us/req median | min | req/s median | max | CPU us/req per round |")
    print("|---|---:|---:|---:|---:|---|")
    for name, runs in results.items():
        cpu = [r["cpu_us"] for r in runs]
        rps = [r["rps"] for r in runs]
        print(f"| {name} | {statistics.median(cpu):.1f} | {min(cpu):.1f} | {statistics.median(rps):.0f} | "
              f"{max(rps):.0f} | {', '.join(f'{c:.0f}' for c in cpu)} |")
    def med(runs: list[dict[str, float]], key: str) -> float:
        return statistics.median(r[key] for r in runs)

    off = results["off"]
    for name in list(results)[1:]:
        runs = results[name]
        ratios = [a["cpu_us"] / b["cpu_us"] for a, b in zip(runs, off, strict=True)]
        lowest = min(r["cpu_us"] for r in runs) / min(r["cpu_us"] for r in off)
        print(f"\n{name}/off: CPU/req {med(runs, 'cpu_us') / med(off, 'cpu_us'):.3f} (medians), {lowest:.3f} "
              f"(minimums), {statistics.median(ratios):.3f} (median of the rounds' ratios); req/s "
              f"{med(runs, 'rps') / med(off, 'rps'):.3f} (medians), "
              f"{max(r['rps'] for r in runs) / max(r['rps'] for r in off):.3f} (maximums)")


def fold_cost(bundle: Path, spec: Path, rows: int) -> None:
    """`--fold`: microseconds per batch of `rows` one-row requests: the pipeline, and the monitor's fold."""
    from infc_runtime.drift import DriftMonitor
    from infc_runtime.pipeline import Pipeline

    pipeline = Pipeline.load(bundle)
    assert pipeline.drift is not None
    data = np.load(spec.parent / _validation(spec))
    (tensor,) = pipeline.inputs
    values = data[tensor.name]
    kind = object if values.dtype.kind == "S" else values.dtype
    requests = [{tensor.name: values[i % len(values):i % len(values) + 1].astype(kind)} for i in range(rows)]
    observed: list[Any] = []
    pipeline.run_batch(requests, observed=observed)
    reference = json.loads((bundle / REFERENCE).read_text())

    def median_us(call: Any, n: int = 2000) -> float:
        times = []
        for _ in range(n):
            start = time.perf_counter_ns()
            call()
            times.append(time.perf_counter_ns() - start)
        return statistics.median(times) / 1e3

    run = median_us(lambda: pipeline.run_batch(requests), 500)
    folds = {}
    for rate in (reference["config"]["sample_rate"], 1.0):
        monitor = DriftMonitor({**reference, "config": {**reference["config"], "sample_rate": rate}}, "m", "1")
        folds[rate] = median_us(lambda m=monitor: [m.observe(*pair) for pair in observed])
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, nproc {os.cpu_count()}, {cpu_model()}; "
          f"{pipeline.name}, a batch of {rows} one-row requests; medians\n")
    print(f"run_batch {run:.0f} us; " + "; ".join(f"observe at sample rate {rate:g} {us:.1f} us "
                                                   f"({us / run * 100:.2f}% of the batch)"
                                                   for rate, us in folds.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", type=Path, default=ROOT / "specs" / "tabular" / "tabular.yaml")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--handler", type=int, metavar="N", help="in process: N requests per arm and round")
    parser.add_argument("--fold", type=int, metavar="N", help="in process: one batch of N rows, pipeline vs fold")
    args = parser.parse_args()
    load_before = os.getloadavg()
    results: dict[str, list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="infc-drift-") as tmp:
        work = Path(tmp)
        subprocess.run([sys.executable, "-m", "infc", "build", str(args.spec), "-o", str(work / "out"),
                        "--latency-gate", "off", "-q"], check=True, stdout=sys.stderr)
        (bundle,) = (work / "out").iterdir()
        if args.fold:
            fold_cost(bundle, args.spec, args.fold)
            return
        manifest = json.loads((bundle / "manifest.json").read_text())
        request = body(args.spec, manifest)
        served = arms(bundle, work)
        if args.handler:
            handler_cost(served, request, args.handler, args.concurrency, args.rounds)
            return
        path = f"/v2/models/{manifest['name']}/infer"
        for round_ in range(args.rounds):
            names = list(served)
            names = names[round_ % len(names):] + names[:round_ % len(names)]
            for name in names:
                command = [sys.executable, str(served[name] / "serve.py"), "--log-level", "warning", "--no-verify"]
                with Served(command, "/v2/health/ready") as server:
                    r = drive(server.port, path, request, args.concurrency, args.seconds, work, server.proc.pid)
                results.setdefault(name, []).append(r)
                print(f"# round {round_ + 1} {name}: {r['rps']:.0f} req/s, {r['cpu_us']:.0f} us/req, "
                      f"{r['errors']:.0f} errors", file=sys.stderr)
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, nproc {os.cpu_count()}, {cpu_model()}, load "
          f"average before {load_before[0]:.2f}, after {os.getloadavg()[0]:.2f}; {manifest['name']}, "
          f"{args.rounds} rounds of {args.seconds:g} s, {args.concurrency} connections; medians over rounds\n")
    print("| monitor | req/s | p50 ms | p99 ms | p99.9 ms | server CPU us/req | mean batch | errors | "
          "req/s per round |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
    med = {name: {k: statistics.median(r[k] for r in runs) for k in ("rps", "p50", "p99", "p99.9", "cpu_us", "batch")}
           for name, runs in results.items()}
    for name, m in med.items():
        rounds = ", ".join(f"{r['rps']:.0f}" for r in results[name])
        print(f"| {name} | {m['rps']:.0f} | {m['p50']:.2f} | {m['p99']:.2f} | {m['p99.9']:.2f} | "
              f"{m['cpu_us']:.0f} | {m['batch']:.1f} | {sum(r['errors'] for r in results[name]):.0f} | {rounds} |")
    off = med["off"]
    for name in ("on", "on, every row"):
        m = med[name]
        pairs = list(zip(results[name], results["off"], strict=True))
        per_round = [a["rps"] / b["rps"] for a, b in pairs]
        cpu_round = [a["cpu_us"] / b["cpu_us"] for a, b in pairs]
        print(f"\n{name}/off: req/s {m['rps'] / off['rps']:.3f} (medians), {statistics.median(per_round):.3f} "
              f"(median of the rounds' ratios: {', '.join(f'{r:.2f}' for r in per_round)}); CPU/req "
              f"{m['cpu_us'] / off['cpu_us']:.3f} (medians), {statistics.median(cpu_round):.3f} (median of the "
              f"rounds' ratios)")


if __name__ == "__main__":
    main()
