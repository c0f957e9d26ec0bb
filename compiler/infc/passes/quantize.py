"""Int8 quantization with onnxruntime.quantization: QuantizeDynamicPass, QuantizeStaticPass.

Weights are S8 per channel by default; static quantization writes QDQ with S8
activations (S8S8), calibrated on the spec's calibration data after
pre-processing (so the ranges are those the model will really see).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import onnx
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_dynamic,
    quantize_static,
)

from ..errors import InfcError
from .base import PassContext, PassResult, op_counts, register

__all__ = ["QuantizeDynamicPass", "QuantizeStaticPass"]

_METHODS = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
            "percentile": CalibrationMethod.Percentile}


@contextmanager
def _quiet() -> Iterator[None]:
    """onnxruntime.quantization logs advice to the root logger; the report says what matters."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def _record(before: onnx.ModelProto, after: onnx.ModelProto, **extra: Any) -> dict[str, Any]:
    ops = op_counts(after)
    quant_ops = {k: v for k, v in ops.items() if "Integer" in k or "QLinear" in k or "Quantize" in k}
    return {"ops_before": op_counts(before), "ops_after": ops, "quantized_ops": quant_ops, **extra}


def _refuse_ml_domain(model: onnx.ModelProto, pass_name: str) -> None:
    domains = {n.domain for n in model.graph.node}
    if "ai.onnx.ml" in domains:
        raise InfcError(f"pass {pass_name}: the model uses ai.onnx.ml operators (e.g. tree ensembles, "
                        "linear classifiers), which onnxruntime cannot quantize; use `quantize: none`")


@register
class QuantizeDynamicPass:
    """Dynamic int8: weights quantized offline, activations at run time."""

    name = "quantize_dynamic"

    def __init__(self, per_channel: bool = True, weight_type: str = "int8") -> None:
        self.per_channel = per_channel
        self.weight_type = QuantType.QInt8 if weight_type == "int8" else QuantType.QUInt8

    def call(self, model: onnx.ModelProto, ctx: PassContext) -> PassResult:
        _refuse_ml_domain(model, self.name)
        src, out = ctx.workdir / f"{self.name}.in.onnx", ctx.workdir / f"{self.name}.onnx"
        onnx.save(model, str(src))
        with _quiet():
            quantize_dynamic(str(src), str(out), per_channel=self.per_channel, weight_type=self.weight_type)
        quantized = onnx.load(str(out))
        return PassResult(quantized, modified=True, record=_record(model, quantized, per_channel=self.per_channel))


class _Feeds(CalibrationDataReader):  # type: ignore[misc]
    def __init__(self, feeds: Iterator[dict[str, Any]]) -> None:
        self._feeds = feeds

    def get_next(self) -> dict[str, Any] | None:
        return next(self._feeds, None)


@register
class QuantizeStaticPass:
    """Static int8 (QDQ, S8 activations and per-channel S8 weights), calibrated."""

    name = "quantize_static"

    def __init__(self, method: str = "minmax", per_channel: bool = True) -> None:
        if method not in _METHODS:
            raise ValueError(f"method must be one of {sorted(_METHODS)}, got {method!r}")
        self.method, self.per_channel = method, per_channel

    def call(self, model: onnx.ModelProto, ctx: PassContext) -> PassResult:
        _refuse_ml_domain(model, self.name)
        if ctx.calibration is None:
            raise InfcError(f"pass {self.name} needs calibration data (optimize.calibration)")
        src, out = ctx.workdir / f"{self.name}.in.onnx", ctx.workdir / f"{self.name}.onnx"
        onnx.save(model, str(src))
        with _quiet():
            quantize_static(str(src), str(out), _Feeds(ctx.calibration()), quant_format=QuantFormat.QDQ,
                            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                            per_channel=self.per_channel, calibrate_method=_METHODS[self.method],
                            extra_options={"ActivationSymmetric": False, "WeightSymmetric": True})
        quantized = onnx.load(str(out))
        return PassResult(quantized, modified=True,
                          record=_record(model, quantized, method=self.method, per_channel=self.per_channel))
