"""Tensor data in V2 form: datatype names, JSON values and BYTES serialization.

Private helpers of `protocol` (which re-exports `ProtocolError`); errors name
the field given by the caller as `where`. Every size a request declares is
compared with the data it actually carries (as Python ints, which never wrap)
before anything proportional to it is allocated.
"""

from __future__ import annotations

import functools
import math
import struct
from typing import Any

import numpy as np

__all__ = [
    "ProtocolError",
    "bytes_from_binary",
    "bytes_to_binary",
    "json_values",
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
    """A request does not follow the protocol, the model's signature or the server's limits.

    `status` is the HTTP status to answer (4xx; 500 for a result that cannot be
    encoded); `close` says the request's body was not read to its end, so the
    connection cannot carry another request.
    """

    def __init__(self, status: int, message: str, *, close: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.close = close


def _error(message: str) -> ProtocolError:
    return ProtocolError(400, message)


@functools.lru_cache(maxsize=256)
def to_datatype(dtype: str | np.dtype[Any]) -> str:
    """The V2 datatype for a signature dtype name (`float32`, `bytes`) or numpy dtype (cached: it runs per
    tensor of every request, and `np.dtype` of a name costs microseconds)."""
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
    """An array of `shape` from JSON `data`: a flat list, or lists nested as the shape (row-major)."""
    return array_from_json(json_values(data, shape, where), datatype, shape, where)


def json_values(data: Any, shape: tuple[int, ...], where: str) -> list[Any]:
    """The values of JSON `data` in row-major order, checked against `shape` (no array made yet).

    `data` is either flat (exactly `prod(shape)` values) or nested to the
    shape's depth with each list as long as its dimension; anything between is
    an error naming the list at fault.
    """
    if not isinstance(data, list):
        raise _error(f"{where}: expected a list of values")
    if len(shape) > 1 and data and isinstance(data[0], list):
        return _unnest(data, shape, where)
    count = math.prod(shape)
    if len(data) != count:
        raise _error(f"{where}: {len(data)} values do not fill shape {list(shape)} ({count} values)")
    return data


def array_from_json(flat: list[Any], datatype: str, shape: tuple[int, ...], where: str) -> np.ndarray:
    """The array of `shape` holding `flat` (from `json_values`), each value checked against `datatype`."""
    allowed = _JSON_TYPES[datatype]
    if not set(map(type, flat)) <= set(allowed):
        bad = next(v for v in flat if type(v) not in allowed)
        if isinstance(bad, list):
            raise _error(f"{where}: mixes lists and values; send a flat list of {len(flat)} values or lists "
                         f"nested as shape {list(shape)}")
        raise _error(f"{where}: {_shown(bad)} is not a {datatype} value")
    if datatype == "BYTES":
        array = np.empty(len(flat), dtype=object)
        array[:] = [v.encode() for v in flat]
        return array.reshape(shape)
    try:
        with np.errstate(over="ignore"):  # beyond float32's range: +-inf, which the non-finite rule then sees
            return np.array(flat, dtype=numpy_for_datatype(datatype)).reshape(shape)
    except OverflowError as exc:
        raise _error(f"{where}: a value is out of range for {datatype} ({exc})") from None


def _unnest(data: list[Any], shape: tuple[int, ...], where: str) -> list[Any]:
    """Nested lists level by level; each list must be as long as the shape says at its depth."""
    level: list[Any] = [data]
    for depth, size in enumerate(shape):
        below: list[Any] = []
        for position, item in enumerate(level):
            if not isinstance(item, list) or len(item) != size:
                at = where + "".join(f"[{i}]" for i in _index(position, shape[:depth]))
                got = f"a list of {len(item)}" if isinstance(item, list) else f"the value {_shown(item)}"
                raise _error(f"{at}: {got} where shape {list(shape)} has a list of {size}; nest the data as "
                             "the shape, or send it flat")
            below.extend(item)
        level = below
    return level


def _index(position: int, dims: tuple[int, ...]) -> list[int]:
    """The multi-index of a row-major `position` in an array of `dims`."""
    index = []
    for size in reversed(dims):
        position, i = divmod(position, size)
        index.append(i)
    return index[::-1]


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def bytes_from_binary(chunk: memoryview, count: int, where: str) -> np.ndarray:
    """`count` BYTES elements, each a 4-byte little-endian length and its bytes."""
    if count > len(chunk) // _LENGTH.size:  # before allocating anything for `count` elements
        raise _error(f"{where}: {count} BYTES elements declared, but the {len(chunk)} bytes given hold at most "
                     f"{len(chunk) // _LENGTH.size} (each takes a 4-byte length)")
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
