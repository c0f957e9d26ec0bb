"""The latency gate on a noisy host: the old in-process measurement against the bundle measured as it ships.

    python bench/gate_noise.py [--spec specs/digits/digits.yaml ...] [--rounds 6]

For each spec: one build in this process (`infc.build.build`, lock ignored, gate off), whose
result stays alive, as the compiler's heap does during a build. Then, round after round,
the two ways of measuring the same bundle, order flipped every round:

- in process (the gate before issue 7): the bundle's `Pipeline` timed in this process,
  300 single-row requests, p99 = the 3rd-worst, compared with the budget as it is;
- shipped (the gate now): `infc.latency_gate.measure_bundle` on the bundle directory, a
  fresh interpreter with the bundle's own runtime, adaptive sample count, 95% intervals,
  and the gate's rule (pass / fail / inconclusive).

Reported per spec and way: p99 median and range over the rounds, and how many rounds
would have failed the build (in process: p99 over the budget; shipped, lenient mode:
an interval wholly over the budget). Not a test: numbers move with the machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SPECS = [ROOT / "specs" / "digits" / "digits.yaml", ROOT / "specs" / "tabular" / "tabular.yaml"]


def _in_process(bundle: Path, requests: dict[str, Any], budget: Any) -> dict[str, Any]:
    from infc.gates import measure_latency
    from infc_runtime.pipeline import Pipeline

    result = measure_latency(Pipeline.load(bundle), requests, budget, enforce=True, iterations=300)
    limit = budget.p99 if budget and budget.p99 else None
    return {"p99": result.p99_ms, "fails": limit is not None and result.p99_ms > limit, "detail": ""}


def _shipped(bundle: Path, validation: Path | None, budget: Any, scratch: Path) -> dict[str, Any]:
    import shutil

    from infc.latency_gate import gate, measure_bundle

    stage = scratch / f"stage-{time.monotonic_ns()}"
    shutil.copytree(bundle, stage)
    measured = measure_bundle(stage, requests=validation, budget=budget)
    shutil.rmtree(stage, ignore_errors=True)
    g = gate(measured, mode="lenient", on_target=True)
    p99 = g.get("p99")
    return {"p99": p99.value_ms, "fails": g.fails_build, "detail": f"{g.measured} {p99.interval()} n={g.samples}",
            "quiet": g.noise.get("quiet"), "spread": g.noise.get("spread")}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", type=Path, action="append")
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args(argv)
    from infc.build import build
    from infc.spec import load_spec

    print(f"# gate_noise  nproc={os.cpu_count()}  load={os.getloadavg()[0]:.2f}  python={sys.version.split()[0]}")
    print("| spec | way | p99 ms median (min-max) | builds failed | rounds |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="gate-noise-") as tmp:
        scratch = Path(tmp)
        for spec_path in args.spec or DEFAULT_SPECS:
            result = build(spec_path, scratch / spec_path.stem, iterations=50, latency_gate="off", lock="ignore")
            assert result.path is not None
            spec = result.spec
            validation = load_spec(spec_path).validation
            requests = validation.requests if validation else {t.name: None for t in spec.inputs}
            budget = spec.budget.latency_ms
            runs: dict[str, list[dict[str, Any]]] = {"in process (before)": [], "shipped (now)": []}
            for i in range(args.rounds):
                order = list(runs) if i % 2 == 0 else list(reversed(runs))
                for way in order:
                    if way.startswith("in process"):
                        runs[way].append(_in_process(result.path, requests, budget))
                    else:
                        runs[way].append(_shipped(result.path, spec.optimize.validation, budget, scratch))
            for way, rs in runs.items():
                p99 = [r["p99"] for r in rs]
                print(f"| {spec.name} (p99 budget {budget.p99 if budget else '-'} ms) | {way} | "
                      f"{statistics.median(p99):.3f} ({min(p99):.3f}-{max(p99):.3f}) | "
                      f"{sum(r['fails'] for r in rs)} of {len(rs)} | "
                      + "; ".join(r["detail"] for r in rs if r["detail"]) + " |")
    print(f"# load at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
