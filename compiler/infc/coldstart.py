"""Cold start: the bundle ships Numba's compile cache of its kernels, so a fresh server does not JIT.

The generated kernels are `@numba.njit(cache=True)`: Numba keeps their machine
code in `__pycache__/` beside the source, one index (`pre.<function>-<line>.py311.nbi`)
and data files (`.nbc`) per function. A later process finds an entry when
  - the source file has the same name and the function the same line (the file names),
  - the index's source stamp matches: a hash of the file's contents (in recent
    Numba, 0.68 here; older ones used its mtime and size, which a copy changes),
  - the key matches: the argument types, the target machine (LLVM's CPU name and
    features) and a hash of the function's bytecode;
and it imports the module by the name the runtime gives it, a hash of its content
(`infc_runtime.pipeline.load_kernel_module`). None of this depends on where the
bundle lies, so a cache made from the bundle's own files is valid wherever the
bundle is copied, on a machine with the same CPU: the build ships it when the
build host is the target. Otherwise the server compiles during its warm-up,
before it reports ready.

The cache is made by the latency gate's measurement (`infc.latency_gate`): a
fresh interpreter runs the server's own warm-up (`Pipeline.warmup`, so it holds
every signature the server compiles) with the bundle's own runtime, on the
bundle's files staged in a scratch folder; `collect_kernel_cache` then takes
what it left in `kernels/__pycache__` and `infc_runtime/ops/__pycache__` (the
runtime's ops library, which the kernels call: compiled by the same warm-up). The index files (`.nbi`) are the same for
the same inputs; the machine code (`.nbc`) is not byte for byte: Numba records
the source's path, numbers each compile of a function within a process and
names some objects by their address. So the cache files are measured files
(`infc.bundle.is_measured`): outside the content hash, hashed in
`measurements.files`.

The in-tree cache needs `kernels/__pycache__` writable at run time (Numba
checks); where it is not, Numba falls back to its user-wide cache and compiles.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numba

__all__ = ["KernelCache", "collect_kernel_cache"]

_CACHED = ("kernels", "infc_runtime/ops")
"""Bundle folders whose Numba cache (`__pycache__/*.nbi|*.nbc`) a bundle built for its host ships."""

@dataclass(frozen=True)
class KernelCache:
    """Numba cache files to ship (bundle path -> bytes), or why there are none."""

    shipped: bool
    reason: str
    files: dict[str, bytes] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"shipped": self.shipped, "reason": self.reason, "files": sorted(self.files),
                "numba": numba.__version__, "cpu": _cpu()}


def _cpu() -> str:
    from llvmlite import binding

    return str(binding.get_host_cpu_name())


def _content_stamped() -> bool:
    """Whether this Numba stamps cache entries by the source's content (so a copied file still hits)."""
    from numba.core import caching

    return hasattr(caching, "_hash_source_file")


def collect_kernel_cache(stage: Path, *, host_is_target: bool) -> KernelCache:
    """The Numba cache that the warm-up of the bundle staged in `stage` left behind; none when not worth
    shipping (the build host is not the target, or this Numba stamps its cache with file times)."""
    if not host_is_target:
        return KernelCache(False, "the build host is not the target: the server compiles the kernels during "
                                  "its warm-up, before it reports ready")
    if not _content_stamped():
        return KernelCache(False, f"Numba {numba.__version__} stamps its cache with file times, which copying "
                                  "the bundle changes: the server compiles during its warm-up")
    cache = {}
    for folder in _CACHED:  # the generated kernels, and the runtime's ops library they call
        found = sorted(p for p in (stage / folder / "__pycache__").glob("*") if p.suffix in (".nbi", ".nbc"))
        cache.update({f"{folder}/__pycache__/{p.name}": p.read_bytes() for p in found})
    if not cache:
        return KernelCache(False, "the kernels have no Numba functions: nothing to compile")
    return KernelCache(True, f"Numba's cache of the kernels for CPU {_cpu()}: a server on this CPU does not "
                             "compile them", cache)
