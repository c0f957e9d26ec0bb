"""KServe V2 over gRPC vs HTTP (JSON and binary tensors), same bundle, same server process, side by side.

    python bench/grpc_vs_http.py [--bundle build/digits-1.0.0] [--seconds 5] [--concurrency 1,16,64]
        [--server-cpu 0] [--client-cpu 1]

Starts the bundle's own `serve.py --grpc-port` on free loopback ports, pinned to
`--server-cpu`; this process (the load generator) pins itself to
`--client-cpu`. For each concurrency N it runs a closed loop of N workers, each
sending one-row requests back to back for `--seconds`, three ways: HTTP with
JSON tensors, HTTP with binary tensors (the binary tensor extension, as
`tritonclient.http` sends by default; aiohttp, one keep-alive connection per
worker) and gRPC (`ModelInfer` with `raw_input_contents`, as `tritonclient.grpc`
sends; grpc.aio, one channel). Prints a markdown table: requests/s,
p50/p99/p99.9 latency in ms, errors. The load generator is Python on one core:
at high concurrency it may be the bound, and it is the same kind of client for
every protocol. Needs aiohttp and tritonclient[grpc] (for the message types).
Only talks to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import numpy as np
from tritonclient.grpc import service_pb2, service_pb2_grpc

DATATYPES = {"uint8": "UINT8", "float32": "FP32", "int64": "INT64", "int32": "INT32", "float64": "FP64"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _inputs(manifest: dict[str, Any]) -> list[tuple[str, str, list[int], np.ndarray]]:
    """(name, datatype, shape, one-row array) per model input."""
    rng = np.random.default_rng(0)
    out = []
    for t in manifest["inputs"]:
        shape = [1, *(1 if s < 0 else s for s in t["shape"])]
        array = (rng.integers(0, 255, size=shape) if t["dtype"] == "uint8" else rng.random(shape)).astype(t["dtype"])
        out.append((t["name"], DATATYPES[t["dtype"]], shape, array))
    return out


def _http_json(inputs: list[tuple[str, str, list[int], np.ndarray]]) -> tuple[bytes, dict[str, str]]:
    body = {"inputs": [{"name": n, "datatype": d, "shape": s, "data": a.ravel().tolist()} for n, d, s, a in inputs]}
    return json.dumps(body).encode(), {"Content-Type": "application/json"}


def _http_binary(inputs: list[tuple[str, str, list[int], np.ndarray]]) -> tuple[bytes, dict[str, str]]:
    header = json.dumps({
        "inputs": [{"name": n, "datatype": d, "shape": s, "parameters": {"binary_data_size": a.nbytes}}
                   for n, d, s, a in inputs],
        "parameters": {"binary_data_output": True},
    }).encode()
    body = header + b"".join(a.tobytes() for *_, a in inputs)
    return body, {"Inference-Header-Content-Length": str(len(header)), "Content-Type": "application/octet-stream"}


def _grpc_request(model: str, inputs: list[tuple[str, str, list[int], np.ndarray]]) -> Any:
    request = service_pb2.ModelInferRequest(model_name=model)
    for name, datatype, shape, array in inputs:
        request.inputs.add(name=name, datatype=datatype, shape=shape)
        request.raw_input_contents.append(array.tobytes())
    return request


async def _closed_loop(workers: int, seconds: float, call: Callable[[], Awaitable[bool]]) -> dict[str, Any]:
    latencies: list[float] = []
    errors = 0
    stop = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal errors
        while time.perf_counter() < stop:
            started = time.perf_counter()
            ok = await call()
            latencies.append(time.perf_counter() - started)
            errors += not ok

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(workers)))
    elapsed = time.perf_counter() - started
    ms = np.array(latencies) * 1000
    return {"rps": len(latencies) / elapsed, "p50": np.percentile(ms, 50), "p99": np.percentile(ms, 99),
            "p999": np.percentile(ms, 99.9), "errors": errors, "requests": len(latencies)}


async def _run_http(url: str, body: bytes, headers: dict[str, str], workers: int, seconds: float) -> dict[str, Any]:
    connector = aiohttp.TCPConnector(limit=workers, force_close=False)
    async with aiohttp.ClientSession(connector=connector) as session:
        async def call() -> bool:
            async with session.post(url, data=body, headers=headers) as response:
                await response.read()
                return response.status == 200

        await _closed_loop(workers, min(seconds, 1.0), call)  # warm the connections
        return await _closed_loop(workers, seconds, call)


async def _run_grpc(address: str, request: Any, workers: int, seconds: float) -> dict[str, Any]:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)

        async def call() -> bool:
            try:
                await stub.ModelInfer(request)
            except grpc.RpcError:
                return False
            return True

        await _closed_loop(workers, min(seconds, 1.0), call)
        return await _closed_loop(workers, seconds, call)


def _wait_ready(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    import urllib.request

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"server exited with {process.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(url + "/v2/health/ready", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    sys.exit(f"server not ready:\n{log.read_text()}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", type=Path, default=Path("build/digits-1.0.0"))
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", default="1,16,64")
    parser.add_argument("--server-cpu", type=int, default=0)
    parser.add_argument("--client-cpu", type=int, default=1)
    args = parser.parse_args()
    manifest = json.loads((args.bundle / "manifest.json").read_text())
    model, inputs = manifest["name"], _inputs(manifest)
    port, grpc_port = _free_port(), _free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "server.log"
        with log.open("wb") as out:
            command = ["taskset", "-c", str(args.server_cpu), sys.executable, str(args.bundle / "serve.py"),
                       "--port", str(port), "--grpc-port", str(grpc_port), "--log-level", "warning"]
            server = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        try:
            _wait_ready(url, server, log)
            os.sched_setaffinity(0, {args.client_cpu})
            infer = f"{url}/v2/models/{model}/infer"
            json_body, json_headers = _http_json(inputs)
            binary_body, binary_headers = _http_binary(inputs)
            request = _grpc_request(model, inputs)
            print("| protocol | concurrency | req/s | p50 ms | p99 ms | p99.9 ms | errors |")
            print("|---|---:|---:|---:|---:|---:|---:|")
            for workers in (int(c) for c in args.concurrency.split(",")):
                runs = {
                    "HTTP JSON": _run_http(infer, json_body, json_headers, workers, args.seconds),
                    "HTTP binary": _run_http(infer, binary_body, binary_headers, workers, args.seconds),
                    "gRPC": _run_grpc(f"127.0.0.1:{grpc_port}", request, workers, args.seconds),
                }
                for name, run in runs.items():
                    r = asyncio.run(run)
                    print(f"| {name} | {workers} | {r['rps']:.0f} | {r['p50']:.2f} | {r['p99']:.2f} | "
                          f"{r['p999']:.2f} | {r['errors']} |", flush=True)
        finally:
            server.terminate()
            server.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
