"""Pinned run-time requirements for a bundle, read from the build environment.

The runtime's direct dependencies and everything they pull in (for the target's
platform markers) are pinned to the versions the build measured with, so the
bundle runs with the exact code its report describes.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import metadata

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

__all__ = ["FAST_REQUIREMENTS", "PLATFORM_MARKERS", "RUNTIME_REQUIREMENTS", "STEP_REQUIREMENTS", "pinned_requirements",
           "versions"]

RUNTIME_REQUIREMENTS = ("onnxruntime", "numpy", "numba", "uvicorn", "starlette", "prometheus_client", "grpcio",
                        "protobuf", "cryptography")
"""grpcio, protobuf: `serve.py --grpc-port` only; cryptography: `serve.py --public-key` (INFC_PUBLIC_KEY) only, a
few MB of well-kept wheels pinned so that a bundle's image can require signatures (each imported only then)."""
FAST_REQUIREMENTS = ("httptools", "uvloop", "orjson")
"""The server's fast path (HTTP parser, event loop, JSON codec): pinned when the build host has them; the runtime
falls back to h11, asyncio and the stdlib json without them."""
PLATFORM_MARKERS = {"uvloop": 'sys_platform != "win32"'}
"""Environment markers written after a pin, by distribution name (canonical): uvloop has no Windows build, and the
runtime runs on asyncio's loop without it, so `pip install -r requirements.txt` skips it there."""
STEP_REQUIREMENTS = ("tokenizers", "pillow")
"""Run-time dependencies of some steps only (`StepDef.requires`), pinned into the bundles that use them."""


def _closure(roots: tuple[str, ...]) -> dict[str, str]:
    env: dict[str, str] = {k: str(v) for k, v in default_environment().items()}
    env["extra"] = ""
    seen: dict[str, str] = {}
    todo = list(roots)
    while todo:
        name = canonicalize_name(todo.pop())
        if name in seen:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        seen[name] = dist.version
        for line in dist.requires or []:
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate(env):
                todo.append(req.name)
    return seen


def pinned_requirements(target: str, extra: Sequence[str] = ()) -> str:
    """requirements.txt text: every run-time distribution (the runtime's, and `extra`: what the bundle's
    steps need, from STEP_REQUIREMENTS), pinned, sorted."""
    unknown = set(extra) - set(STEP_REQUIREMENTS)
    if unknown:
        raise ValueError(f"not step requirements: {sorted(unknown)}")
    pins = _closure((*RUNTIME_REQUIREMENTS, *FAST_REQUIREMENTS, *extra))
    lines = []
    for name, version in sorted(pins.items()):
        if name == "onnxruntime" and target == "cuda":
            name = "onnxruntime-gpu"
        marker = PLATFORM_MARKERS.get(name)
        lines.append(f"{name}=={version}" if marker is None else f"{name}=={version}; {marker}")
    header = f"# run-time requirements for target {target}, pinned to the versions the build was measured with\n"
    return header + "\n".join(lines) + "\n"


def versions() -> dict[str, str]:
    """Versions of the tools a build used (recorded in the manifest)."""
    import platform

    out = {"python": platform.python_version()}
    for name in ("infc", "onnx", "onnxruntime", "numpy", "numba", "jinja2", *RUNTIME_REQUIREMENTS[3:],
                 *FAST_REQUIREMENTS, *STEP_REQUIREMENTS):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "unknown"
    return out
