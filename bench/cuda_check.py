"""Check CUDA plans on a real GPU: build the digits example for `target: cuda` (fp32 and fp16 candidates).

    python bench/cuda_check.py OUTDIR

Prints onnxruntime's providers; where CUDAExecutionProvider is usable, builds
the digits spec (MLP) and the small digits CNN for `{hardware: cuda, fp16: true}`
with `quantize: auto` (so latency is measured and enforced on the GPU) and
prints each build's candidates and verdicts. Not a test: it needs a GPU and
onnxruntime-gpu.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import onnxruntime as ort

ROOT = Path(__file__).resolve().parents[1]


def main(out: Path) -> None:
    providers = ort.get_available_providers()
    print(f"onnxruntime {ort.__version__}: {providers}")
    if "CUDAExecutionProvider" not in providers:
        print("no CUDAExecutionProvider here: nothing to check on the GPU")
        return
    from infc.build import build

    for label, model in (("mlp", ROOT / "specs/digits/digits.onnx"), ("cnn", ROOT / "tests/models/digits_cnn.onnx")):
        work = out / label
        work.mkdir(parents=True, exist_ok=True)
        for name in ("calib.npz", "val.npz"):
            shutil.copy(ROOT / "specs/digits" / name, work / name)
        shutil.copy(model, work / "digits.onnx")
        text = (ROOT / "specs/digits/digits.yaml").read_text()
        text = text.replace("target: {hardware: x86, isa: native}", "target: {hardware: cuda, fp16: true}")
        (work / "spec.yaml").write_text(text)
        result = build(work / "spec.yaml", work / "build", iterations=200, report_path=work / "report.md",
                       lock="ignore")
        print(f"\n== {label}: chosen {result.chosen.candidate.name}, latency on the target: {result.latency.on_target}")
        for ev in result.evaluations:
            lat = "-"
            if ev.latency:
                lat = f"p50 {ev.latency.p50_ms:.3f} ms, "
                lat += f"batch {ev.latency.batch_size} {ev.latency.throughput_rps:.0f} rows/s"
            acc = ", ".join(f"{a.name} {a.value:.4f}" for a in ev.accuracy)
            print(f"  {ev.candidate.name}: {acc}; {lat}; {result.choice.verdict(ev)}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("cuda-check"))
