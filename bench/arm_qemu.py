"""An arm bundle's own server under qemu-aarch64: ready, one inference over HTTP, equal to the x86 result.

    python bench/arm_qemu.py [--isa arm64|arm64_dotprod|both] [--json OUT.json] [--accuracy]

For each ISA: builds specs/digits (a copy, with `target: {hardware: arm, isa: ISA}`), installs the bundle's
requirements.txt for aarch64 into a site folder (pip's cross-platform download, cached), starts the bundle's
serve.py under `qemu-aarch64 -cpu MODEL` (cortex-a72 for arm64: no dot-product; neoverse-n1 for
arm64_dotprod), waits for /v2/health/ready, posts the 450 validation images, and compares the answer with the
x86 reference (the spec built with `quantize: none`, served on this host): the top-1 labels must agree within the
spec's top1_agreement budget. The same bundle served on x86 is compared too, for information (an int8 bundle
need not compute the same on both: u8s8 products saturate on AVX2, not with the dot-product extension).
Needs the emulators (`python -m infc.emulate setup`, run first here and timed). Prints what it measured:
set-up time, build time, site time, ready time under emulation, agreement and the largest score difference.
Latency under emulation is not the target's and is not reported. `--accuracy` also builds each arm spec twice
without writing it, once with the emulator hidden (every candidate's accuracy on this host's numerics) and once
with it (on the target's), and prints both per candidate.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import yaml

from infc.build import build
from infc.emulate import CPU_MODELS, EMULATOR_DIR_ENV, arm64, emulator_dir, target_site
from infc.emulate_setup import setup

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def arm_spec(isa: str, into: Path) -> Path:
    """A copy of specs/digits with the arm target `isa` (and no lock: the choice is made for this target);
    isa `reference`: the x86 fp32 reference (this host, `quantize: none`)."""
    shutil.copytree(ROOT / "specs/digits", into, ignore=shutil.ignore_patterns("*.lock"))
    path = into / "digits.yaml"
    data = yaml.safe_load(path.read_text())
    if isa == "reference":
        data["optimize"]["quantize"] = "none"
    else:
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

    diff = float(np.max(np.abs(np.asarray(host["scores"]) - np.asarray(emulated["scores"]))))
    return {"top1_agreement": float(np.mean(top1(host) == top1(emulated))), "max_score_diff": diff}


def reference(work: Path, images: np.ndarray) -> dict[str, Any]:
    """The x86 fp32 reference's answer: the spec built with `quantize: none` for this host, served here."""
    outcome = build(arm_spec("reference", work / "spec-reference"), work / "build-reference", latency_gate="off",
                    lock="ignore", iterations=50)
    assert outcome.path is not None
    return serve([sys.executable, str(outcome.path / "serve.py"), "--port", "{port}"], None,
                 work / "reference.log", images, 60)[1]


def run_isa(isa: str, work: Path, ready_timeout: float, images: np.ndarray, x86_fp32: dict[str, Any]
            ) -> dict[str, Any]:
    spec = arm_spec(isa, work / f"spec-{isa}")
    t = time.perf_counter()
    outcome = build(spec, work / f"build-{isa}", latency_gate="off", lock="ignore", wheelhouse=True, archive=True)
    built = time.perf_counter() - t
    assert outcome.path is not None and outcome.archive is not None
    # what ships: the archive unpacked on the "device", its aarch64 wheelhouse installed with no index
    with tarfile.open(outcome.archive) as archive:
        archive.extractall(work / f"device-{isa}", filter="data")
    bundle = work / f"device-{isa}" / outcome.path.name
    t = time.perf_counter()
    site = target_site((bundle / "requirements.txt").read_text(), wheels=bundle / "wheels")
    site_s = time.perf_counter() - t
    emulator = arm64(CPU_MODELS[isa], site)
    ready, emulated = serve(emulator.command(bundle / "serve.py", ["--port", "{port}"]), emulator.environ(),
                            work / f"serve-{isa}.log", images, ready_timeout)
    _, host = serve([sys.executable, str(bundle / "serve.py"), "--port", "{port}"], None,
                    work / f"host-{isa}.log", images, 60)
    budget = float(yaml.safe_load(spec.read_text())["budget"]["accuracy"]["min"])
    result = compare(x86_fp32, emulated, len(images))
    same = compare(host, emulated, len(images))
    return {"isa": isa, "emulator": emulator.name, "chosen": outcome.chosen.candidate.name, "build_s": round(built, 1),
            "site_s": round(site_s, 1), "ready_s": round(ready, 1), "rows": len(images), **result,
            "budget_min": budget, "within_budget": result["top1_agreement"] >= budget,
            "same_bundle_on_x86": same}


SHOWN = ("top1_agreement", "cosine_min", "max_abs_error", "accuracy")
"""The accuracy figures printed per candidate (the budgeted metric, and how far the logits moved)."""


def accuracy(isa: str, work: Path) -> dict[str, Any]:
    """Each candidate's accuracy on this host's numerics and on the target's (under the emulator), and the
    choice each build made."""
    spec = arm_spec(isa, work / f"acc-{isa}")
    real = os.environ.get(EMULATOR_DIR_ENV)
    out: dict[str, Any] = {"isa": isa}
    for numerics, folder in (("x86", str(work / "no-emulator")), ("arm", str(emulator_dir()))):
        os.environ[EMULATOR_DIR_ENV] = folder
        try:
            t = time.perf_counter()
            outcome = build(spec, work / "unused", latency_gate="off", lock="ignore", write=False, iterations=50)
            out[f"build_s_{numerics}"] = round(time.perf_counter() - t, 1)
        finally:
            if real is None:
                os.environ.pop(EMULATOR_DIR_ENV, None)
            else:
                os.environ[EMULATOR_DIR_ENV] = real
        out[f"chosen_{numerics}"] = outcome.chosen.candidate.name
        for e in outcome.evaluations:
            shown = {**(e.accuracy[0].details if e.accuracy else {}), **{a.name: a.value for a in e.accuracy}}
            out.setdefault("candidates", {}).setdefault(e.candidate.name, {})[numerics] = {
                k: round(v, 6) for k, v in shown.items() if k in SHOWN}
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--isa", choices=["arm64", "arm64_dotprod", "both"], default="both")
    parser.add_argument("--ready-timeout", type=float, default=600)
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--accuracy", action="store_true", help="also: candidates' accuracy, x86 vs arm numerics")
    parser.add_argument("--no-serve", action="store_true", help="with --accuracy: only that (no server started)")
    args = parser.parse_args()
    t = time.perf_counter()
    record = setup(emulator_dir(), log=lambda line: print(line, file=sys.stderr))
    results: dict[str, Any] = {"setup_s": round(time.perf_counter() - t, 1), "setup": record, "runs": []}
    images = np.load(ROOT / "specs/digits/val.npz")["image"]
    with tempfile.TemporaryDirectory(prefix="infc-arm-qemu-") as tmp:
        x86_fp32 = reference(Path(tmp), images) if not args.no_serve else {}
        for isa in (["arm64", "arm64_dotprod"] if args.isa == "both" else [args.isa]):
            if not args.no_serve:
                results["runs"].append(run_isa(isa, Path(tmp), args.ready_timeout, images, x86_fp32))
                print(json.dumps(results["runs"][-1]), file=sys.stderr)
            if args.accuracy:
                results.setdefault("accuracy", []).append(accuracy(isa, Path(tmp)))
                print(json.dumps(results["accuracy"][-1]), file=sys.stderr)
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0 if all(r["within_budget"] for r in results["runs"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
