"""Tabular pre-processing: 1,000 JSON rows of 30 fields -> a standardized float32 matrix, side by side.

    python bench/tabular_pre.py [--rows 1000] [--rounds 50] [--append]

The rows are the breast-cancer example's (specs/tabular, its 30 named
measurements, repeated to --rows), each a JSON object as a client posts it in
the BYTES tensor `rows`. Every contender gets the same rows and the same
mean/std (the example's `standardize: {from: calibration}`, resolved):

- infc: the example's generated `kernels/pre.py` (features -> standardize:
  `infc_runtime.rows.decode_rows`, then one fused njit loop), also split into
  its two stages;
- numpy: a hand-written pipeline (json.loads per row, a list of the fields in
  order per row, np.array, (x - mean) / std);
- pandas (when installed: `pip install ".[bench]"`; not a dependency of infc): DataFrame.from_records of
  the parsed rows, and read_json over the rows as JSON lines.

infc also checks every value (a string where a number belongs, a missing
field: a 400 naming it); the hand-written pipelines check nothing. Every
output is compared with infc's before timing. Prints a markdown table;
--append adds it to bench/RESULTS.md with the command, date and machine.
Not a test: numbers move with the machine.
"""

from __future__ import annotations

import argparse
import datetime
import io
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numba
import numpy as np
from _machine import cpu_model

from infc.kernels.codegen import generate
from infc.kernels.graph import resolve
from infc.spec import load_spec, prepare_spec
from infc_runtime.pipeline import load_kernel_module
from infc_runtime.types import TensorSpec

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "specs" / "tabular" / "tabular.yaml"
RESULTS = ROOT / "bench" / "RESULTS.md"

try:
    import pandas as pd
except ImportError:  # pandas is optional here
    pd = None


def _kernels(tmp: Path) -> tuple[Any, Any, list[str], np.ndarray, np.ndarray]:
    """The example's generated pre module, the same standardize step alone on a float32 matrix,
    the field names, and the resolved mean/std."""
    checked, _ = prepare_spec(load_spec(SPEC))
    spec, pre = checked.spec, checked.pre
    (tmp / "pre.py").write_text(generate("pre", pre, name=spec.name, version=spec.version))
    params = spec.preprocess[1].params
    fields = [f if isinstance(f, str) else f["name"] for f in spec.preprocess[0].params["fields"]]
    alone = resolve([("standardize", dict(params))], [TensorSpec("x", "float32", (len(fields),))],
                    lambda i, issue: sys.exit(str(issue)))
    (tmp / "standardize.py").write_text(generate("pre", alone, name="standardize", version="0"))
    return (load_kernel_module(tmp / "pre.py"), load_kernel_module(tmp / "standardize.py"), fields,
            np.asarray(params["mean"], np.float32), np.asarray(params["std"], np.float32))


def _rows(n: int) -> np.ndarray:
    data = [np.load(SPEC.parent / name)["rows"] for name in ("calib.npz", "val.npz")]
    pool = np.concatenate(data).astype(object)
    return pool[np.arange(n) % len(pool)]


def _timed(fn: Callable[[], Any], rounds: int) -> tuple[float, float]:
    """Median and best wall time in ms over `rounds` calls (after one warm-up call)."""
    fn()
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000.0)
    return float(np.median(times)), float(min(times))


def _machine() -> str:
    model = cpu_model()
    versions = f"Python {platform.python_version()}, numpy {np.__version__}, numba {numba.__version__}"
    if pd is not None:
        versions += f", pandas {pd.__version__}"
    return f"{os.cpu_count()} cores (nproc), {model}; {versions}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--append", action="store_true", help="append the table to bench/RESULTS.md")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="infc-bench-") as tmp:
        module, standardize, fields, mean, std = _kernels(Path(tmp))
        rows = _rows(args.rows)

        def infc() -> np.ndarray:
            return np.asarray(module.run({"rows": rows})["features"])

        def numpy_pipeline() -> np.ndarray:
            parsed = [json.loads(r) for r in rows]
            x = np.array([[row[f] for f in fields] for row in parsed], dtype=np.float32)
            return (x - mean) / std

        contenders: list[tuple[str, Callable[[], np.ndarray]]] = [("infc generated kernels", infc),
                                                                  ("numpy, hand-written", numpy_pipeline)]
        if pd is not None:
            def pandas_records() -> np.ndarray:
                frame = pd.DataFrame.from_records([json.loads(r) for r in rows], columns=fields)
                return (frame.to_numpy(np.float32) - mean) / std

            def pandas_read_json() -> np.ndarray:
                frame = pd.read_json(io.BytesIO(b"\n".join(rows)), lines=True, dtype=False)
                return (frame[fields].to_numpy(np.float32) - mean) / std

            contenders += [("pandas, from_records", pandas_records), ("pandas, read_json(lines)", pandas_read_json)]

        want = infc()
        for name, fn in contenders[1:]:
            np.testing.assert_allclose(fn(), want, rtol=1e-6, atol=1e-6, err_msg=name)

        results = [(name, *_timed(fn, args.rounds)) for name, fn in contenders]
        decoded = module.decode_rows(rows, module.FIELDS_0, "rows")
        stages = [("  of which: decode_rows (JSON -> float32)", *_timed(
                       lambda: module.decode_rows(rows, module.FIELDS_0, "rows"), args.rounds)),
                  ("  of which: fused standardize loop", *_timed(lambda: standardize.run({"x": decoded}),
                                                                   args.rounds))]

    base = results[1][1]
    lines = [f"| pipeline ({args.rows} rows x {len(fields)} fields) | median ms | best ms | vs numpy |",
             "|---|---|---|---|"]
    for name, med, best in results:
        lines.append(f"| {name} | {med:.2f} | {best:.2f} | {base / med:.2f}x |")
    for name, med, best in stages:
        lines.append(f"| {name} | {med:.3f} | {best:.3f} | |")
    table = "\n".join(lines)
    print(table)
    if args.append:
        command = "python bench/tabular_pre.py " + " ".join(sys.argv[1:])
        section = (f"\n## Tabular pre-processing: JSON rows -> standardized float32 (tabular example)\n\n"
                   f"- command: `{command.strip()}`\n- date: {datetime.date.today().isoformat()}\n"
                   f"- machine: {_machine()}\n\n{table}\n")
        with RESULTS.open("a") as f:
            f.write(section)
        print(f"appended to {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
