"""Reading a spec: time and peak RSS of `load_spec` and `infc validate` on generated specs and on bombs.

    python bench/spec_read.py [--rounds 3] [--timeout 60] [--max-rss-mb 3000] [--case NAME ...]
    PYTHONPATH=OLD/compiler:OLD/runtime python bench/spec_read.py ...   # the same cases against another tree

Every case runs in fresh processes: one that imports `infc.spec` and times
`load_spec` (in-process seconds, after a first load of a 10 kB spec has done the
imports and read the model; peak RSS of that process, and its growth past that
first load), and one that runs `python -m infc validate FILE` (wall seconds from
start to exit, imports included; peak RSS). A process still running at
`--timeout` seconds, or past `--max-rss-mb`, is killed and reported as such.
The specs are the digits example with its labels list grown to 10 kB, 100 kB and
1 MB (valid, and 1 MB with every label a number: an error per item), a file over
the 1 MiB cap, and the bombs: billion laughs of 7 and 9 levels (9 aliases of the
level before), and values nested 10,000 deep in mappings and in lists. Times are
the best of `--rounds`, the peak RSS the largest. Not a test: numbers move with
the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parents[1]
DIGITS = ROOT / "specs" / "digits"
HEAD = """\
name: digits
version: 1.0.0
model: digits.onnx
target: x86
inputs:
  - {name: image, dtype: uint8, shape: [8, 8]}
budget:
  latency_ms: {p95: 5, p99: 10}
  accuracy: {metric: top1_agreement, min: 0.99}
optimize:
  quantize: static
  calibration: calib.npz
  validation: val.npz
preprocess:
  - to_float: {scale: 0.00392156862745098}
  - normalize: {mean: [0.5], std: [0.5]}
  - layout: {from: HW, to: CHW}
postprocess:
  - softmax: {output: probabilities}
  - topk: {k: 3}
"""
MINIMAL = "name: digits\nversion: 1.0.0\nmodel: digits.onnx\ntarget: x86\n"

LOAD = """
import json, resource, sys, time
from infc.errors import SpecErrors
from infc.spec import load_spec
load_spec(sys.argv[2])  # the example, first: imports and caches warm, the model read once
imported = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
try:
    load_spec(sys.argv[1])
    errors, first = 0, ""
except SpecErrors as e:
    errors, first = len(e.errors), str(e.errors[0])
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "imported_kb": imported, "errors": errors, "first": first[:160]}))
"""


def labels(size: int, item: Callable[[int], str]) -> str:
    """The digits spec whose labels list makes the file about `size` bytes."""
    names: list[str] = []
    total = len(HEAD) + 40
    while total < size:
        names.append(item(len(names)))
        total += len(names[-1]) + 2
    return HEAD + f"  - labels: {{names: [{', '.join(names)}]}}\n"


def bomb(levels: int) -> str:
    lines = [MINIMAL.rstrip("\n"), 'a0: &a0 ["lol"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, levels + 1)]
    return "\n".join(lines) + "\n"


def nested(depth: int, opened: str, closed: str) -> str:
    return MINIMAL + "serving: " + opened * depth + "1" + closed * depth + "\n"


CASES: dict[str, Callable[[], str]] = {
    "10 kB": lambda: labels(10_000, lambda i: f"class-{i}"),
    "100 kB": lambda: labels(100_000, lambda i: f"class-{i}"),
    "1 MB": lambda: labels(1_000_000, lambda i: f"class-{i}"),
    "1 MB, every item wrong": lambda: labels(1_000_000, str),
    "2 MB (over the cap)": lambda: labels(2_000_000, lambda i: f"class-{i}"),
    "aliases, 7 levels": lambda: bomb(7),
    "aliases, 9 levels": lambda: bomb(9),
    "nested 10,000 (mappings)": lambda: nested(10_000, "{a: ", "}"),
    "nested 10,000 (lists)": lambda: nested(10_000, "[", "]"),
}


def run(command: list[str], timeout: float, max_rss_kb: int) -> dict[str, Any]:
    """Run `command`; its wall seconds, peak RSS (kB), exit code, output, or how it was stopped."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:  # a pipe could fill, stall it
        return _run(command, timeout, max_rss_kb, out, err)


def _run(command: list[str], timeout: float, max_rss_kb: int, out: IO[str], err: IO[str]) -> dict[str, Any]:
    start = time.perf_counter()
    proc = subprocess.Popen(command, stdout=out, stderr=err, text=True)
    stopped = ""
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        rss = _rss_kb(proc.pid)
        if time.perf_counter() - start > timeout or rss > max_rss_kb:
            stopped = f"killed at {time.perf_counter() - start:.0f} s, {rss / 1024:.0f} MB"
            proc.send_signal(signal.SIGKILL)
            _, status, usage = os.wait4(proc.pid, 0)
            break
        time.sleep(0.02)
    wall = time.perf_counter() - start
    texts = []
    for f in (out, err):
        f.seek(0)
        texts.append(f.read())
    code = os.waitstatus_to_exitcode(status)
    return {"wall": wall, "peak_kb": usage.ru_maxrss, "code": code, "out": texts[0], "err": texts[1],
            "stopped": stopped}


def _rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            return next((int(line.split()[1]) for line in f if line.startswith("VmRSS:")), 0)
    except OSError:
        return 0


def measure(name: str, path: Path, rounds: int, timeout: float, max_rss_kb: int) -> dict[str, Any]:
    warm = str(path.with_name("warm-up.yaml"))
    loads = [run([sys.executable, "-c", LOAD, str(path), warm], timeout, max_rss_kb) for _ in range(rounds)]
    clis = [run([sys.executable, "-m", "infc", "validate", str(path)], timeout, max_rss_kb) for _ in range(rounds)]
    row: dict[str, Any] = {"case": name, "bytes": path.stat().st_size}
    if any(r["stopped"] for r in loads):
        row["load"] = next(r["stopped"] for r in loads if r["stopped"])
    elif any(r["code"] for r in loads):  # not a SpecErrors: what it raised instead
        row["load"] = "raised " + next(r["err"] for r in loads if r["code"]).strip().splitlines()[-1][:80]
    else:
        results = [json.loads(r["out"]) for r in loads]
        row["load_s"] = min(r["seconds"] for r in results)
        row["load_peak_mb"] = max(r["peak_kb"] for r in loads) / 1024
        row["load_growth_mb"] = max(r["peak_kb"] - x["imported_kb"] for r, x in zip(loads, results, strict=True)) / 1024
        row["errors"], row["first"] = results[0]["errors"], results[0]["first"]
    if any(r["stopped"] for r in clis):
        row["cli"] = next(r["stopped"] for r in clis if r["stopped"])
    else:
        row["cli_s"] = min(r["wall"] for r in clis)
        row["cli_peak_mb"] = max(r["peak_kb"] for r in clis) / 1024
        row["cli_exit"] = clis[0]["code"]
        row["internal"] = any("Traceback" in r["err"] or "internal error" in r["err"] for r in clis)
    return row


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| case | bytes | load_spec s | load_spec peak RSS MB (+ past warm-up) | infc validate s | "
             "validate peak RSS MB | exit | errors | first error |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        load = (f"{r['load_s']:.3f} | {r['load_peak_mb']:.0f} (+{r['load_growth_mb']:.0f})" if "load_s" in r
                else f"{r['load']} | -")
        internal = " (internal error)" if r.get("internal") else ""
        cli = (f"{r['cli_s']:.2f} | {r['cli_peak_mb']:.0f} | {r['cli_exit']}{internal}" if "cli_s" in r
               else f"{r['cli']} | - | -")
        first = r.get("first", "").split(" ", 1)[-1].replace("|", "\\|")[:90]
        lines.append(f"| {r['case']} | {r['bytes']:,} | {load} | {cli} | {r.get('errors', '-')} | {first} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds before a process is killed")
    parser.add_argument("--max-rss-mb", type=int, default=3000, help="RSS at which a process is killed")
    parser.add_argument("--case", action="append", choices=list(CASES), help="only these cases (default: all)")
    args = parser.parse_args()
    code = subprocess.run([sys.executable, "-c", "import infc; print(infc.__file__)"], capture_output=True,
                          text=True, check=True).stdout.strip()
    print(f"infc from {code}; {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for name in ("digits.onnx", "calib.npz", "val.npz"):
            shutil.copy(DIGITS / name, folder / name)
        (folder / "warm-up.yaml").write_text(CASES["10 kB"]())
        for name in args.case or CASES:
            path = folder / "spec.yaml"
            path.write_text(CASES[name]())
            rows.append(measure(name, path, args.rounds, args.timeout, args.max_rss_mb * 1024))
            print(json.dumps(rows[-1]), flush=True)
    print(table(rows))


if __name__ == "__main__":
    main()
