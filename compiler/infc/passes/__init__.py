"""Graph passes, one per module. Importing this package registers every pass in `PASSES`."""

import importlib
import pkgutil

from ._quant import quantizable_nodes
from .base import PASSES, Pass, PassContext, PassResult, op_counts, run_passes, summary

for _module in pkgutil.iter_modules(__path__):
    if not _module.name.startswith("_") and _module.name != "base":
        importlib.import_module(f"{__name__}.{_module.name}")  # registration happens at import

__all__ = ["PASSES", "Pass", "PassContext", "PassResult", "op_counts", "quantizable_nodes", "run_passes", "summary"]
