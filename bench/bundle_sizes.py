"""Bundle, wheelhouse, archive and installed sizes of the digits example, for x86 and arm.

    python bench/bundle_sizes.py [--out DIR] [--keep]

Builds specs/digits with `--wheelhouse --archive` for `x86` (the spec as it is)
and for `arm` (a copy of the spec with `target: {hardware: arm}`: aarch64
wheels, ~100 MB more to download with a cold pip cache), then unpacks the x86
archive and runs its `install.sh` into a fresh venv (no index, bytecode
compiled, as it ships) and measures the venv. Prints one table: the bundle
without its wheels, the wheels, the whole bundle, the archive, the installed venv
(x86 only: an aarch64 venv cannot be made here), the number of wheels, and the
seconds the build and the install took. Not a test: sizes move with the pinned
versions, times with the machine.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import cpu_model  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "specs" / "digits" / "digits.yaml"


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def _arm_spec(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("digits.onnx", "calib.npz", "val.npz"):
        shutil.copy(SPEC.parent / name, folder / name)
    text = SPEC.read_text()
    native = "target: {hardware: x86, isa: native}"
    if native not in text:
        raise SystemExit(f"{SPEC}: no line `{native}` to change into an arm target")
    (folder / "digits.yaml").write_text(text.replace(native, "target: {hardware: arm}"))
    return folder / "digits.yaml"


def _build(spec: Path, out: Path) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "infc", "build", str(spec), "-o", str(out), "--wheelhouse", "--archive",
                    "--no-lock", "--latency-gate", "off", "--iterations", "50", "-q"], check=True,
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, help="build here (default: a temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()
    work = args.out or Path(tempfile.mkdtemp(prefix="infc-sizes-"))
    rows = []
    try:
        for target, spec in (("x86", SPEC), ("arm", _arm_spec(work / "arm-spec"))):
            out = work / target
            seconds = _build(spec, out)
            bundle = out / "digits-1.0.0"
            (archive,) = out.glob("digits-1.0.0-linux_*.tar.gz")
            wheels = bundle / "wheels"
            row = {"target": target, "archive name": archive.name, "bundle": _size(bundle), "wheels": _size(wheels),
                   "archive": archive.stat().st_size, "count": len(list(wheels.iterdir())), "build s": seconds}
            row["without wheels"] = row["bundle"] - row["wheels"]
            if target == "x86":
                unpacked = work / "unpacked"
                unpacked.mkdir()
                with tarfile.open(archive) as tar:
                    tar.extractall(unpacked, filter="data")
                venv = work / "venv"
                env = {**os.environ, "PIP_CONFIG_FILE": os.devnull, "PIP_NO_INDEX": "1"}
                start = time.perf_counter()
                subprocess.run([str(unpacked / "digits-1.0.0" / "install.sh"), str(venv)], check=True, env=env,
                               stdout=subprocess.DEVNULL)
                row["install s"] = time.perf_counter() - start
                row["installed"] = _size(venv)
            rows.append(row)
    finally:
        if args.out is None and not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    mb = 1e6
    print(f"machine: nproc {os.cpu_count()}, {cpu_model()}, {platform.machine()}, Python {platform.python_version()}")
    print("| target | archive | bundle w/o wheels MB | wheels MB (count) | bundle MB | archive MB | installed MB "
          "| build s | install s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        installed = f"{r['installed'] / mb:.1f}" if "installed" in r else "-"
        install = f"{r['install s']:.1f}" if "install s" in r else "-"
        print(f"| {r['target']} | {r['archive name']} | {r['without wheels'] / mb:.2f} | {r['wheels'] / mb:.1f} "
              f"({r['count']}) | {r['bundle'] / mb:.1f} | {r['archive'] / mb:.1f} | {installed} | "
              f"{r['build s']:.1f} | {install} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
