"""What tracing costs the server: the runtime before it, with it off, and on, in one run, rounds interleaved.

    python bench/tracing_cost.py [--before main] [--rounds 3] [--seconds 5] [--concurrency 1,32]

The model, bundle, load generator and core pinning are `bench/peers.py`'s (an
MLP 256->1024->1024->10, one-row KServe V2 JSON requests in a closed loop,
server on core 0, load on core 1). Three servers of the same bundle, each
started with `--no-verify` (the runtime files are swapped):

- `before`: the runtime of git revision `--before` (default `main`);
- `off`: this working tree's runtime, no OTEL_* variable set;
- `on`: the same with `OTEL_EXPORTER_OTLP_ENDPOINT` set to a sink on core 1 (an
  HTTP server that reads each OTLP/HTTP export and answers 200) and
  `OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf`: every request sampled, its 8
  spans (request, 6 stages, batch) made and exported by the SDK's batch
  processor from the server's process;
- `on 10%`: the same with `OTEL_TRACES_SAMPLER=parentbased_traceidratio` and
  `OTEL_TRACES_SAMPLER_ARG=0.1` (a tenth of the requests traced).

`--handler N` measures instead the request path alone, in process: `before`
and `off` alternately (`--rounds` each), each in a fresh interpreter that
imports that runtime, loads the bundle, and answers N one-row JSON requests in
turn by calling the ASGI app (no sockets, no load generator, and
`Pipeline.run_batch` answering zeros: the model's compute out of the measure):
CPU us per request (the process's, worker thread included), the median and the
minimum over rounds (a shared machine only adds to it), and off/before of both.

Each round starts each server in turn (the order rotates per round) and runs
every `--concurrency` cell against it. Prints, per server and concurrency, the
median over rounds of requests/s and of server CPU us/request, then the ratios
off/before, on/off and on 10%/off of both (the machine is shared: CPU per request moves
less with the neighbours than requests/s does). Only talks to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _machine import cpu_model
from peers import LOAD_CORE, MODEL_NAME, ROOT, Served, build_bundle, free_port, load

SINK = """\
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class Sink(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass

ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Sink).serve_forever()
"""


def with_runtime(bundle: Path, rev: str, dest: Path) -> Path:
    """A copy of `bundle` whose runtime is `runtime/infc_runtime` at git revision `rev`."""
    shutil.copytree(bundle, dest)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "runtime/infc_runtime"], check=True,
                             capture_output=True).stdout
    unpacked = dest.parent / f"{dest.name}-src"
    unpacked.mkdir()
    subprocess.run(["tar", "-x", "-C", str(unpacked)], input=archive, check=True)
    shutil.rmtree(dest / "infc_runtime")
    shutil.copytree(unpacked / "runtime" / "infc_runtime", dest / "infc_runtime")
    return dest


HANDLER = """\
import asyncio, json, sys, time
sys.path.insert(0, sys.argv[1])
import numpy as np
import infc_runtime
from infc_runtime.app import create_app
from infc_runtime.pipeline import Pipeline

assert infc_runtime.__file__.startswith(sys.argv[1]), infc_runtime.__file__
pipeline = Pipeline.load(sys.argv[2])
out = {spec.name: np.zeros((1, 10), np.float32) for spec in pipeline.outputs}
# the model's compute (and onnxruntime's spinning threads) out of the measure: what is left is the request path
pipeline.run_batch = lambda requests, timings=None, instance=0: [dict(out) for _ in requests]
app = create_app(pipeline)
n = int(sys.argv[3])
row = np.random.default_rng(1).standard_normal(256).astype(np.float32)
body = json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 256], "data": row.tolist()}]}).encode()
scope = {"type": "http", "method": "POST", "path": "/v2/models/mlp/infer", "headers": [
    (b"host", b"localhost"), (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
    "client": ("127.0.0.1", 1), "http_version": "1.1", "scheme": "http", "query_string": b"", "root_path": ""}
statuses = []

async def receive():
    return {"type": "http.request", "body": body, "more_body": False}

async def send(message):
    if message["type"] == "http.response.start":
        statuses.append(message["status"])

async def main():
    async with app.router.lifespan_context(app):
        while not app.state.server.is_ready:
            await asyncio.sleep(0.01)
        for _ in range(500):
            await app(scope, receive, send)
        cpu = time.process_time()
        for _ in range(n):
            await app(scope, receive, send)
        print((time.process_time() - cpu) / n * 1e6)

asyncio.run(main())
assert set(statuses) == {200}, set(statuses)
"""


def handler_cost(before: Path, current: Path, bundle: Path, n: int, rounds: int) -> None:
    """`--handler`: CPU us per request of the request path in process, `before` vs `off`, alternately."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    costs: dict[str, list[float]] = {"before": [], "off": []}
    for round_ in range(rounds):
        for name, runtime in (("before", before), ("off", current))[::1 if round_ % 2 == 0 else -1]:
            out = subprocess.run([sys.executable, "-c", HANDLER, str(runtime), str(bundle), str(n)], env=env,
                                 check=True, capture_output=True, text=True, timeout=600).stdout
            costs[name].append(float(out.strip().splitlines()[-1]))
            print(f"# round {round_ + 1} {name}: {costs[name][-1]:.1f} us/req", file=sys.stderr)
    b, off = statistics.median(costs["before"]), statistics.median(costs["off"])
    low_b, low_off = min(costs["before"]), min(costs["off"])
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, nproc {os.cpu_count()}, {cpu_model()}, load "
          f"average {os.getloadavg()[0]:.2f}; {rounds} rounds of {n} requests in process, medians\n")
    print(f"before {b:.1f} us/req ({', '.join(f'{c:.0f}' for c in costs['before'])}), "
          f"off {off:.1f} us/req ({', '.join(f'{c:.0f}' for c in costs['off'])}): off/before {off / b:.3f} "
          f"(medians), {low_off / low_b:.3f} (minimums)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default="main", metavar="REV", help="the runtime to compare with (default main)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds per cell (default 5)")
    parser.add_argument("--concurrency", default="1,32", help="connections, comma-separated (default 1,32)")
    parser.add_argument("--handler", type=int, metavar="N", help="the request path in process, N requests a round")
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    path = f"/v2/models/{MODEL_NAME}/infer"
    results: dict[tuple[str, int], list[dict[str, Any]]] = {}
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="infc-tracing-") as tmp:
        work = Path(tmp)
        current, _ = build_bundle(work, None)
        before = with_runtime(current, args.before, work / "before")
        if args.handler:
            handler_cost(before, current, current, args.handler, args.rounds)
            return
        env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
        sink_port = free_port()
        sink = subprocess.Popen([sys.executable, "-c", SINK, str(sink_port)],
                                preexec_fn=lambda: os.sched_setaffinity(0, {LOAD_CORE}))
        traced = {**env, "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{sink_port}",
                  "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf", "OTEL_SERVICE_NAME": "bench"}
        sampled = {**traced, "OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.1"}
        arms = {"before": (before, env), "off": (current, env), "on": (current, traced), "on 10%": (current, sampled)}
        try:
            for round_ in range(args.rounds):
                names = list(arms)
                names = names[round_ % len(names):] + names[:round_ % len(names)]
                for name in names:
                    bundle, arm_env = arms[name]
                    command = [sys.executable, str(bundle / "serve.py"), "--log-level", "warning", "--no-verify"]
                    with Served(command, "/v2/health/ready", arm_env) as served:
                        for level in levels:
                            r = load(served.port, path, "json", level, args.seconds, served.proc.pid)
                            results.setdefault((name, level), []).append(r)
                            print(f"# round {round_ + 1} {name} c={level}: {r['rps']:.0f} req/s, "
                                  f"{r['cpu_us']:.0f} us/req, {r['errors']} errors", file=sys.stderr)
        finally:
            sink.terminate()
            sink.wait()
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, nproc {os.cpu_count()}, {cpu_model()}, "
          f"load average before {load_before[0]:.2f}, after {os.getloadavg()[0]:.2f}; {args.rounds} rounds of "
          f"{args.seconds:g} s per cell; medians over rounds\n")
    print("| runtime | conc | req/s | p50 ms | p99 ms | server CPU us/req | errors |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    med: dict[tuple[str, int], dict[str, float]] = {}
    for (name, level), runs in results.items():
        med[name, level] = {k: statistics.median(r[k] for r in runs) for k in ("rps", "p50", "p99", "cpu_us")}
        m = med[name, level]
        print(f"| {name} | {level} | {m['rps']:.0f} | {m['p50']:.2f} | {m['p99']:.2f} | {m['cpu_us']:.0f} | "
              f"{sum(r['errors'] for r in runs)} |")
    print()
    for level in levels:
        b, off, on, tenth = (med[name, level] for name in ("before", "off", "on", "on 10%"))
        print(f"c={level}: off/before req/s {off['rps'] / b['rps']:.3f}, CPU/req {off['cpu_us'] / b['cpu_us']:.3f}; "
              f"on/off req/s {on['rps'] / off['rps']:.3f}, CPU/req {on['cpu_us'] / off['cpu_us']:.3f}; "
              f"on 10%/off req/s {tenth['rps'] / off['rps']:.3f}, CPU/req {tenth['cpu_us'] / off['cpu_us']:.3f}")


if __name__ == "__main__":
    main()
