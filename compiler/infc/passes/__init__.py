"""Graph passes. Importing this package registers every pass in `PASSES`."""

from . import check_model, convert_fp16, fuse_graph, quantize  # noqa: F401  (registration)
from .base import PASSES, Pass, PassContext, PassResult, op_counts, run_passes

__all__ = ["PASSES", "Pass", "PassContext", "PassResult", "op_counts", "run_passes"]
