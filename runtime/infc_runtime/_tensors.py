"""Tensor data in V2 form: datatype names, JSON values and BYTES serialization.

Private helpers of `protocol` (which re-exports `ProtocolError`); errors name
the field given by the caller as `where`.
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np

__all__ = [
    "ProtocolError",
    "bytes_from_binary",
    "bytes_to_binary",
    "numpy_for_datatype",
    "to_datatype",
    "values_from_json",
]

_NUMPY_FOR = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(object),
}
_DATATYPE_FOR = {dt.name: name for name, dt in _NUMPY_FOR.items() if name != "BYTES"}

# Python types a JSON value may have, per datatype (bool is not a number here).
_JSON_TYPES: dict[str, tuple[type, ...]] = {"BOOL": (bool,), "BYTES": (str,)}
for _name in _NUMPY_FOR:
    _JSON_TYPES.setdefault(_name, (int, float) if _name.startswith("FP") else (int,))

_LENGTH = struct.Struct("<I")


class ProtocolError(Exception):
    """A request does not follow the protocol or the model's signature (an HTTP 4xx)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _error(message: str) -> ProtocolError:
    return ProtocolError(400, message)


def to_datatype(dtype: str | np.dtype[Any]) -> str:
    """The V2 datatype for a signature dtype name (`float32`, `bytes`) or numpy dtype."""
    if isinstance(dtype, str) and dtype == "bytes":
        return "BYTES"
    dt = np.dtype(dtype)
    if dt.kind in "OSU":
        return "BYTES"
    try:
        return _DATATYPE_FOR[dt.name]
    except KeyError:
        raise ValueError(f"dtype {dt.name} has no KServe V2 datatype") from None


def numpy_for_datatype(datatype: str) -> np.dtype[Any]:
    """The numpy dtype for a V2 datatype (BYTES maps to object arrays of bytes)."""
    try:
        return _NUMPY_FOR[datatype]
    except KeyError:
        raise ValueError(f"unknown KServe V2 datatype {datatype!r}") from None


def values_from_json(data: Any, datatype: str, shape: tuple[int, ...], where: str) -> np.ndarray:
    """An array of `shape` from JSON `data`: a flat or nested list, row-major."""
    flat: list[Any] = []
    _flatten(data, flat, where)
    count = int(np.prod(shape))
    if len(flat) != count:
        raise _error(f"{where}: {len(flat)} values do not fill shape {list(shape)} ({count} values)")
    allowed = _JSON_TYPES[datatype]
    for value in flat:
        if type(value) not in allowed:
            raise _error(f"{where}: {value!r} is not a {datatype} value")
    if datatype == "BYTES":
        array = np.empty(count, dtype=object)
        array[:] = [v.encode() for v in flat]
        return array.reshape(shape)
    try:
        return np.array(flat, dtype=numpy_for_datatype(datatype)).reshape(shape)
    except OverflowError as exc:
        raise _error(f"{where}: a value is out of range for {datatype} ({exc})") from None


def _flatten(data: Any, out: list[Any], where: str) -> None:
    if not isinstance(data, list):
        raise _error(f"{where}: expected a list of values")
    for item in data:
        if isinstance(item, list):
            _flatten(item, out, where)
        else:
            out.append(item)


def bytes_from_binary(chunk: memoryview, count: int, where: str) -> np.ndarray:
    """`count` BYTES elements, each a 4-byte little-endian length and its bytes."""
    array = np.empty(count, dtype=object)
    offset = 0
    for i in range(count):
        if offset + 4 > len(chunk):
            raise _error(f"{where}: binary BYTES data ends after {i} of {count} elements")
        (length,) = _LENGTH.unpack_from(chunk, offset)
        offset += 4
        if offset + length > len(chunk):
            raise _error(f"{where}: BYTES element {i} claims {length} bytes, {len(chunk) - offset} remain")
        array[i] = bytes(chunk[offset : offset + length])
        offset += length
    if offset != len(chunk):
        raise _error(f"{where}: {len(chunk) - offset} bytes follow the last of {count} BYTES elements")
    return array


def bytes_to_binary(array: np.ndarray) -> bytes:
    """BYTES elements (bytes, or str as UTF-8) as length-prefixed binary data."""
    parts: list[bytes] = []
    for value in array.ravel():
        raw = value if isinstance(value, bytes) else str(value).encode()
        parts.append(_LENGTH.pack(len(raw)))
        parts.append(raw)
    return b"".join(parts)
