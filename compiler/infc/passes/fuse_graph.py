"""FuseGraphPass: ONNX Runtime's offline graph optimizer (constant folding, fusions).

The optimized graph is what ships, so the server's session starts from a graph
that is already folded and fused (less work at load, shorter cold start).
`level` is `basic` (portable: any execution provider), `extended` (fusions
into contrib ops for the plan's provider) or `all` (adds layout transforms for
the build host's exact ISA: only when the host is the target).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import onnx
import onnxruntime as ort

from .base import PassContext, PassResult, op_counts, ops_change, register, unchanged

__all__ = ["FuseGraphPass"]

_LEVELS = {"basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
           "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
           "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}


@register
class FuseGraphPass:
    """Run ORT's graph optimizer offline and keep the optimized graph."""

    name = "fuse_graph"

    @staticmethod
    def summary(record: Mapping[str, Any]) -> str:
        """The op types the optimizer removed and added, at its level."""
        return unchanged(record) or ops_change(record)

    def __init__(self, level: str = "extended", provider: str = "CPUExecutionProvider") -> None:
        if level not in _LEVELS:
            raise ValueError(f"level must be one of {sorted(_LEVELS)}, got {level!r}")
        self.level, self.provider = level, provider

    def call(self, model: onnx.ModelProto, ctx: PassContext) -> PassResult:
        out = ctx.workdir / f"{self.name}.onnx"
        opts = ort.SessionOptions()
        opts.graph_optimization_level = _LEVELS[self.level]
        opts.optimized_model_filepath = str(out)
        opts.log_severity_level = 3
        ort.InferenceSession(model.SerializeToString(), sess_options=opts, providers=[self.provider])
        optimized = onnx.load(str(out))
        before, after = op_counts(model), op_counts(optimized)
        return PassResult(optimized, modified=before != after or len(model.graph.node) != len(optimized.graph.node),
                          record={"level": self.level, "ops_before": before, "ops_after": after})
