"""KServe V2 (Open Inference Protocol) over HTTP: decode requests, encode responses.

Both the JSON form and the binary tensor data extension are supported, so
`tritonclient.http` works with its defaults (binary inputs and outputs):

- A request body is a JSON object, optionally followed by raw tensor bytes; the
  `Inference-Header-Content-Length` header gives the JSON part's length. An
  input sent as binary carries `parameters.binary_data_size`; its bytes follow
  in the order of `inputs`. Data is little-endian, row-major; a BYTES element is
  a 4-byte little-endian length followed by the bytes.
- An output is returned as binary when its `parameters.binary_data` is true, or
  (when not set) when the request's `parameters.binary_data_output` is true.

Every mistake in a request raises `ProtocolError(status, message)` whose message
starts with the field at fault (`inputs[0].shape: ...`): 400 for a request that
is malformed or inconsistent (a declared shape or size its data does not fill),
413 for one over the server's limits (`serving.max_rows`, `serving.max_elements`),
which are checked after the request is found consistent and before any array is
made for it. JSON data may be flat or nested exactly as the shape. Before a
large JSON part is parsed, its brackets and commas are counted (a fast scan): a
text holding more arrays, objects or values than any request within the limits
can is refused (413) without building them, since Python's parser holds the
GIL and may allocate ~20 times the text's size for such a document.

A response whose JSON part would carry NaN or an infinity (a model output
requested as JSON data) is refused with a 500 naming the output: JSON has no
such values, and this server never sends a bare `NaN` token. Outputs requested
as binary data carry IEEE values as they are.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import _json
from ._tensors import (
    ProtocolError,
    array_from_json,
    bytes_from_binary,
    bytes_to_binary,
    json_values,
    numpy_for_datatype,
    to_datatype,
)
from .types import ServingConfig, Tensors, TensorSpec

__all__ = [
    "HEADER_LENGTH",
    "EncodedResponse",
    "InferRequest",
    "ProtocolError",
    "RequestedOutput",
    "check_json_size",
    "decode_document",
    "decode_request",
    "encode_response",
    "numpy_for_datatype",
    "parse_json",
    "tensor_metadata",
    "to_datatype",
]

HEADER_LENGTH = "Inference-Header-Content-Length"
"""HTTP header giving the length of the JSON part of a body with binary tensors."""

_SCAN_BYTES = 64 << 10
"""JSON parts up to this size are parsed without counting first: they cannot hold enough to matter."""
_ENVELOPE = 1024
"""Arrays, objects and values a request may hold besides its tensors' data (names, shapes, parameters)."""

MAX_TIMEOUT_US = 2**64 - 1
"""The largest `parameters.timeout` accepted (microseconds, an unsigned 64-bit integer as Triton's)."""


@dataclass(frozen=True)
class RequestedOutput:
    """An output to return, and whether as binary data."""

    name: str
    binary: bool


@dataclass
class InferRequest:
    """A decoded inference request: validated input tensors plus how to answer."""

    inputs: Tensors
    outputs: list[RequestedOutput]
    rows: int
    id: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)

    @property
    def timeout_s(self) -> float | None:
        """The request's own `timeout` parameter (microseconds, as Triton) in seconds."""
        timeout = self.parameters.get("timeout")
        return None if timeout is None else timeout / 1e6


@dataclass(frozen=True)
class EncodedResponse:
    """A response body; `header_length` is set when binary tensors follow the JSON."""

    body: bytes
    header_length: int | None

    @property
    def media_type(self) -> str:
        return "application/json" if self.header_length is None else "application/octet-stream"


def tensor_metadata(spec: TensorSpec) -> dict[str, Any]:
    """Model-metadata entry for a tensor: V2 datatype and shape with the batch as -1."""
    return {"name": spec.name, "datatype": to_datatype(spec.dtype), "shape": [-1, *spec.shape]}


def decode_request(
    body: bytes | bytearray,
    inputs: Sequence[TensorSpec],
    outputs: Sequence[TensorSpec],
    *,
    header_length: str | None = None,
    limits: ServingConfig | None = None,
) -> InferRequest:
    """Parse and validate an infer request body against the model's signature and `limits`.

    Without `limits` only the consistency of the request is checked (no 413).
    """
    header, binary = _split_body(body, header_length)
    check_json_size(header, inputs, limits)  # before the parse: a declared size the body cannot hold is a 400
    return decode_document(parse_json(header), binary, inputs, outputs, limits=limits)


def parse_json(text: bytes | bytearray, where: str = "request body: ") -> Any:
    """The JSON document in `text`; ProtocolError (400) naming `where` when it is not JSON or nests too deeply."""
    try:
        return _json.loads(text)
    except RecursionError:
        raise ProtocolError(400, f"{where}JSON nested too deeply") from None
    except ValueError as exc:
        raise ProtocolError(400, f"{where}malformed JSON ({exc})") from None


def decode_document(
    doc: Any,
    binary: memoryview,
    inputs: Sequence[TensorSpec],
    outputs: Sequence[TensorSpec],
    *,
    limits: ServingConfig | None = None,
) -> InferRequest:
    """`decode_request` past the parse: validate the request header's document `doc` (`binary`: the bytes after
    the header, for `binary_data_size` inputs)."""
    if not isinstance(doc, dict):
        raise ProtocolError(400, "request body: expected a JSON object")
    request_id = doc.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise ProtocolError(400, "id: expected a string")
    params = _object(doc.get("parameters"), "parameters")
    timeout = params.get("timeout")
    if timeout is not None and (not _is_int(timeout) or not 0 <= timeout <= MAX_TIMEOUT_US):
        raise ProtocolError(400, "parameters.timeout: expected microseconds, an integer from 0 to 2**64-1")
    tensors, rows = _decode_inputs(doc.get("inputs"), binary, inputs, _Budget(limits))
    requested = _decode_outputs(doc.get("outputs"), outputs, bool(params.get("binary_data_output")))
    return InferRequest(tensors, requested, rows, request_id, params)


def encode_response(
    request: InferRequest,
    result: Tensors,
    outputs: Sequence[TensorSpec],
    *,
    model_name: str,
    model_version: str,
) -> EncodedResponse:
    """The response body for `result`, holding the outputs the request asked for."""
    specs = {s.name: s for s in outputs}
    entries: list[dict[str, Any]] = []
    chunks: list[bytes] = []
    for wanted in request.outputs:
        datatype = to_datatype(specs[wanted.name].dtype)
        array = _as_datatype(result[wanted.name], datatype)
        entry: dict[str, Any] = {"name": wanted.name, "datatype": datatype, "shape": list(array.shape)}
        if wanted.binary:
            raw = (
                bytes_to_binary(array) if datatype == "BYTES" else array.astype(array.dtype.newbyteorder("<")).tobytes()
            )
            entry["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            entry["data"] = _json_data(array, datatype, wanted.name)
        entries.append(entry)
    doc: dict[str, Any] = {"model_name": model_name, "model_version": model_version}
    if request.id is not None:
        doc["id"] = request.id
    doc["outputs"] = entries
    header = _json.dumps(doc)  # outputs checked: never raises
    if not chunks:
        return EncodedResponse(header, None)
    return EncodedResponse(b"".join([header, *chunks]), len(header))


# -- request parts -----------------------------------------------------------


def _split_body(body: bytes | bytearray, header_length: str | None) -> tuple[bytes | bytearray, memoryview]:
    if header_length is None:
        return body, memoryview(b"")
    text = header_length.strip()
    length = int(text) if text.isascii() and text.isdigit() else -1
    if not 0 <= length <= len(body):
        raise ProtocolError(
            400, f"{HEADER_LENGTH} header: {header_length!r} is not a length within the {len(body)}-byte body"
        )
    return body[:length], memoryview(body)[length:]


def check_json_size(header: bytes | bytearray, inputs: Sequence[TensorSpec], limits: ServingConfig | None) -> None:
    """A large JSON header's declared shapes checked against `limits` and the bytes it has (small ones: nothing)."""
    if limits is not None and len(header) > _SCAN_BYTES:
        _check_json_size(header, inputs, limits)


def _check_json_size(header: bytes | bytearray, inputs: Sequence[TensorSpec], limits: ServingConfig) -> None:
    """413 before parsing when `header` holds more arrays/objects or values than a request within `limits` can.

    Brackets and commas inside strings count too (rows of JSON, text): one in 16
    bytes of the text is allowed on top of what the tensors themselves need.
    """
    slack = _ENVELOPE + len(header) // 16
    containers = header.count(b"[") + header.count(b"{")
    allowed = limits.max_rows * sum(_lists_per_row(s, limits) for s in inputs) + slack
    if containers > allowed:
        raise ProtocolError(413, f"request body: {containers} JSON arrays and objects, more than the {allowed} a "
                                 f"request of at most {limits.max_rows} rows (serving.max_rows) can need")
    values = header.count(b",") + 1
    elements = _max_elements(inputs, limits)
    allowed += elements
    if values > allowed:
        raise ProtocolError(413, f"request body: {values} JSON values, more than the {allowed} a request of at most "
                                 f"{elements} elements (serving.max_rows, serving.max_elements) can need")


def _max_elements(inputs: Sequence[TensorSpec], limits: ServingConfig) -> int:
    """The most tensor elements a request may carry: `max_elements`, or fewer when every shape is fixed."""
    if any(size < 0 for spec in inputs for size in spec.shape):
        return limits.max_elements
    return min(limits.max_elements, limits.max_rows * sum(math.prod(spec.shape) for spec in inputs))


def _lists_per_row(spec: TensorSpec, limits: ServingConfig) -> int:
    """JSON arrays one row of `spec` takes when nested as its shape (and a bracket per BYTES element's text)."""
    any_size = max(1, limits.max_elements // limits.max_rows)
    lists, count = 0, 1
    for size in (1, *spec.shape[:-1]) if spec.shape else ():
        count *= size if size >= 0 else any_size
        lists += count
    return lists + (1 if spec.dtype == "bytes" else 0)


class _Budget:
    """What one request may still carry under `serving.max_rows` and `serving.max_elements` (413 beyond)."""

    def __init__(self, limits: ServingConfig | None) -> None:
        self.limits = limits
        self.elements = 0

    def take(self, shape: tuple[int, ...], where: str) -> None:
        """Count an input of `shape`, found consistent with its data, before its array is made."""
        if self.limits is None:
            return
        max_rows, max_elements = self.limits.max_rows, self.limits.max_elements
        if shape[0] > max_rows:
            raise ProtocolError(413, f"{where}.shape[0]: {shape[0]} rows, more than the {max_rows} one request "
                                     f"may carry (serving.max_rows); send them in several requests")
        self.elements += math.prod(shape)
        if self.elements > max_elements:
            raise ProtocolError(413, f"{where}.shape: the request's inputs hold {self.elements} elements so far, "
                                     f"more than the {max_elements} one request may carry (serving.max_elements)")


def _decode_inputs(
    raw: Any, binary: memoryview, specs: Sequence[TensorSpec], budget: _Budget
) -> tuple[Tensors, int]:
    if not isinstance(raw, list) or not raw:
        raise ProtocolError(400, "inputs: expected a non-empty list of input tensors")
    by_name = {s.name: s for s in specs}
    tensors: Tensors = {}
    rows: tuple[int, str] | None = None
    offset = 0
    for i, item in enumerate(raw):
        where = f"inputs[{i}]"
        if not isinstance(item, dict):
            raise ProtocolError(400, f"{where}: expected an object")
        name = item.get("name")
        if name not in by_name:
            raise ProtocolError(400, f"{where}.name: unknown input {name!r}; the model takes {sorted(by_name)}")
        if name in tensors:
            raise ProtocolError(400, f"{where}.name: input {name!r} is given twice")
        spec = by_name[name]
        shape = _check_shape(item.get("shape"), spec, where)
        datatype = to_datatype(spec.dtype)
        if item.get("datatype") != datatype:
            raise ProtocolError(400, f"{where}.datatype: input {name!r} is {datatype}, got {item.get('datatype')!r}")
        if rows is not None and shape[0] != rows[0]:
            raise ProtocolError(
                400, f"{where}.shape[0]: batch size {shape[0]} differs from {rows[0]} of input {rows[1]!r}"
            )
        rows = rows or (shape[0], name)
        size = _object(item.get("parameters"), f"{where}.parameters").get("binary_data_size")
        if size is not None:
            if "data" in item:
                raise ProtocolError(400, f"{where}.data: given together with parameters.binary_data_size")
            if not _is_int(size) or size < 0 or offset + size > len(binary):
                raise ProtocolError(
                    400,
                    f"{where}.parameters.binary_data_size: {size!r} bytes declared but "
                    f"{len(binary) - offset} bytes of binary data remain in the body",
                )
            tensors[name] = _from_binary(binary[offset : offset + size], datatype, shape, where, budget)
            offset += size
        elif "data" in item:
            values = json_values(item["data"], shape, f"{where}.data")
            budget.take(shape, where)
            tensors[name] = array_from_json(values, datatype, shape, f"{where}.data")
        else:
            raise ProtocolError(400, f"{where}.data: missing (or set parameters.binary_data_size)")
    if offset != len(binary):
        raise ProtocolError(400, f"request body: {len(binary) - offset} bytes of binary data belong to no input")
    missing = [s.name for s in specs if s.name not in tensors]
    if missing:
        raise ProtocolError(400, f"inputs: missing input {missing[0]!r}; the model takes {[s.name for s in specs]}")
    return tensors, rows[0] if rows else 0


def _check_shape(raw: Any, spec: TensorSpec, where: str) -> tuple[int, ...]:
    expected = [-1, *spec.shape]
    if not isinstance(raw, list) or not all(_is_int(d) and d >= 0 for d in raw):
        raise ProtocolError(400, f"{where}.shape: expected a list of sizes like {expected}, got {raw!r}")
    if len(raw) != len(expected) or any(e >= 0 and d != e for d, e in zip(raw, expected, strict=True)):
        raise ProtocolError(400, f"{where}.shape: input {spec.name!r} takes {expected}, got {raw}")
    if raw[0] == 0:
        raise ProtocolError(400, f"{where}.shape[0]: the batch needs at least one row")
    return tuple(raw)


def _from_binary(
    chunk: memoryview, datatype: str, shape: tuple[int, ...], where: str, budget: _Budget
) -> np.ndarray:
    field = f"{where}.parameters.binary_data_size"
    count = math.prod(shape)  # a Python int: a declared shape never wraps
    if datatype == "BYTES":
        if count > len(chunk) // 4:  # each element takes at least its 4-byte length
            bytes_from_binary(chunk, count, field)  # raises, naming what the bytes hold
        budget.take(shape, where)
        return bytes_from_binary(chunk, count, field).reshape(shape)
    dtype = numpy_for_datatype(datatype)
    expected = count * dtype.itemsize
    if len(chunk) != expected:
        raise ProtocolError(
            400, f"{field}: {len(chunk)} bytes do not hold shape {list(shape)} of {datatype} ({expected} bytes)"
        )
    budget.take(shape, where)
    # copy: writable and aligned, as kernels compiled at warm-up expect
    return np.frombuffer(chunk, dtype=dtype.newbyteorder("<")).astype(dtype).reshape(shape)


def _decode_outputs(raw: Any, specs: Sequence[TensorSpec], binary_default: bool) -> list[RequestedOutput]:
    if raw is None:
        return [RequestedOutput(s.name, binary_default) for s in specs]
    if not isinstance(raw, list):
        raise ProtocolError(400, "outputs: expected a list of requested outputs")
    names = [s.name for s in specs]
    requested: list[RequestedOutput] = []
    for i, item in enumerate(raw):
        where = f"outputs[{i}]"
        name = item.get("name") if isinstance(item, dict) else None
        if name not in names:
            raise ProtocolError(400, f"{where}.name: unknown output {name!r}; the model returns {names}")
        params = _object(item.get("parameters"), f"{where}.parameters")
        if params.get("classification"):
            raise ProtocolError(400, f"{where}.parameters.classification: not supported by this server")
        binary = params.get("binary_data", binary_default)
        if not isinstance(binary, bool):
            raise ProtocolError(400, f"{where}.parameters.binary_data: expected true or false")
        requested.append(RequestedOutput(name, binary))
    return requested


# -- response parts ----------------------------------------------------------


def _as_datatype(array: np.ndarray, datatype: str) -> np.ndarray:
    array = np.asarray(array)
    if datatype == "BYTES":
        return array if array.dtype == object else array.astype(object)
    return array.astype(numpy_for_datatype(datatype), copy=False)


def _json_data(array: np.ndarray, datatype: str, name: str) -> list[Any]:
    if datatype != "BYTES":
        if array.dtype.kind in "fc" and not np.isfinite(array).all():
            rows = np.flatnonzero(~np.isfinite(array.reshape(len(array), -1)).all(axis=1)) if array.ndim else [0]
            raise ProtocolError(
                500, f"outputs: model output {name!r} holds NaN or infinity (row {int(rows[0])}), which JSON "
                     f"cannot carry; ask for it with binary_data=true to get IEEE values"
            )
        return array.ravel().tolist()
    try:
        return [v.decode() if isinstance(v, bytes) else str(v) for v in array.ravel()]
    except UnicodeDecodeError:
        raise ProtocolError(
            400, f"outputs: output {name!r} holds bytes that are not UTF-8; ask for it with binary_data=true"
        ) from None


def _object(raw: Any, where: str) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ProtocolError(400, f"{where}: expected an object")
    return raw


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
