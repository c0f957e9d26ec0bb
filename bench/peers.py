"""infc's server side by side with its peers on one model: requests/s and latency under a closed loop.

    python bench/peers.py [--seconds 10] [--concurrency 1,16,64] [--formats json,binary]
        [--servers infc,fastapi,bare] [--runtime-from REV] [--hide httptools,uvloop,orjson] [--label TEXT]
        [--peer-python triton=PATH,mlserver=PATH,bentoml=PATH] [--serve-args ARGS] [--header 'NAME: VALUE']...

The model is an MLP 256->1024->1024->10 (float32, random weights from a fixed
seed) made here with onnx.helper. Servers, each started on a free loopback port
and pinned to core 0:

- `infc`: a bundle built by the compiler from a spec written to a temporary
  folder (`serving: {max_batch_size: 32, max_queue_delay_ms: 2}`, no
  quantization, latency gate off), started with the bundle's own `serve.py`.
  `--runtime-from REV` replaces the bundle's runtime with this repository's
  `runtime/infc_runtime` at git revision REV (started with `--no-verify`), and
  `--hide MODULES` makes those modules unimportable in the infc server: with
  both, the "before" of a before/after comparison as a bundle of that revision
  would run (its requirements did not hold httptools, uvloop or orjson).
  `--serve-args` adds options to its command line and each `--header` a
  header to its requests: with INFC_API_KEYS in the environment, the cost of
  API keys (`--header 'Authorization: Bearer KEY'`), of `--log-format json`
  and of `--audit-log FILE` against a run without them.
- `fastapi`: by hand, FastAPI + one onnxruntime session (one thread), no
  batching, uvicorn's defaults at log level warning.
- `bare`: an ASGI responder answering `{}` under uvicorn (httptools, uvloop, no
  access log): the HTTP floor of this machine, and the load generator's own
  ceiling.
- `triton` (Triton through PyTriton), `mlserver` (MLServer 1.7), `bentoml`: each
  from the interpreter of its own virtual environment, named with
  `--peer-python NAME=PATH,...` (they conflict with one another), serving the
  same ONNX file on `/v2/models/mlp/infer` from one onnxruntime session with one
  thread, batching as close to infc's as each allows (`bench/_peer_servers.py`
  says how; the table's notes repeat it). A peer not given, or whose
  interpreter cannot import it, is skipped with a line (this script installs
  nothing); a request format a peer cannot take (one probe request before the
  cell) is a row of "n/a" with the reason.

The load generator (a process pinned to core 1) keeps N connections, each
sending one request as soon as the previous answer is complete (closed loop),
on raw sockets under uvloop when installed: request bytes are built once, a
response is parsed only for its status and Content-Length. Requests are one row
of KServe V2: `json` (data in the JSON), `binary` (the binary tensor extension,
input and output). After a one-second warm-up per cell it counts answers for
`--seconds`; any status other than 200, or a connection lost, is an error.
Also printed: in-process onnxruntime at batch 32 on one thread (rows/s), the
model's own ceiling. Prints a markdown table on stdout. Only talks to 127.0.0.1.

"server CPU us/req" is the user and system CPU time of the server's whole
process group (its workers too) over the cell, warm-up included, per answer:
the cost per request on one core, which a machine shared with other jobs
inflates much less than it cuts requests/s.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np
from _machine import cpu_model
from _peer_servers import PEERS, SETTINGS, Peer, parse_peer_python, prepare

ROOT = Path(__file__).resolve().parents[1]
SERVER_CORE, LOAD_CORE = 0, 1
MODEL_NAME = "mlp"
DIMS = (256, 1024, 1024, 10)

SPEC = """\
name: mlp
version: 1.0.0
model: mlp.onnx
target: {hardware: x86, isa: native}
inputs:
  - {name: x, dtype: float32, shape: [256]}
optimize: {quantize: none}
serving: {max_batch_size: 32, max_queue_delay_ms: 2}
"""

FASTAPI_SERVER = '''\
import json, sys
import numpy as np, onnxruntime as ort, uvicorn
from fastapi import FastAPI, Request, Response

options = ort.SessionOptions()
options.intra_op_num_threads = options.inter_op_num_threads = 1
session = ort.InferenceSession(sys.argv[1], options, providers=["CPUExecutionProvider"])
app = FastAPI()


@app.post("/v2/models/mlp/infer")
async def infer(request: Request) -> Response:
    body = await request.body()
    length = request.headers.get("inference-header-content-length")
    header = json.loads(body[: int(length)] if length else body)
    tensor = header["inputs"][0]
    if length:
        x = np.frombuffer(body[int(length):], dtype=np.float32).reshape(tensor["shape"])
    else:
        x = np.asarray(tensor["data"], dtype=np.float32).reshape(tensor["shape"])
    y = session.run(None, {"x": x})[0]
    out = {"name": "y", "datatype": "FP32", "shape": list(y.shape)}
    doc = {"model_name": "mlp", "model_version": "1", "outputs": [out]}
    if header.get("parameters", {}).get("binary_data_output"):
        raw = y.astype("<f4").tobytes()
        out["parameters"] = {"binary_data_size": len(raw)}
        head = json.dumps(doc).encode()
        return Response(head + raw, media_type="application/octet-stream",
                        headers={"Inference-Header-Content-Length": str(len(head))})
    out["data"] = y.ravel().tolist()
    return Response(json.dumps(doc), media_type="application/json")


@app.get("/v2/health/ready")
async def ready() -> dict:
    return {"ready": True}


uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning")
'''

BARE_SERVER = '''\
import sys
import uvicorn

HEADERS = [(b"content-type", b"application/json"), (b"content-length", b"2")]


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    more = True
    while more:
        more = (await receive()).get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": b"{}"})


uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning", access_log=False,
            http="httptools", loop="uvloop", lifespan="on")
'''


# -- the model and the servers -------------------------------------------------------


def make_model(path: Path) -> None:
    """The MLP, Gemm + Relu layers, weights from seed 0."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes, inits, prev = [], [], "x"
    for i, (n_in, n_out) in enumerate(zip(DIMS, DIMS[1:], strict=False)):
        w = (rng.standard_normal((n_in, n_out)) / np.sqrt(n_in)).astype(np.float32)
        b = (rng.standard_normal(n_out) * 0.01).astype(np.float32)
        inits += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(b, f"b{i}")]
        last = i == len(DIMS) - 2
        out = "y" if last else f"h{i}"
        nodes.append(helper.make_node("Gemm", [prev, f"w{i}", f"b{i}"], [out if last else f"g{i}"]))
        if not last:
            nodes.append(helper.make_node("Relu", [f"g{i}"], [out]))
        prev = out
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", DIMS[0]])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", DIMS[-1]])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)


def build_bundle(work: Path, runtime_from: str | None) -> tuple[Path, list[str]]:
    """The infc bundle of the MLP, and the extra serve.py options it needs."""
    spec_dir = work / "spec"
    spec_dir.mkdir()
    make_model(spec_dir / "mlp.onnx")
    (spec_dir / "mlp.yaml").write_text(SPEC)
    subprocess.run([sys.executable, "-m", "infc", "build", str(spec_dir / "mlp.yaml"), "-o", str(work / "out"),
                    "--no-lock", "--latency-gate", "off", "-q"], check=True, cwd=work, stdout=sys.stderr)
    bundle = work / "out" / "mlp-1.0.0"
    if runtime_from is None:
        return bundle, []
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", runtime_from, "runtime/infc_runtime"],
                             check=True, capture_output=True).stdout
    old = work / "old"
    old.mkdir()
    subprocess.run(["tar", "-x", "-C", str(old)], input=archive, check=True)
    shutil.rmtree(bundle / "infc_runtime")
    shutil.copytree(old / "runtime" / "infc_runtime", bundle / "infc_runtime")
    return bundle, ["--no-verify"]


def hiding_path(work: Path, modules: list[str]) -> Path:
    """A folder whose packages shadow `modules` with an ImportError (put first on PYTHONPATH)."""
    shims = work / "hide"
    for name in modules:
        (shims / name).mkdir(parents=True)
        (shims / name / "__init__.py").write_text(f"raise ImportError('{name} hidden by bench/peers.py --hide')\n")
    return shims


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Served:
    """A server process pinned to `SERVER_CORE`, stopped on exit."""

    def __init__(self, command: list[str], ready_path: str, env: dict[str, str] | None = None,
                 cwd: Path | None = None, ready_within: float = 120) -> None:
        self.port = free_port()
        # its output goes to stderr: stdout is the table
        self.proc = subprocess.Popen([*command, "--port", str(self.port)] if "{port}" not in command else
                                     [c.replace("{port}", str(self.port)) for c in command],
                                     env=env, cwd=cwd, stdout=sys.stderr, start_new_session=True,
                                     preexec_fn=lambda: os.sched_setaffinity(0, {SERVER_CORE}))
        deadline = time.monotonic() + ready_within
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.__exit__()
                raise RuntimeError(f"{command[:3]} exited with {self.proc.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                    sock.sendall(f"GET {ready_path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
                    if sock.recv(64).startswith(b"HTTP/1.1 200"):
                        return
            except OSError:
                pass
            time.sleep(0.2)
        self.__exit__()
        raise RuntimeError(f"{command[:3]} not ready within {ready_within:g} s")

    def __enter__(self) -> Served:
        return self

    def __exit__(self, *exc: object) -> None:
        # the whole process group: peers start servers of their own (tritonserver, MLServer's and BentoML's workers)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=30)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()


# -- requests and the load generator -------------------------------------------------


def request_bytes(path: str, fmt: str, extra_headers: tuple[str, ...] = ()) -> bytes:
    """One HTTP/1.1 request of one row, built once (with `extra_headers`, `Name: value` each)."""
    row = np.random.default_rng(1).standard_normal(DIMS[0]).astype(np.float32)
    tensor: dict[str, Any] = {"name": "x", "datatype": "FP32", "shape": [1, DIMS[0]]}
    headers = ["Host: localhost", *extra_headers]
    if fmt == "json":
        tensor["data"] = row.tolist()
        body = json.dumps({"inputs": [tensor]}).encode()
        headers.append("Content-Type: application/json")
    else:
        raw = row.astype("<f4").tobytes()
        tensor["parameters"] = {"binary_data_size": len(raw)}
        head = json.dumps({"inputs": [tensor], "parameters": {"binary_data_output": True}}).encode()
        body = head + raw
        headers += ["Content-Type: application/octet-stream", f"Inference-Header-Content-Length: {len(head)}"]
    headers.append(f"Content-Length: {len(body)}")
    return (f"POST {path} HTTP/1.1\r\n" + "".join(h + "\r\n" for h in headers) + "\r\n").encode() + body


def probe(port: int, request: bytes) -> str | None:
    """One request as the load generator sends it: None if the answer is a 200 with a Content-Length (what the
    load generator reads), else why not."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(request)
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = sock.recv(65536)
            if not chunk:
                return "connection closed without an answer"
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    status = head.split(b"\r\n", 1)[0].decode(errors="replace")
    if not status.startswith("HTTP/1.1 200"):
        return f"answered {status!r}: {body[:120].decode(errors='replace')!r}"
    if b"\r\ncontent-length:" not in head.lower():
        return "answered without a Content-Length (the load generator reads only those)"
    return None


class _Client(asyncio.Protocol):
    """One connection of the closed loop: send, read the whole answer, send again until the end."""

    def __init__(self, request: bytes, run: _Run) -> None:
        self.request, self.run = request, run
        self.buffer = bytearray()
        self.need = -1
        self.status = 0
        self.sent = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: Any = transport
        self.send()

    def send(self) -> None:
        self.buffer.clear()
        self.need = -1
        self.sent = time.perf_counter()
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.need < 0:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buffer[:end]).lower()
            self.status = int(head[9:12])
            at = head.find(b"\r\ncontent-length:")
            stop = head.find(b"\r\n", at + 2)
            self.need = end + 4 + int(head[at + 17 : stop if stop > 0 else len(head)])
        if len(self.buffer) < self.need:
            return
        now = time.perf_counter()
        self.run.answered(now - self.sent, self.status, now)
        if now < self.run.end:
            self.send()
        else:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if time.perf_counter() < self.run.end:
            self.run.errors += 1
        self.run.closed()


class _Run:
    def __init__(self, start: float, end: float, connections: int, loop: asyncio.AbstractEventLoop) -> None:
        self.start, self.end = start, end
        self.latencies: list[float] = []
        self.errors = 0
        self.total = 0  # answers, warm-up included (what the server's CPU time was spent on)
        self.open = connections
        self.done = loop.create_future()

    def answered(self, seconds: float, status: int, now: float) -> None:
        self.total += 1
        if self.start <= now < self.end:
            self.latencies.append(seconds)
            if status != 200:
                self.errors += 1

    def closed(self) -> None:
        self.open -= 1
        if self.open == 0 and not self.done.done():
            self.done.set_result(None)


async def _drive(port: int, request: bytes, connections: int, seconds: float) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    start = time.perf_counter() + 1.0  # warm-up
    run = _Run(start, start + seconds, connections, loop)
    for _ in range(connections):
        await loop.create_connection(lambda: _Client(request, run), "127.0.0.1", port)
    await asyncio.wait_for(run.done, seconds + 60)
    lat = np.sort(np.array(run.latencies)) * 1e3
    pct = {f"p{q:g}": float(np.percentile(lat, q)) if len(lat) else float("nan") for q in (50, 95, 99, 99.9)}
    return {"rps": len(lat) / seconds, **pct, "errors": run.errors, "answers": len(lat), "total": run.total}


def load(port: int, path: str, fmt: str, connections: int, seconds: float, server: int | None = None,
         headers: tuple[str, ...] = ()) -> dict[str, Any]:
    """Run the closed loop in a process pinned to `LOAD_CORE`; its results. With `server` (the process group
    of the server), also `cpu_us`: the server's CPU time per answer, warm-up included."""
    before = group_cpu_seconds(server) if server is not None else 0.0
    out = subprocess.run([sys.executable, __file__, "_load", str(port), path, fmt, str(connections), str(seconds),
                          json.dumps(headers)],
                         capture_output=True, text=True, check=True, timeout=seconds + 120,
                         preexec_fn=lambda: os.sched_setaffinity(0, {LOAD_CORE}))
    result: dict[str, Any] = json.loads(out.stdout)
    if server is not None:
        result["cpu_us"] = (group_cpu_seconds(server) - before) / max(1, result["total"]) * 1e6
    return result


def group_cpu_seconds(group: int) -> float:
    """User and system CPU seconds of every live process in process group `group` (a server and its workers)."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        if int(fields[2]) == group:  # pgrp; utime and stime follow at 11 and 12
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def _load_main(argv: list[str]) -> None:
    port, path, fmt, connections, seconds = int(argv[0]), argv[1], argv[2], int(argv[3]), float(argv[4])
    headers = tuple(json.loads(argv[5])) if len(argv) > 5 else ()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    print(json.dumps(asyncio.run(_drive(port, request_bytes(path, fmt, headers), connections, seconds))))


# -- the table -----------------------------------------------------------------------


def start_peer(name: str, peer_python: dict[str, str], model: Path, work: Path,
               notes: list[str]) -> tuple[Served, Peer] | None:
    """The peer started and ready, or None with a line in `notes` saying why it is skipped."""
    if name not in peer_python:
        notes.append(f"{name}: skipped, no interpreter given (`--peer-python {name}=PATH`)")
        return None
    try:
        peer = prepare(name, peer_python[name], model, work, dict(os.environ))
        served = Served(peer.command, peer.ready_path, peer.env, cwd=peer.cwd, ready_within=300)
    except RuntimeError as exc:
        notes.append(f"{name}: skipped, {exc}")
        return None
    notes.append(f"{name} ({peer.versions}): {SETTINGS[name]}")
    return served, peer


def ort_ceiling(model: Path, seconds: float) -> float:
    """Rows/s of in-process onnxruntime at batch 32, one thread, on `SERVER_CORE`."""
    import onnxruntime as ort

    os.sched_setaffinity(0, {SERVER_CORE})
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(2).standard_normal((32, DIMS[0])).astype(np.float32)
    for _ in range(20):
        session.run(None, {"x": x})
    runs, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        session.run(None, {"x": x})
        runs += 1
    rate = 32 * runs / (time.perf_counter() - started)
    os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))
    return rate


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_load":
        _load_main(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per cell (default 10)")
    parser.add_argument("--concurrency", default="1,16,64", help="connections, comma-separated (default 1,16,64)")
    parser.add_argument("--formats", default="json,binary", help="json and/or binary (default both)")
    parser.add_argument("--servers", default="infc,fastapi,bare", help="which servers (default infc,fastapi,bare)")
    parser.add_argument("--runtime-from", metavar="REV", help="serve the bundle with the runtime of git revision REV")
    parser.add_argument("--hide", default="", metavar="MODULES", help="modules the infc server cannot import")
    parser.add_argument("--label", default="", help="a name for this run in the table (default: the server's)")
    parser.add_argument("--serve-args", default="", metavar="ARGS",
                        help="more options of the infc server (shell words: '--log-format json --audit-log F')")
    parser.add_argument("--header", action="append", default=[], metavar="'NAME: VALUE'",
                        help="a header every request of the infc server carries (repeatable; e.g. Authorization)")
    parser.add_argument("--peer-python", default="", metavar="NAME=PATH,...",
                        help=f"the interpreter of each peer's own environment, NAME one of {', '.join(PEERS)}")
    args = parser.parse_args()
    if len(os.sched_getaffinity(0)) < 2:
        sys.exit("needs two cores (server on core 0, load on core 1)")
    levels = [int(c) for c in args.concurrency.split(",")]
    formats = args.formats.split(",")
    servers = args.servers.split(",")
    infer_path = f"/v2/models/{MODEL_NAME}/infer"
    peer_python = parse_peer_python(args.peer_python)
    rows: list[tuple[str, str, int, dict[str, Any] | str]] = []
    notes: list[str] = []
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="infc-peers-") as tmp:
        work = Path(tmp)
        bundle, extra = build_bundle(work, args.runtime_from)
        model = bundle / "model.onnx"
        hidden = [m for m in args.hide.split(",") if m]
        env = dict(os.environ)
        if hidden:
            env["PYTHONPATH"] = os.pathsep.join([str(hiding_path(work, hidden)), env.get("PYTHONPATH", "")])
        for server in servers:
            if server == "infc":
                command = [sys.executable, str(bundle / "serve.py"), "--log-level", "warning", *extra,
                           *shlex.split(args.serve_args)]
                served = Served(command, "/v2/health/ready", env)
                path = infer_path
            elif server == "fastapi":
                script = work / "fastapi_server.py"
                script.write_text(FASTAPI_SERVER)
                served = Served([sys.executable, str(script), str(model), "{port}"], "/v2/health/ready")
                path = infer_path
            elif server == "bare":
                script = work / "bare_server.py"
                script.write_text(BARE_SERVER)
                served = Served([sys.executable, str(script), "-", "{port}"], "/")
                path = infer_path
            elif server in PEERS:
                started = start_peer(server, peer_python, model, work, notes)
                if started is None:
                    continue
                served, peer = started
                path = infer_path
            else:
                sys.exit(f"unknown server {server!r}")
            name = args.label or server if server == "infc" else server
            headers = tuple(args.header) if server == "infc" else ()
            with served:
                for fmt in formats:
                    why = peer.not_applicable.get(fmt) if server in PEERS else None
                    why = why or probe(served.port, request_bytes(path, fmt, headers))
                    if why:
                        rows += [(name, fmt, level, why) for level in levels]
                        print(f"# {name} {fmt}: {why}", file=sys.stderr)
                        continue
                    for level in levels:
                        result = load(served.port, path, fmt, level, args.seconds, served.proc.pid, headers)
                        rows.append((name, fmt, level, result))
                        print(f"# {name} {fmt} c={level}: {result['rps']:.0f} req/s", file=sys.stderr)
        ceiling = ort_ceiling(model, min(args.seconds, 5.0))
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, nproc {os.cpu_count()}, {cpu_model()}, "
          f"load average before {load_before[0]:.2f} (1 min), after {os.getloadavg()[0]:.2f}; "
          f"server on core {SERVER_CORE}, load on core {LOAD_CORE}; {args.seconds:g} s per cell\n")
    print("| server | request | conc | req/s | p50 ms | p95 ms | p99 ms | p99.9 ms | errors | server CPU us/req |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, fmt, level, r in rows:
        if isinstance(r, str):
            print(f"| {name} | {fmt} | {level} | n/a | n/a | n/a | n/a | n/a | n/a | n/a |")
            continue
        print(f"| {name} | {fmt} | {level} | {r['rps']:.0f} | {r['p50']:.2f} | {r['p95']:.2f} | {r['p99']:.2f} | "
              f"{r['p99.9']:.2f} | {r['errors']} | {r['cpu_us']:.0f} |")
    print(f"\nin-process onnxruntime, batch 32, one thread: {ceiling:.0f} rows/s")
    for name, fmt, why in sorted({(n, f, r) for n, f, _, r in rows if isinstance(r, str)}):
        notes.append(f"{name} {fmt}: {why}")
    for line in notes:
        print(f"- {line}")
    print(textwrap.dedent("""
        bare: an ASGI responder answering `{}` (uvicorn, httptools, uvloop): the HTTP floor and the load
        generator's own ceiling."""))


if __name__ == "__main__":
    main()
