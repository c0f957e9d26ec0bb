"""fp32 vs infc's chosen plan, for each example spec, side by side in one run.

    python bench/plans.py [--rounds 5] [specs/digits/digits.yaml specs/tabular/tabular.yaml ...]

For every spec: `infc build` it twice into a temporary folder, once as written
(`quantize` as the spec says; the examples say `auto` or a fixed mode) and once
with `quantize: none` (the fp32 baseline, fused the same way), then load both
bundles and measure them in one process, interleaved round by round so the
machine's load hits both alike: session creation time, p50/p95/p99 of
single-row requests through pre + model + post, throughput at the chosen
serving batch size, model size, and the build's accuracy numbers. Prints a
markdown table per spec. Not a test: numbers move with the machine.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

from infc.build import build
from infc.gates import measure_latency
from infc.spec import load_spec
from infc_runtime.pipeline import Pipeline

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = [ROOT / "specs" / "digits" / "digits.yaml", ROOT / "specs" / "tabular" / "tabular.yaml",
           ROOT / "specs" / "minilm" / "minilm.yaml"]


def _fp32_copy(spec_path: Path, tmp: Path) -> Path:
    data = yaml.safe_load(spec_path.read_text())
    data.setdefault("optimize", {})["quantize"] = "none"
    for key in ("model",):
        data[key] = str((spec_path.parent / data[key]).resolve())
    for key in ("calibration", "validation"):
        if key in data["optimize"]:
            data["optimize"][key] = str((spec_path.parent / data["optimize"][key]).resolve())
    out = tmp / f"{spec_path.stem}-fp32.yaml"
    out.write_text(yaml.safe_dump(data, sort_keys=False))
    return out


def _measure(bundle: Path, requests: dict[str, np.ndarray], n: int) -> dict[str, float]:
    """Session creation, then the build's own latency measurement (batch: the bundle's serving batch)."""
    t0 = time.perf_counter()
    pipeline = Pipeline.load(bundle)
    created = time.perf_counter() - t0
    lat = measure_latency(pipeline, requests, None, enforce=False, iterations=n)
    return {"session_s": created, "p50": lat.p50_ms, "p95": lat.p95_ms, "p99": lat.p99_ms,
            "rows_per_s": lat.throughput_rps}


def bench_spec(spec_path: Path, rounds: int, n: int) -> str:
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        chosen = build(spec_path, tmp / "chosen", iterations=100, lock="ignore")
        fp32 = build(_fp32_copy(spec_path, tmp), tmp / "fp32", iterations=100, lock="ignore")
        assert chosen.path is not None and fp32.path is not None
        checked = load_spec(spec_path)
        spec = checked.spec
        assert checked.validation is not None
        requests = checked.validation.requests
        batch = json.loads((chosen.path / "manifest.json").read_text())["serving"]["max_batch_size"]
        runs: dict[str, list[dict[str, float]]] = {"fp32": [], "chosen": []}
        for _ in range(rounds):
            for name, result in (("fp32", fp32), ("chosen", chosen)):
                assert result.path is not None
                runs[name].append(_measure(result.path, requests, n))
        lines = [f"### {spec.name} (chosen plan: {chosen.chosen.candidate.name}; serving batch {batch})", "",
                 "| plan | p50 ms | p95 ms | p99 ms | rows/s at batch | session s | model | accuracy |",
                 "|---|---|---|---|---|---|---|---|"]
        for name, result in (("fp32", fp32), ("chosen", chosen)):
            assert result.path is not None
            med = {k: float(np.median([r[k] for r in runs[name]])) for k in runs[name][0]}
            size = (result.path / "model.onnx").stat().st_size / 1e6
            acc = ", ".join(f"{a.name} {a.value:.4f}" for a in result.accuracy)
            lines.append(f"| {name} ({result.chosen.candidate.name}) | {med['p50']:.3f} | {med['p95']:.3f} | "
                         f"{med['p99']:.3f} | {med['rows_per_s']:.0f} | {med['session_s']:.3f} | {size:.2f} MB | "
                         f"{acc} |")
        base = {k: float(np.median([r[k] for r in runs["fp32"]])) for k in ("p50", "rows_per_s")}
        mine = {k: float(np.median([r[k] for r in runs["chosen"]])) for k in ("p50", "rows_per_s")}
        lines += ["", f"chosen vs fp32: latency p50 x{base['p50'] / mine['p50']:.2f} faster, "
                      f"throughput x{mine['rows_per_s'] / base['rows_per_s']:.2f}", ""]
        return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("specs", nargs="*", type=Path)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=200, help="single-row requests per round")
    args = parser.parse_args()
    specs = args.specs or [p for p in DEFAULT if (p.parent / yaml.safe_load(p.read_text())["model"]).exists()]
    for spec in specs:
        print(bench_spec(spec, args.rounds, args.requests), flush=True)


if __name__ == "__main__":
    main()
