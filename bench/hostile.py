"""Issue 8's hostile inputs, each against a fresh real server (or the compiler): status, time, peak RSS, liveness.

    python bench/hostile.py [--out DIR] [--only NAME ...]

Builds the digits, digits_png and tabular examples (`infc build SPEC --no-lock --latency-gate off`), then runs
every case of issue 8 against the bundle's own `serve.py` on a loopback port, one fresh server per case, so the
server's peak RSS (VmHWM in /proc) belongs to that case alone. While a case runs, a thread probes
`/v2/health/live` every 100 ms and records the slowest answer. After it, a known-good request must still get 200.
Compiler cases run `infc validate` on generated specs and report exit code, time and peak RSS (getrusage of the
child). Prints one markdown table; not a test: numbers move with the machine.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
Case = Callable[["Srv"], str]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


class Srv:
    """A bundle's serve.py on a free port; `.url`, `.pid`; liveness probed while `probe` runs."""

    def __init__(self, bundle: Path, log: Path, extra: list[str] | None = None) -> None:
        self.bundle, self.port = bundle, _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self.proc = subprocess.Popen([sys.executable, str(bundle / "serve.py"), "--host", "127.0.0.1", "--port",
                                      str(self.port), *(extra or [])], stdout=log.open("wb"), stderr=subprocess.STDOUT)
        self.pid = self.proc.pid
        self.worst_live = 0.0
        self._stop = threading.Event()

    def wait_ready(self, timeout: float = 60) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                if httpx.get(self.url + "/v2/health/ready", timeout=2).status_code == 200:
                    return True
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        return False

    def _probe(self) -> None:
        with httpx.Client(timeout=60) as c:
            while not self._stop.is_set():
                t0 = time.perf_counter()
                with contextlib.suppress(httpx.HTTPError):
                    c.get(self.url + "/v2/health/live")
                self.worst_live = max(self.worst_live, time.perf_counter() - t0)
                self._stop.wait(0.1)

    def __enter__(self) -> Srv:
        self.base_rss = _kb(self.pid, "VmRSS")
        self._thread = threading.Thread(target=self._probe, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=120)

    def peak_mb(self) -> float:
        return (_kb(self.pid, "VmHWM") - self.base_rss) / 1024 if self.proc.poll() is None else float("nan")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _post(srv: Srv, path: str, body: bytes, headers: dict[str, str] | None = None, timeout: float = 120) -> str:
    try:
        r = httpx.post(srv.url + path, content=body, headers=headers or {}, timeout=timeout)
    except httpx.HTTPError as exc:
        return f"{type(exc).__name__}"
    text = r.text[:120].replace("|", "/").replace("\n", " ")
    try:
        json.loads(r.content)
        valid = ""
    except ValueError:
        valid = " (invalid JSON)"
    return f"{r.status_code}{valid}: {text}"


def _binary(inputs: list[dict[str, Any]], payload: bytes, headers: dict[str, str] | None = None) -> tuple[bytes, dict]:
    header = json.dumps({"inputs": inputs}).encode()
    return header + payload, {"Inference-Header-Content-Length": str(len(header)),
                              "Content-Type": "application/octet-stream", **(headers or {})}


# ---------------------------------------------------------------- the cases


def bytes_shape(n: int) -> Case:
    def case(srv: Srv) -> str:
        body, h = _binary([{"name": "rows", "datatype": "BYTES", "shape": [n], "parameters": {"binary_data_size": 5}}],
                          struct.pack("<I", 1) + b"x")
        return _post(srv, "/v2/models/tabular-risk/infer", body, h)
    return case


def gzip_bomb(srv: Srv) -> str:
    path = Path(tempfile.gettempdir()) / "infc-bomb.gz"
    if not path.exists():
        valid = json.dumps({"inputs": [{"name": "image", "datatype": "UINT8", "shape": [1, 8, 8], "data": [0] * 64}]})
        comp = zlib.compressobj(9, zlib.DEFLATED, 31)
        with path.open("wb") as f:
            f.write(comp.compress(valid[:-1].encode()))
            chunk = b" " * (1 << 20)
            for _ in range(1000):
                f.write(comp.compress(chunk))
            f.write(comp.compress(b"}"))
            f.write(comp.flush())
    return _post(srv, "/v2/models/digits/infer", path.read_bytes(),
                 {"Content-Encoding": "gzip", "Content-Type": "application/json"})


def big_json(srv: Srv) -> str:
    rows = 390_625  # 25M numbers
    body = (b'{"inputs":[{"name":"image","datatype":"UINT8","shape":[%d,8,8],"data":[' % rows
            + b",".join([b"0"] * (rows * 64)) + b"]}]}")
    return _post(srv, "/v2/models/digits/infer", body, {"Content-Type": "application/json"})


def million_rows(srv: Srv) -> str:
    body, h = _binary([{"name": "image", "datatype": "UINT8", "shape": [1_000_000, 8, 8],
                        "parameters": {"binary_data_size": 64_000_000}}], bytes(64_000_000))
    return _post(srv, "/v2/models/digits/infer", body, h)


def huge_pngs(srv: Srv) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (6300, 6300)).save(buf, format="PNG", optimize=True)
    png = buf.getvalue()
    payload = b"".join(struct.pack("<I", len(png)) + png for _ in range(16))
    body, h = _binary([{"name": "png", "datatype": "BYTES", "shape": [16],
                        "parameters": {"binary_data_size": len(payload)}}], payload)
    return f"{len(png) // 1024} KB each; " + _post(srv, "/v2/models/digits-png/infer", body, h)


def _tabular_row(value: str) -> bytes:
    with np.load(ROOT / "specs" / "tabular" / "val.npz", allow_pickle=False) as data:
        first = data["rows"][0]
        row = json.loads(first.decode() if isinstance(first, bytes) else str(first))
    field = next(iter(row))
    text = json.dumps(row).replace(json.dumps(field) + ": " + json.dumps(row[field]), json.dumps(field) + ": " + value)
    return json.dumps({"inputs": [{"name": "rows", "datatype": "BYTES", "shape": [1], "data": [text]}]}).encode()


def non_finite(value: str) -> Case:
    def case(srv: Srv) -> str:
        return _post(srv, "/v2/models/tabular-risk/infer", _tabular_row(value), {"Content-Type": "application/json"})
    return case


def deep_json(srv: Srv) -> str:
    body = (b'{"inputs":[{"name":"image","datatype":"UINT8","shape":[1,8,8],"data":' + b"[" * 10000 + b"]" * 10000
            + b"}]}")
    return _post(srv, "/v2/models/digits/infer", body, {"Content-Type": "application/json"})


def huge_timeout(srv: Srv) -> str:
    body = (b'{"parameters":{"timeout":1' + b"0" * 400 + b'},"inputs":[{"name":"image","datatype":"UINT8",'
            b'"shape":[1,8,8],"data":[' + b",".join([b"0"] * 64) + b"]}]}")
    return _post(srv, "/v2/models/digits/infer", body, {"Content-Type": "application/json"})


def wrapping_shape(srv: Srv) -> str:
    body = json.dumps({"inputs": [{"name": "image", "datatype": "UINT8", "shape": [2**62, 8, 8], "data": []}]})
    return _post(srv, "/v2/models/digits/infer", body.encode(), {"Content-Type": "application/json"})


def wrong_nesting(srv: Srv) -> str:
    body = json.dumps({"inputs": [{"name": "image", "datatype": "UINT8", "shape": [1, 8, 8], "data": [[0] * 64]}]})
    return _post(srv, "/v2/models/digits/infer", body.encode(), {"Content-Type": "application/json"})


def bad_image(srv: Srv) -> str:
    payload = struct.pack("<I", 9) + b"not a png"
    body, h = _binary([{"name": "png", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": 13}}],
                      payload)
    out = _post(srv, "/v2/models/digits-png/infer", body, h)
    return out + (" [heap address!]" if "0x" in out else "")


def disconnects(srv: Srv) -> str:
    for _ in range(2000):
        with socket.create_connection(("127.0.0.1", srv.port)) as s:
            s.sendall(b"POST /v2/models/digits/infer HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1000\r\n"
                      b"Content-Type: application/json\r\n\r\n{\"inputs\"")
    time.sleep(1.0)
    metrics = httpx.get(srv.url + "/metrics").text
    fivehundreds = sum(float(line.split()[-1]) for line in metrics.splitlines()
                       if line.startswith("infc_requests_total") and 'code="500"' in line)
    disc = [line for line in metrics.splitlines() if line.startswith("infc_client_disconnects_total")]
    return (f"2000 disconnects: log {srv.log.stat().st_size // 1024} KB, 500s counted {fivehundreds:.0f}, "
            f"{disc[0] if disc else 'no disconnect counter'}")


def foreign_host(srv: Srv) -> str:
    body = json.dumps({"inputs": [{"name": "image", "datatype": "UINT8", "shape": [1, 8, 8], "data": [0] * 64}]})
    return _post(srv, "/v2/models/digits/infer", body.encode(), {"Host": "evil.example", "Content-Type":
                                                                  "application/json"})


def text_plain(srv: Srv) -> str:
    body = json.dumps({"inputs": [{"name": "image", "datatype": "UINT8", "shape": [1, 8, 8], "data": [0] * 64}]})
    return _post(srv, "/v2/models/digits/infer", body.encode(), {"Content-Type": "text/plain"})


def _sigterm_after(srv: Srv, setup: Callable[[], list[socket.socket]]) -> str:
    conns = setup()
    time.sleep(0.5)
    t0 = time.monotonic()
    srv.proc.send_signal(signal.SIGTERM)
    try:
        code = srv.proc.wait(timeout=60)
        out = f"exit {code} {time.monotonic() - t0:.1f} s after SIGTERM"
    except subprocess.TimeoutExpired:
        out = "still alive 60 s after SIGTERM"
    for c in conns:
        c.close()
    return out


def stalled_body(srv: Srv) -> str:
    def setup() -> list[socket.socket]:
        s = socket.create_connection(("127.0.0.1", srv.port))
        s.sendall(b"POST /v2/models/digits/infer HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1000\r\n"
                  b"Content-Type: application/json\r\n\r\n{")
        return [s]
    return _sigterm_after(srv, setup)


def stalled_chunked(srv: Srv) -> str:
    def setup() -> list[socket.socket]:
        s = socket.create_connection(("127.0.0.1", srv.port))
        s.sendall(b"POST /v2/models/digits/infer HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n"
                  b"Content-Type: application/json\r\n\r\n10\r\n{\"in")
        return [s]
    return _sigterm_after(srv, setup)


def slowloris(srv: Srv) -> str:
    conns = [socket.create_connection(("127.0.0.1", srv.port)) for _ in range(150)]
    header = b"GET /v2/health/live HTTP/1.1\r\nHost: localhost\r\nX-a: " + b"a" * 100
    closed_at: dict[int, float] = {}
    t0 = time.monotonic()
    good = 0
    for i in range(len(header)):
        if time.monotonic() - t0 > 20:
            break
        for n, c in enumerate(conns):
            if n in closed_at:
                continue
            try:
                c.sendall(header[i:i + 1])
            except OSError:
                closed_at[n] = time.monotonic() - t0
        good += httpx.get(srv.url + "/v2/health/live", timeout=5).status_code == 200
        time.sleep(1.0)
    for c in conns:
        c.close()
    return (f"{len(closed_at)} of 150 closed by the server within {time.monotonic() - t0:.0f} s "
            f"(first at {min(closed_at.values(), default=float('nan')):.1f} s); {good} normal requests OK")


def burst_sigterm(delay: float) -> Case:
    def case(srv: Srv) -> str:
        body = json.dumps({"inputs": [{"name": "image", "datatype": "UINT8", "shape": [64, 8, 8],
                                       "data": [0] * 4096}]}).encode()
        results: list[str] = []

        def one() -> None:
            try:
                with httpx.Client(timeout=30) as c:
                    r = c.post(srv.url + "/v2/models/digits/infer", content=body,
                               headers={"Content-Type": "application/json"})
                    results.append(str(r.status_code))
            except httpx.ConnectError:
                results.append("refused")
            except httpx.HTTPError as exc:
                results.append(type(exc).__name__)

        threads = [threading.Thread(target=one) for _ in range(64)]
        for t in threads:
            t.start()
        time.sleep(delay)
        srv.proc.send_signal(signal.SIGTERM)
        for t in threads:
            t.join(timeout=60)
        srv.proc.wait(timeout=60)
        counts = {k: results.count(k) for k in sorted(set(results))}
        return f"exit {srv.proc.returncode}; " + ", ".join(f"{k} x{v}" for k, v in counts.items())
    return case


SERVER_CASES: list[tuple[str, str, Case]] = [
    ("1 BYTES shape [300000000], 5-byte payload", "tabular", bytes_shape(300_000_000)),
    ("1 BYTES shape [1000000000]", "tabular", bytes_shape(1_000_000_000)),
    ("1 BYTES shape [1e12]", "tabular", bytes_shape(10**12)),
    ("2 gzip bomb (1 MB -> 1000 MiB)", "digits", gzip_bomb),
    ("3 50 MB JSON body (25M numbers)", "digits", big_json),
    ("3 1M rows binary (64 MB)", "digits", million_rows),
    ("3 16 PNGs of 6300x6300", "digits_png", huge_pngs),
    ("5 stalled body (Content-Length 1000, 1 byte) + SIGTERM", "digits", stalled_body),
    ("5 unfinished chunked body + SIGTERM", "digits", stalled_chunked),
    ("5 slowloris, 150 connections", "digits", slowloris),
    ("5 SIGTERM 50 ms into 64 concurrent requests", "digits", burst_sigterm(0.05)),
    ("5 SIGTERM 200 ms into 64 concurrent requests", "digits", burst_sigterm(0.2)),
    ("6 tabular row with NaN", "tabular", non_finite("NaN")),
    ("6 tabular row with Infinity", "tabular", non_finite("Infinity")),
    ("6 tabular row with 1e39", "tabular", non_finite("1e39")),
    ("6 tabular row with -1e400", "tabular", non_finite("-1e400")),
    ("8 JSON nested 10,000 deep", "digits", deep_json),
    ("8 parameters.timeout 10**400", "digits", huge_timeout),
    ("8 shape [2**62, 8, 8], data []", "digits", wrapping_shape),
    ("8 2,000 clients disconnecting mid-body", "digits", disconnects),
    ("8 an image that does not decode", "digits_png", bad_image),
    ("8 data nested [1][64] for shape [1, 8, 8]", "digits", wrong_nesting),
    ("9 Host: evil.example", "digits", foreign_host),
    ("9 Content-Type: text/plain infer", "digits", text_plain),
]


def _known_good(srv: Srv) -> bool:
    body = json.dumps({"inputs": [{"name": "image", "datatype": "UINT8", "shape": [1, 8, 8], "data": [0] * 64}]})
    if "png" in srv.bundle.name:
        from PIL import Image

        buf = io.BytesIO()
        Image.new("L", (8, 8)).save(buf, format="PNG")
        payload = struct.pack("<I", len(buf.getvalue())) + buf.getvalue()
        raw, h = _binary([{"name": "png", "datatype": "BYTES", "shape": [1],
                           "parameters": {"binary_data_size": len(payload)}}], payload)
        answer = httpx.post(srv.url + "/v2/models/digits-png/infer", content=raw, headers=h, timeout=30)
        return answer.status_code == 200
    if "tabular" in srv.bundle.name:
        return httpx.post(srv.url + "/v2/models/tabular-risk/infer", content=_tabular_row("1.0"),
                          headers={"Content-Type": "application/json"}, timeout=30).status_code == 200
    return httpx.post(srv.url + "/v2/models/digits/infer", content=body.encode(),
                      headers={"Content-Type": "application/json"}, timeout=30).status_code == 200


# ---------------------------------------------------------------- bundle tampering and the compiler


def tamper_cases(bundle: Path, scratch: Path) -> list[tuple[str, str]]:
    def edit_model(b: Path) -> None:
        data = bytearray((b / "model.onnx").read_bytes())
        data[-100] ^= 0xFF
        (b / "model.onnx").write_bytes(bytes(data))

    def edit_kernel(b: Path) -> None:
        with (b / "kernels" / "pre.py").open("a") as f:
            f.write('\nopen("PWNED", "w").write("x")\n')

    def edit_runtime(b: Path) -> None:
        with (b / "infc_runtime" / "app.py").open("a") as f:
            f.write("\n# edited\n")

    def outside(b: Path) -> None:
        m = json.loads((b / "manifest.json").read_text())
        (scratch / "evil.py").write_text('open("PWNED", "w").write("x")\ndef run(t):\n    return t\n')
        m["kernels"]["pre"] = str(scratch / "evil.py")
        (b / "manifest.json").write_text(json.dumps(m))

    out = []
    for name, edit in (("4 model.onnx byte flipped", edit_model), ("4 line appended to kernels/pre.py", edit_kernel),
                       ("4 infc_runtime/app.py edited", edit_runtime), ("4 manifest kernels.pre outside", outside)):
        copy = scratch / f"tampered-{len(out)}"
        shutil.copytree(bundle, copy)
        edit(copy)
        pwned = Path.cwd() / "PWNED"
        pwned.unlink(missing_ok=True)
        port = _free_port()
        t0 = time.monotonic()
        proc = subprocess.Popen([sys.executable, str(copy / "serve.py"), "--port", str(port)],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        served = False
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and proc.poll() is None:
            with contextlib.suppress(httpx.HTTPError):
                served = httpx.get(f"http://127.0.0.1:{port}/v2/health/ready", timeout=1).status_code == 200
            if served:
                break
            time.sleep(0.1)
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        stdout = proc.communicate(timeout=30)[0]
        last = (stdout.strip().splitlines() or [""])[-1][:110].replace("|", "/")
        out.append((name, f"{'served' if served else f'exit {proc.returncode}'} in {time.monotonic() - t0:.1f} s; "
                          f"injected code ran: {pwned.exists()}; {last}"))
        pwned.unlink(missing_ok=True)
    return out


# runs a command with a timeout and reports its exit and peak RSS alone (getrusage of this wrapper's only child)
_MEASURED = """\
import json, resource, subprocess, sys
try:
    p = subprocess.run(sys.argv[2:], capture_output=True, text=True, timeout=float(sys.argv[1]))
    code, err = p.returncode, p.stderr
except subprocess.TimeoutExpired:
    code, err = f"killed at {sys.argv[1]} s", ""
print(json.dumps({"code": code, "stderr": err, "maxrss_kb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))
"""


def compiler_cases(scratch: Path) -> list[tuple[str, str]]:
    base = "name: x\nversion: 1.0.0\nmodel: m.onnx\ntarget: x86\n"

    def laughs(levels: int) -> str:
        lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
        for i in range(1, levels + 1):
            lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]")
        return "\n".join(lines) + f"\nname: *a{levels}\n"

    specs = {
        "7 billion laughs, 9 levels": laughs(9),
        "7 billion laughs, 7 levels": laughs(7),
        "7 2 MB spec": base + "preprocess:\n" + "".join(f"  - to_float: {{scale: {i}.5}}\n"
                                                        for i in range(2 * 1024 * 1024 // 30)),
        "7 YAML nested 10,000 deep": base + "serving: " + "[" * 10000 + "]" * 10000 + "\n",
    }
    out = []
    for name, text in specs.items():
        path = scratch / f"{name.split()[1]}-{len(out)}.yaml"
        path.write_text(text)
        t0 = time.monotonic()
        done = subprocess.run([sys.executable, "-c", _MEASURED, "60", sys.executable, "-m", "infc", "validate",
                               str(path)], capture_output=True, text=True)
        result = json.loads(done.stdout)
        err = (result["stderr"].strip().splitlines() or [""])[-1][:100].replace("|", "/")
        out.append((name, f"exit {result['code']} in {time.monotonic() - t0:.1f} s, peak RSS "
                          f"{result['maxrss_kb'] / 1024:.0f} MB; {err}"))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "infc-hostile")
    parser.add_argument("--only", nargs="*", default=None)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    bundles = {}
    for ex, spec in (("digits", "digits"), ("digits_png", "digits_png"), ("tabular", "tabular")):
        done = subprocess.run([sys.executable, "-m", "infc", "build", str(ROOT / "specs" / ex / f"{spec}.yaml"), "-o",
                               str(args.out / "bundles"), "--no-lock", "--latency-gate", "off", "-q"],
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(done.stderr)
        bundles[ex] = Path(done.stdout.split()[1])
    print(f"# hostile  {time.strftime('%Y-%m-%d %H:%M')}  nproc={os.cpu_count()}  load={os.getloadavg()[0]:.2f}")
    print("| case | outcome | time s | server peak RSS +MB | slowest /v2/health/live ms | good request after |")
    print("|---|---|---|---|---|---|")
    for name, ex, case in SERVER_CASES:
        if args.only and not any(o in name for o in args.only):
            continue
        srv = Srv(bundles[ex], args.out / "server.log")
        if not srv.wait_ready():
            print(f"| {name} | server did not start | | | | |")
            srv.stop()
            continue
        with srv:
            t0 = time.monotonic()
            outcome = case(srv)
            seconds = time.monotonic() - t0
        peak = srv.peak_mb()
        try:
            good = "-" if srv.proc.poll() is not None else ("yes" if _known_good(srv) else "NO")
        except httpx.HTTPError as exc:
            good = f"NO ({type(exc).__name__})"
        srv.stop()
        print(f"| {name} | {outcome} | {seconds:.1f} | {peak:.0f} | {srv.worst_live * 1000:.0f} | {good} |", flush=True)
    if not args.only or any("4" in o for o in args.only):
        with tempfile.TemporaryDirectory() as tmp:
            for name, outcome in tamper_cases(bundles["digits"], Path(tmp)):
                print(f"| {name} | {outcome} | | | | |", flush=True)
    if not args.only or any("7" in o for o in args.only):
        with tempfile.TemporaryDirectory() as tmp:
            for name, outcome in compiler_cases(Path(tmp)):
                print(f"| {name} | {outcome} | | | | |", flush=True)


if __name__ == "__main__":
    main()
