"""The fixed kernels generated modules call by name: hand-written, typed and tested on their own.

Only the fused per-element loops and the module glue are generated
(`infc.kernels.codegen`); every other step calls one function here. Numba
kernels are `@njit(cache=True, nogil=True)`: their cache lies in this folder's
`__pycache__/`, which a bundle built for its host ships (like `kernels/__pycache__`).
`decode` (Pillow) and `text` (tokenizers) are imported from their modules, only
by bundles whose steps need them.
"""

from .decisions import labels, names_table, threshold
from .detection import nms
from .pooling import mean_pool
from .rowwise import argmax, l2_normalize, softmax, topk
from .sampling import linear_taps, nearest_taps, per_image
from .tabular import as_float32, one_hot

__all__ = ["argmax", "as_float32", "l2_normalize", "labels", "linear_taps", "mean_pool", "names_table",
           "nearest_taps", "nms", "one_hot", "per_image", "softmax", "threshold", "topk"]
