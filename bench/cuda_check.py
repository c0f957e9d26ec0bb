"""Check CUDA bundles on a real GPU: the fp16 bundle runs there and agrees with the fp32 one.

    python bench/cuda_check.py [OUTDIR]

Needs an NVIDIA GPU and onnxruntime-gpu (with the CUDA and cuDNN libraries it
was built against). For the digits MLP (`specs/digits/`) and the small digits
CNN (`tests/models/digits_cnn.onnx`) it builds two bundles for `target: cuda`:
fp32 (`fp16: false`, `quantize: none`) and fp16 (`fp16: true`, `quantize:
fp16`), so the build measures latency on the GPU (the gate reports, `off`).
Then it loads each bundle as its server does, without CPU fallback (a bundle
whose CUDA provider does not load is refused: `infc_runtime.providers`), runs
the validation images through both, and prints per model: the providers each
session uses, the largest absolute difference of the fp16 model's outputs from
the fp32 model's, their top-1 agreement, and each bundle's measured p50/p99.

Without a usable CUDA provider it prints one line saying what is missing and
exits 3 (no traceback); 0 when the checks ran and fp16 agreed with fp32 on
at least 99% of top-1 answers, 1 otherwise. Not a test: CI has no GPU.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort

ROOT = Path(__file__).resolve().parents[1]
CUDA = "CUDAExecutionProvider"
EXIT_OK, EXIT_DISAGREE, EXIT_NO_CUDA = 0, 1, 3
MIN_TOP1 = 0.99
MODELS = (("mlp", ROOT / "specs/digits/digits.onnx"), ("cnn", ROOT / "tests/models/digits_cnn.onnx"))
VARIANTS = {"fp32": "target: {hardware: cuda, fp16: false}", "fp16": "target: {hardware: cuda, fp16: true}"}
QUANTIZE = {"fp32": "quantize: none", "fp16": "quantize: fp16"}


def _spec(work: Path, model: Path, variant: str) -> Path:
    """A copy of the digits spec for `variant` (fp32 or fp16 on cuda) in `work`, beside its model and data."""
    work.mkdir(parents=True, exist_ok=True)
    for name in ("calib.npz", "val.npz"):
        shutil.copy(ROOT / "specs/digits" / name, work / name)
    shutil.copy(model, work / "digits.onnx")
    text = (ROOT / "specs/digits/digits.yaml").read_text()
    for old, new in (("target: {hardware: x86, isa: native}", VARIANTS[variant]),
                     ("quantize: auto", QUANTIZE[variant])):
        if old not in text:
            raise SystemExit(f"error: specs/digits/digits.yaml no longer holds {old!r}: update {__file__}")
        text = text.replace(old, new)
    (work / "spec.yaml").write_text(text)
    return work / "spec.yaml"


def _outputs(bundle: Path, images: np.ndarray) -> tuple[list[str], np.ndarray]:
    """The providers the bundle's session uses and its model's first output on `images` (64 rows a batch)."""
    from infc_runtime.serve import load_bundle  # the installed runtime, as `infc serve` uses

    pipeline = load_bundle(bundle)  # no CPU fallback: a CUDA provider that does not load is a ProviderError
    first = pipeline.session.get_outputs()[0].name
    parts = [pipeline.infer(pipeline.preprocess({"image": images[i:i + 64]}))[first]
             for i in range(0, len(images), 64)]
    return pipeline.providers, np.concatenate(parts).astype(np.float32)


def main(out: Path) -> int:
    available = ort.get_available_providers()
    print(f"onnxruntime {ort.__version__} ({ort.get_device()}): {', '.join(available)}")
    if CUDA not in available:
        print(f"error: no CUDA provider: this onnxruntime offers {', '.join(available)}; run this on a host with "
              "an NVIDIA GPU and onnxruntime-gpu installed (not onnxruntime)", file=sys.stderr)
        return EXIT_NO_CUDA
    from infc.build import build
    from infc_runtime.providers import ProviderError

    images = np.load(ROOT / "specs/digits/val.npz")["image"]
    agreed = True
    for label, model in MODELS:
        outputs: dict[str, np.ndarray] = {}
        for variant in VARIANTS:
            work = out / label / variant
            result = build(_spec(work, model, variant), work / "build", iterations=200,
                           report_path=work / "report.md", lock="ignore", latency_gate="off")
            lat = result.latency
            try:
                providers, outputs[variant] = _outputs(result.path, images)
            except ProviderError as exc:
                print(f"error: no CUDA provider: {result.path}: {exc}", file=sys.stderr)
                return EXIT_NO_CUDA
            print(f"{label} {variant}: chosen {result.chosen.candidate.name}, session on {', '.join(providers)}; "
                  f"latency measured on {', '.join(lat.providers) or '?'} (on the target: {lat.on_target}): "
                  f"p50 {lat.p50_ms:.3f} ms, p99 {lat.p99_ms:.3f} ms")
        fp32, fp16 = outputs["fp32"], outputs["fp16"]
        top1 = float(np.mean(fp32.argmax(axis=-1) == fp16.argmax(axis=-1)))
        print(f"{label}: fp16 vs fp32 on {len(images)} validation images: max abs difference "
              f"{float(np.abs(fp32 - fp16).max()):.3g}, top-1 agreement {top1:.4f}")
        agreed &= top1 >= MIN_TOP1
    return EXIT_OK if agreed else EXIT_DISAGREE


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("cuda-check")))
