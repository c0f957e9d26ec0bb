"""The execution providers a bundle asks for, and the rule that it never runs silently on CPU.

A bundle's `session.providers` (from the plan: `["CUDAExecutionProvider",
"CPUExecutionProvider"]` for a cuda target) lists what its graph was built
for. ONNX Runtime quietly does without a provider it cannot use: the CPU
package lists no CUDAExecutionProvider, and onnxruntime-gpu lists it but drops
it from the session when the CUDA or cuDNN libraries do not load. A cuda bundle
would then answer 200 OK from the CPU, slower than budgeted and with no word.

`check` turns that into an error (`ProviderError`) unless CPU fallback is
allowed explicitly (`--allow-cpu-fallback`, or the environment variable
`INFC_ALLOW_CPU_FALLBACK=1`, `ALLOW_CPU_FALLBACK_ENV`); allowed, the server
says so in its log, its model metadata and the metric `infc_cpu_fallback`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

__all__ = ["ALLOW_CPU_FALLBACK_ENV", "CPU", "FALLBACK_OPTION", "ProviderError", "allow_cpu_fallback_env",
           "check", "missing", "requested"]

CPU = "CPUExecutionProvider"

FALLBACK_OPTION = "--allow-cpu-fallback"
"""The command-line option that lets a bundle built for an accelerator run on CPU."""

ALLOW_CPU_FALLBACK_ENV = "INFC_ALLOW_CPU_FALLBACK"
"""`1` (or `true`, `yes`, `on`) allows CPU fallback as `--allow-cpu-fallback` does (for images, where the
command line is fixed); `0`, `false`, `no`, `off` or unset does not."""

_TRUE, _FALSE = ("1", "true", "yes", "on"), ("", "0", "false", "no", "off")

_NEEDS = {"CUDAExecutionProvider": "onnxruntime-gpu (not onnxruntime), an NVIDIA GPU with its driver, and the "
                                   "CUDA and cuDNN libraries that onnxruntime-gpu release was built against",
          "TensorrtExecutionProvider": "onnxruntime-gpu, an NVIDIA GPU and the TensorRT libraries"}


class ProviderError(RuntimeError):
    """The bundle needs an execution provider this host cannot give it, and CPU fallback was not allowed."""


def allow_cpu_fallback_env(environ: Mapping[str, str] | None = None) -> bool:
    """Whether `INFC_ALLOW_CPU_FALLBACK` allows CPU fallback; ValueError (naming the variable) for another value."""
    value = (os.environ if environ is None else environ).get(ALLOW_CPU_FALLBACK_ENV, "").strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"{ALLOW_CPU_FALLBACK_ENV}={value[:40]!r}: expected 1 (allow) or 0 (do not)")


def requested(settings: Mapping[str, object] | None) -> list[str]:
    """The providers a bundle's `session` settings ask for, in order (CPU alone when none are named)."""
    providers = (settings or {}).get("providers")
    if not isinstance(providers, Sequence) or isinstance(providers, str) or not providers:
        return [CPU]
    return [str(p) for p in providers]


def missing(wanted: Sequence[str], in_use: Sequence[str]) -> tuple[str, ...]:
    """The providers other than CPU in `wanted` that are not in `in_use` (empty: the bundle runs as built)."""
    return tuple(p for p in wanted if p != CPU and p not in in_use)


def check(wanted: Sequence[str], available: Sequence[str], in_use: Sequence[str] | None, *,
          allow_cpu_fallback: bool) -> tuple[str, ...]:
    """The providers of `wanted` the session does without (`in_use`: the session's, None before it is made);
    ProviderError with the whole story when any is and fallback is not allowed."""
    lacking = missing(wanted, available if in_use is None else in_use)
    if not lacking or allow_cpu_fallback:
        return lacking
    names = ", ".join(lacking)
    if in_use is None:
        why = (f"onnxruntime here offers {', '.join(available) or 'none'} (this onnxruntime build "
               f"has no {names}); it needs {'; '.join(_NEEDS.get(p, p) for p in lacking)}")
    else:
        why = (f"onnxruntime offers it but the session did not load it and runs on {', '.join(in_use)} "
               "(the usual cause: the CUDA or cuDNN libraries are missing or of another version than "
               "onnxruntime-gpu needs, or no GPU is visible to the process)")
    raise ProviderError(f"this bundle is built for {names}, which cannot be used here: {why}. It does not run "
                        f"on CPU unless told to: pass {FALLBACK_OPTION} (or set {ALLOW_CPU_FALLBACK_ENV}=1) to "
                        "serve on CPU anyway, slower than the bundle was built for")
