"""Which quantized nodes cost the most accuracy: rank them, so the search can keep the worst in fp32.

Both graphs run on the same feeds with every compute node's output exposed.
A node's *added error* is the relative error of its output (quantized vs fp32)
minus the largest relative error already present in its inputs: the error the
node itself introduces, not what it inherited. The quantizer keeps original
tensor names on node outputs (dynamic: the rescaling Mul; QDQ: the node before
its QuantizeLinear), which is what makes the two graphs comparable.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

from .passes._quant import COMPUTE_OPS
from .passes.normalize_model import name_nodes

__all__ = ["rank_nodes", "name_nodes", "float_outputs"]


_FLOAT = onnx.TensorProto.FLOAT


def _float_tensors(model: onnx.ModelProto) -> set[str]:
    """Names of the float32 tensors of a graph (after shape inference)."""
    inferred = onnx.shape_inference.infer_shapes(model)
    values = [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]
    return {v.name for v in values if v.type.tensor_type.elem_type == _FLOAT}


def _expose(model: onnx.ModelProto, names: Sequence[str]) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    present = {o for n in out.graph.node for o in n.output}
    have = {o.name for o in out.graph.output}
    for name in names:
        if name in present and name not in have:
            out.graph.output.append(onnx.helper.make_tensor_value_info(name, _FLOAT, None))
    return out


def _run(model: onnx.ModelProto, feeds: Sequence[dict[str, Any]], names: Sequence[str]) -> dict[str, list[Any]]:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # keep every tensor observable
    opts.log_severity_level = 3
    sess = ort.InferenceSession(_expose(model, names).SerializeToString(), opts, providers=["CPUExecutionProvider"])
    wanted = [o.name for o in sess.get_outputs() if o.name in set(names)]
    inputs = {i.name for i in sess.get_inputs()}
    results: dict[str, list[Any]] = {n: [] for n in wanted}
    for feed in feeds:
        for name, value in zip(wanted, sess.run(wanted, {k: v for k, v in feed.items() if k in inputs}), strict=True):
            results[name].append(value)
    return results


def _rel_error(ref: list[Any], got: list[Any]) -> float:
    pairs = zip(ref, got, strict=True)
    num = sum(float(np.sum((np.asarray(g, np.float64) - np.asarray(r, np.float64)) ** 2)) for r, g in pairs)
    den = sum(float(np.sum(np.asarray(r, np.float64) ** 2)) for r in ref)
    return float(np.sqrt(num / den)) if den > 0 else float(np.sqrt(num))


def rank_nodes(reference: onnx.ModelProto, quantized: onnx.ModelProto,
               feeds: Sequence[dict[str, Any]]) -> list[tuple[str, float]]:
    """Compute nodes of `reference` by the error their quantized form adds, worst first."""
    inits = {i.name for i in reference.graph.initializer}
    nodes = [n for n in reference.graph.node if n.op_type in COMPUTE_OPS and n.name]
    floats = _float_tensors(reference)
    tensors = sorted({t for n in nodes for t in (*n.input, n.output[0]) if t and t not in inits and t in floats})
    ref = _run(reference, feeds, tensors)
    got = _run(quantized, feeds, tensors)
    graph_inputs = {i.name for i in reference.graph.input}
    errors = {t: _rel_error(ref[t], got[t]) for t in tensors if t in ref and t in got}
    errors.update({t: 0.0 for t in graph_inputs})
    ranked = []
    for node in nodes:
        out = node.output[0]
        if out not in errors:
            continue
        inherited = max((errors.get(t, 0.0) for t in node.input if t and t not in inits), default=0.0)
        ranked.append((node.name, max(errors[out] - inherited, 0.0)))
    return sorted(ranked, key=lambda item: -item[1])


def float_outputs(model: onnx.ModelProto, feeds: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Largest absolute value of every float node output over the feeds (for fp16 overflow checks)."""
    floats = _float_tensors(model)
    names = sorted({o for n in model.graph.node for o in n.output if o in floats})
    values = _run(model, feeds, names)
    return {name: max((float(np.max(np.abs(v))) if np.size(v) else 0.0) for v in arrays)
            for name, arrays in values.items() if arrays}
