"""Cold start: process start -> ready and first response, and the server's peak RSS, per bundle.

    python bench/cold_start.py [--spec specs/digits/digits.yaml ...] [--bundle DIR ...] [--rounds 5]
        [--variants cache,none] [--python PATH] [--baseline] [--breakdown]

Builds each spec (or takes built bundles), then, round after round, copies each
bundle's shipped files (its manifest's list) into a fresh folder, with
`__pycache__` Numba cache (variant `cache`, shipped when the build host is the
target) or without it (`none`), starts `python serve.py` there and polls until
an inference request answers 200. Reported per bundle and variant, median and
min over the rounds: seconds to ready (`/v2/health/ready`), seconds to the first
successful response (one row of zeros, or the kernel's example for a BYTES
input, as KServe V2 JSON), the server's CPU seconds when ready (user + system,
/proc/PID/stat: steadier than wall time on a shared machine), and its peak RSS
(`VmHWM` of /proc/PID/status) when ready and after that response. Bundles and variants
alternate within a round, so machine load hits all alike (pass the same bundle
built before and after a change as two `--bundle`s for a before/after).

`--python PATH` serves with that interpreter (e.g. a venv made from a bundle's
requirements.txt: numba imports scipy and PyYAML when they are installed, and
the compiler's environment has both). `--baseline` also starts, per bundle, a
by-hand FastAPI + onnxruntime server on the bundle's model.onnx (one session,
one warm-up run of the model's own inputs, no pre/post; needs fastapi in that
interpreter). `--breakdown` prints, per bundle, where one start spends its time
and memory (`_steps.py`: the serve path step by step, wall ms and RSS). Not a
test: numbers move with the machine.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SPECS = [ROOT / "specs" / "digits" / "digits.yaml"]
TEXT = "Return the absolute path of the file, resolving any symlinks."
STEPS = Path(__file__).resolve().parent / "_steps.py"

FASTAPI_SERVER = '''\
import sys
import numpy as np, onnxruntime as ort, uvicorn
from fastapi import FastAPI, Request, Response

session = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
NAMES = {"tensor(float)": "float32", "tensor(uint8)": "uint8", "tensor(int64)": "int64", "tensor(int32)": "int32"}
session.run(None, {i.name: np.zeros([1 if not isinstance(d, int) or d < 0 else d for d in i.shape], NAMES[i.type])
                   for i in session.get_inputs()})
app = FastAPI()


@app.post("/v2/models/{name}/infer")
async def infer(name: str, request: Request) -> dict:
    body = await request.json()
    feed = {t["name"]: np.asarray(t["data"], dtype=NAMES[i.type]).reshape(t["shape"])
            for t, i in zip(body["inputs"], session.get_inputs())}
    outputs = session.run(None, feed)
    return {"model_name": name, "outputs": [{"name": o.name, "datatype": "FP32", "shape": list(y.shape),
                                             "data": y.ravel().tolist()}
                                            for o, y in zip(session.get_outputs(), outputs)]}


@app.get("/v2/health/ready")
async def ready() -> dict:
    return {"ready": True}


uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning")
'''


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


def _request(bundle: Path) -> tuple[bytes, dict[str, str]]:
    """One row per input as a KServe V2 request (body, headers): zeros for numbers; for BYTES, the pre
    kernel module's example (a JSON row, a PNG) else a sentence, as binary data (a PNG is not JSON text)."""
    manifest = json.loads((bundle / "manifest.json").read_text())
    examples = _examples(bundle / manifest["kernels"]["pre"])
    inputs, raw = [], b""
    for t in manifest["inputs"]:
        shape = [1, *(1 if d < 0 else d for d in t["shape"])]
        count = 1
        for d in shape:
            count *= d
        if t["dtype"] == "bytes":
            element = examples.get(t["name"], TEXT.encode())
            data = struct.pack("<I", len(element)) + element
            raw += data * count
            inputs.append({"name": t["name"], "datatype": "BYTES", "shape": shape,
                           "parameters": {"binary_data_size": len(data) * count}})
        else:
            datatype = t["dtype"].upper().replace("FLOAT", "FP")
            inputs.append({"name": t["name"], "datatype": datatype, "shape": shape, "data": [0] * count})
    head = json.dumps({"inputs": inputs}).encode()
    return head + raw, {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(len(head))}


def _examples(pre: Path) -> dict[str, bytes]:
    """The pre kernel module's `EXAMPLES` (read from its source, not imported)."""
    for line in pre.read_text().splitlines():
        if line.startswith("EXAMPLES = "):
            return dict(ast.literal_eval(line.removeprefix("EXAMPLES = ")))
    return {}


def _model_request(bundle: Path) -> tuple[bytes, dict[str, str]]:
    """One row of zeros per model input (read from model.onnx), for the by-hand server."""
    import onnx

    manifest = json.loads((bundle / "manifest.json").read_text())
    model = onnx.load(str(bundle / manifest["model"]["path"]), load_external_data=False)
    inputs = []
    for i in model.graph.input:
        dims = [d.dim_value if d.dim_value > 0 else 1 for d in i.type.tensor_type.shape.dim]
        count = 1
        for d in dims:
            count *= d
        inputs.append({"name": i.name, "datatype": "FP32", "shape": dims, "data": [0] * count})
    return json.dumps({"inputs": inputs}).encode(), {"Content-Type": "application/json"}


def _peak_rss_mb(pid: int) -> float:
    """The process's peak resident set size so far (VmHWM), MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _cpu_s(pid: int) -> float:
    """CPU seconds the process has used so far (user + system, all its threads): steadier than wall time
    on a shared machine."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _start(command: list[str], infer: str, request: tuple[bytes, dict[str, str]],
           timeout: float = 300) -> dict[str, float]:
    """Start `command` (a server taking `{port}`), poll it until ready, then until `infer` answers 200."""
    port = _port()
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_CACHE_DIR", "PYTHONPATH")}
    start = time.perf_counter()
    proc = subprocess.Popen([c.replace("{port}", str(port)) for c in command],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    found: dict[str, float] = {}
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            while time.perf_counter() - start < timeout:
                if proc.poll() is not None:
                    raise RuntimeError(f"{command}: the server exited with {proc.returncode}")
                try:
                    if "ready" not in found and client.get("/v2/health/ready").status_code == 200:
                        found["ready"] = time.perf_counter() - start
                        found["rss_ready"] = _peak_rss_mb(proc.pid)
                        found["cpu_ready"] = _cpu_s(proc.pid)
                    if "ready" in found:
                        response = client.post(infer, content=request[0], headers=request[1])
                        if response.status_code == 200:
                            found["first"] = time.perf_counter() - start
                            found["rss_first"] = _peak_rss_mb(proc.pid)
                            return found
                        raise RuntimeError(f"{command}: {response.status_code} {response.text[:300]}")
                except httpx.TransportError:
                    pass
                time.sleep(0.01)
        raise RuntimeError(f"{command}: no response within {timeout} s")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def _serve_bundle(bundle: Path, python: str, variant: str) -> dict[str, float]:
    manifest = json.loads((bundle / "manifest.json").read_text())
    with tempfile.TemporaryDirectory(prefix="cold-") as tmp:
        copy = _copy(bundle, Path(tmp) / bundle.name, variant == "cache")
        return _start([python, str(copy / "serve.py"), "--host", "127.0.0.1", "--port", "{port}"],
                      f"/v2/models/{manifest['name']}/infer", _request(bundle))


def _serve_by_hand(bundle: Path, python: str, script: Path) -> dict[str, float]:
    manifest = json.loads((bundle / "manifest.json").read_text())
    return _start([python, str(script), str(bundle / manifest["model"]["path"]), "{port}"],
                  f"/v2/models/{manifest['name']}/infer", _model_request(bundle))


def _row(label: str, variant: str, runs: list[dict[str, float]]) -> str:
    cells = []
    for key, fmt in (("ready", ".2f"), ("first", ".2f"), ("cpu_ready", ".2f"), ("rss_ready", ".0f"),
                     ("rss_first", ".0f")):
        values = [r[key] for r in runs]
        cells.append(f"{statistics.median(values):{fmt}}, {min(values):{fmt}}")
    return f"| {label} | {variant} | " + " | ".join(cells) + " |"


def _breakdown(bundle: Path, python: str) -> None:
    """One start of `bundle` step by step (bench/_steps.py), printed as it runs."""
    with tempfile.TemporaryDirectory(prefix="cold-") as tmp:
        copy = _copy(bundle, Path(tmp) / bundle.name, True)
        print(f"\n{bundle} ({python}):", flush=True)
        subprocess.run([python, str(STEPS), str(copy)], check=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", type=Path, action="append", help="spec to build (default: the digits example)")
    parser.add_argument("--bundle", type=Path, action="append", default=[], help="an already built bundle")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--variants", default="cache", help="cache, none or both (cache,none); default: cache")
    parser.add_argument("--python", default=sys.executable, help="interpreter the servers run with")
    parser.add_argument("--baseline", action="store_true", help="also a by-hand FastAPI + onnxruntime server")
    parser.add_argument("--breakdown", action="store_true", help="also one start per bundle, step by step")
    args = parser.parse_args(argv)
    variants = [v.strip() for v in args.variants.split(",")]
    bundles = [b.resolve() for b in args.bundle]
    with tempfile.TemporaryDirectory(prefix="cold-build-") as out:
        if args.spec or not bundles:
            from infc.build import build

            for spec in args.spec or DEFAULT_SPECS:
                path = build(spec, out, iterations=50, lock="ignore").path
                assert path is not None
                bundles.append(path)
        script = Path(out) / "fastapi_server.py"
        script.write_text(FASTAPI_SERVER)
        runs: dict[tuple[str, str], list[dict[str, float]]] = {}
        for _ in range(args.rounds):
            for bundle in bundles:
                for variant in variants:
                    runs.setdefault((str(bundle), variant), []).append(_serve_bundle(bundle, args.python, variant))
                if args.baseline:
                    runs.setdefault((str(bundle), "by hand"), []).append(
                        _serve_by_hand(bundle, args.python, script))
        print("| bundle | server | ready s (median, min) | first response s (median, min) "
              "| CPU s at ready (median, min) | peak RSS MB at ready (median, min) "
              "| peak RSS MB after the first response (median, min) |")
        print("|---|---|---|---|---|---|---|")
        for (bundle_path, variant), found in runs.items():
            label = Path(bundle_path).name
            if len({Path(b).name for b, _ in runs}) < len({b for b, _ in runs}):  # same name twice: say which
                label = f"{Path(bundle_path).parent.name}/{label}"
            server = "FastAPI by hand" if variant == "by hand" else f"infc, Numba cache: {variant}"
            print(_row(label, server, found))
        if args.breakdown:
            for bundle in bundles:
                _breakdown(bundle, args.python)
    return 0


if __name__ == "__main__":
    sys.exit(main())
