"""The fixed kernels generated modules call by name: hand-written, typed and tested on their own.

Only the fused per-element loops and the module glue are generated
(`infc.kernels.codegen`); every other step calls one function here. Numba
kernels are `@njit(cache=True, nogil=True)`: their cache lies in this folder's
`__pycache__/`, which a bundle built for its host ships (like `kernels/__pycache__`).
`decode` (Pillow) and `text` (tokenizers) are imported from their modules, only
by bundles whose steps need them.

A name is imported from its module when first asked for (PEP 562), so a kernel
module that calls `labels` (numpy only) does not import Numba with `softmax`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .decisions import labels, names_table, threshold
    from .detection import nms
    from .pooling import mean_pool
    from .rowwise import argmax, l2_normalize, softmax, topk
    from .sampling import linear_taps, nearest_taps, per_image
    from .tabular import as_float32, one_hot

_MODULES = {
    "decisions": ("labels", "names_table", "threshold"),
    "detection": ("nms",),
    "pooling": ("mean_pool",),
    "rowwise": ("argmax", "l2_normalize", "softmax", "topk"),
    "sampling": ("linear_taps", "nearest_taps", "per_image"),
    "tabular": ("as_float32", "one_hot"),
}
_HOME = {name: module for module, names in _MODULES.items() for name in names}

__all__ = ["argmax", "as_float32", "l2_normalize", "labels", "linear_taps", "mean_pool", "names_table",
           "nearest_taps", "nms", "one_hot", "per_image", "softmax", "threshold", "topk"]


def __getattr__(name: str) -> Any:
    module = _HOME.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # once: later lookups are plain attribute reads
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
