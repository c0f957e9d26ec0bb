"""An arm bundle's own server under qemu-aarch64: ready, one inference over HTTP, equal to the x86 result.

    python bench/arm_qemu.py [--isa arm64|arm64_dotprod|both] [--json OUT.json]

For each ISA: builds specs/digits (a copy, with `target: {hardware: arm, isa: ISA}`), installs the bundle's
requirements.txt for aarch64 into a site folder (pip's cross-platform download, cached), starts the bundle's
serve.py under `qemu-aarch64 -cpu MODEL` (cortex-a72 for arm64: no dot-product; neoverse-n1 for
arm64_dotprod), waits for /v2/health/ready, posts 64 validation images, and compares the answer with the same
bundle served on this (x86) host: the top-1 labels must agree within the spec's top1_agreement budget.
Needs the emulators (`python -m infc.emulate setup`, run first here and timed). Prints what it measured:
set-up time, build time, site time, ready time under emulation, agreement and the largest score difference.
Latency under emulation is not the target's and is not reported.
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
import yaml

from infc.build import build
from infc.emulate import CPU_MODELS, arm64, emulator_dir, target_site
from infc.emulate_setup import setup

ROOT = Path(__file__).resolve().parents[1]
ROWS = 64


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def arm_spec(isa: str, into: Path) -> Path:
    """A copy of specs/digits with the arm target `isa` (and no lock: the choice is made for this target)."""
    shutil.copytree(ROOT / "specs/digits", into, ignore=shutil.ignore_patterns("*.lock"))
    path = into / "digits.yaml"
    data = yaml.safe_load(path.read_text())
    data["target"] = {"hardware": "arm", "isa": isa}
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def wait_ready(process: subprocess.Popen[bytes], port: int, log: Path, timeout: float) -> float:
    """Seconds until /v2/health/ready answers 200; RuntimeError if the server exits or takes past `timeout`."""
    start = time.perf_counter()
    with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
        while time.perf_counter() - start < timeout:
            if process.poll() is not None:
                raise RuntimeError(f"server exited with {process.returncode}:\n{log.read_text()[-3000:]}")
            try:
                if client.get("/v2/health/ready", timeout=5).status_code == 200:
                    return time.perf_counter() - start
            except httpx.TransportError:
                pass
            time.sleep(0.2)
    raise RuntimeError(f"server not ready after {timeout:g} s:\n{log.read_text()[-3000:]}")


def infer(port: int, images: np.ndarray) -> dict[str, Any]:
    body = {"inputs": [{"name": "image", "shape": list(images.shape), "datatype": "UINT8",
                        "data": images.ravel().tolist()}]}
    response = httpx.post(f"http://127.0.0.1:{port}/v2/models/digits/infer", json=body, timeout=120)
    response.raise_for_status()
    return {o["name"]: o["data"] for o in response.json()["outputs"]}


def serve(command: list[str], env: dict[str, str] | None, log: Path, images: np.ndarray, timeout: float
          ) -> tuple[float, dict[str, Any]]:
    """Start a server (`{port}` filled in), wait until ready, one inference; always stopped after."""
    port = free_port()
    with log.open("wb") as out:
        process = subprocess.Popen([c.format(port=port) for c in command], stdout=out, stderr=subprocess.STDOUT,
                                   env=env)
    try:
        ready = wait_ready(process, port, log, timeout)
        return ready, infer(port, images)
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


def compare(host: dict[str, Any], emulated: dict[str, Any], rows: int) -> dict[str, float]:
    """Top-1 agreement of the labels, and the largest difference of the top-k scores."""
    def top1(out: dict[str, Any]) -> np.ndarray:
        return np.asarray(out["labels"], dtype=object).reshape(rows, -1)[:, 0]

    scores = [k for k, v in host.items() if v and isinstance(v[0], float)]
    diff = max((float(np.max(np.abs(np.asarray(host[k]) - np.asarray(emulated[k])))) for k in scores), default=0.0)
    return {"top1_agreement": float(np.mean(top1(host) == top1(emulated))), "max_score_diff": diff}


def run_isa(isa: str, work: Path, ready_timeout: float) -> dict[str, Any]:
    spec = arm_spec(isa, work / f"spec-{isa}")
    t = time.perf_counter()
    outcome = build(spec, work / f"build-{isa}", latency_gate="off", lock="ignore")
    built = time.perf_counter() - t
    assert outcome.path is not None
    bundle = outcome.path
    t = time.perf_counter()
    site = target_site((bundle / "requirements.txt").read_text())
    site_s = time.perf_counter() - t
    images = np.load(ROOT / "specs/digits/val.npz")["image"][:ROWS]
    emulator = arm64(CPU_MODELS[isa], site)
    ready, emulated = serve(emulator.command(bundle / "serve.py", ["--port", "{port}"]), emulator.environ(),
                            work / f"serve-{isa}.log", images, ready_timeout)
    _, host = serve([sys.executable, str(bundle / "serve.py"), "--port", "{port}"], None,
                    work / f"host-{isa}.log", images, 60)
    budget = float(yaml.safe_load(spec.read_text())["budget"]["accuracy"]["min"])
    result = compare(host, emulated, ROWS)
    return {"isa": isa, "emulator": emulator.name, "chosen": outcome.chosen.candidate.name, "build_s": round(built, 1),
            "site_s": round(site_s, 1), "ready_s": round(ready, 1), "rows": ROWS, **result, "budget_min": budget,
            "within_budget": result["top1_agreement"] >= budget}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--isa", choices=["arm64", "arm64_dotprod", "both"], default="both")
    parser.add_argument("--ready-timeout", type=float, default=600)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    t = time.perf_counter()
    record = setup(emulator_dir(), log=lambda line: print(line, file=sys.stderr))
    results: dict[str, Any] = {"setup_s": round(time.perf_counter() - t, 1), "setup": record, "runs": []}
    with tempfile.TemporaryDirectory(prefix="infc-arm-qemu-") as tmp:
        for isa in (["arm64", "arm64_dotprod"] if args.isa == "both" else [args.isa]):
            results["runs"].append(run_isa(isa, Path(tmp), args.ready_timeout))
            print(json.dumps(results["runs"][-1]), file=sys.stderr)
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0 if all(r["within_budget"] for r in results["runs"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
