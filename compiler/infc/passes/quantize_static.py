"""QuantizeStaticPass: int8 QDQ with activation ranges calibrated on the spec's data.

S8 activations and per-channel S8 weights (S8S8) by default: U8S8 can saturate
on x86 without VNNI, so the plan asks for U8 activations only where it is safe.
Calibration runs on the calibration data after pre-processing, so the ranges
are those the model will really see. `exclude` keeps named nodes in fp32.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import onnx
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static

from ..errors import InfcError
from ._quant import quant_record, quant_summary, quiet, skip_reason, skipped
from .base import PassContext, PassResult, register, unchanged

__all__ = ["QuantizeStaticPass"]

_METHODS = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
            "percentile": CalibrationMethod.Percentile}
_TYPES = {"int8": QuantType.QInt8, "uint8": QuantType.QUInt8}


class _Feeds(CalibrationDataReader):  # type: ignore[misc]
    def __init__(self, feeds: Iterator[dict[str, Any]]) -> None:
        self._feeds = feeds

    def get_next(self) -> dict[str, Any] | None:
        return next(self._feeds, None)


@register
class QuantizeStaticPass:
    """Static int8 (QDQ) quantization, calibrated."""

    name = "quantize_static"

    @staticmethod
    def summary(record: Mapping[str, Any]) -> str:
        """The quantized op types and the nodes kept in fp32, or why nothing was quantized."""
        return unchanged(record) or quant_summary(record)

    def __init__(self, method: str = "minmax", per_channel: bool = True, activation_type: str = "int8",
                 exclude: Sequence[str] = ()) -> None:
        if method not in _METHODS:
            raise ValueError(f"method must be one of {sorted(_METHODS)}, got {method!r}")
        if activation_type not in _TYPES:
            raise ValueError(f"activation_type must be one of {sorted(_TYPES)}, got {activation_type!r}")
        self.method, self.per_channel, self.activation_type = method, per_channel, activation_type
        self.exclude = list(exclude)

    def call(self, model: onnx.ModelProto, ctx: PassContext) -> PassResult:
        reason = skip_reason(model)
        if reason:
            return skipped(model, reason)
        if ctx.calibration is None:
            raise InfcError(f"pass {self.name} needs calibration data (optimize.calibration)")
        src, out = ctx.workdir / f"{self.name}.in.onnx", ctx.workdir / f"{self.name}.onnx"
        onnx.save(model, str(src))
        with quiet():
            quantize_static(str(src), str(out), _Feeds(ctx.calibration()), quant_format=QuantFormat.QDQ,
                            activation_type=_TYPES[self.activation_type], weight_type=QuantType.QInt8,
                            per_channel=self.per_channel, calibrate_method=_METHODS[self.method],
                            nodes_to_exclude=self.exclude,
                            extra_options={"ActivationSymmetric": False, "WeightSymmetric": True,
                                           "DefaultTensorType": onnx.TensorProto.FLOAT,
                                           # onnxruntime 1.32 crashes adjusting per-channel weight
                                           # scales for int32 biases of Gemm ("truth value of an array")
                                           "QDQDisableWeightAdjustForInt32Bias": self.per_channel})
        quantized = onnx.load(str(out))
        record = quant_record(model, quantized, method=self.method, per_channel=self.per_channel,
                              activation_type=self.activation_type, excluded=self.exclude)
        return PassResult(quantized, modified=True, record=record)
