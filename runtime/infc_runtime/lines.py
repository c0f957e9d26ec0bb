"""One line of newline-delimited JSON -> one request's tensors (for `infc run` and the streaming endpoint).

A line is one of three forms, tried in this order:

1. a KServe V2 inference request in JSON form, exactly as `POST .../infer`
   takes it (an object with an `inputs` list; `id` and `outputs` are honoured;
   binary data is not: a line is text). It may hold several rows.
2. for a bundle with exactly one BYTES request input (a tabular row, a text):
   a raw record. A JSON string is that input's value (its UTF-8 bytes); any
   other JSON value is passed as its own JSON text, so a tabular row
   `{"mean radius": 17.99, ...}` is one row as the `features` step reads it.
3. otherwise, one row as an object naming each request input:
   `{"image": [[0, 3, ...], ...]}`, each value nested as the input's shape
   (without the batch axis) or flat.

Forms 2 and 3 are one row each (`Line.one_row`): their outputs are written
without the batch axis. Every mistake raises `ProtocolError` (the message
names the field) or `RequestError`; the line's size is bounded by the caller
(`serving.max_body_bytes`), and the V2 form checks `serving.max_rows` and
`max_elements` as the server does.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import _json
from ._tensors import ProtocolError, to_datatype, values_from_json
from .protocol import RequestedOutput, check_json_size, decode_document, parse_json
from .types import ServingConfig, Tensors, TensorSpec, numpy_dtype

__all__ = ["Line", "decode_line", "named_rows", "raw_input"]


@dataclass
class Line:
    """A decoded line: its request tensors, row count, whether it is one row of a simpler form, and its id."""

    tensors: Tensors
    rows: int
    one_row: bool
    id: str | None = None
    outputs: list[RequestedOutput] | None = None
    """The outputs a V2 request line asked for (None: all)."""


def raw_input(inputs: Sequence[TensorSpec]) -> TensorSpec | None:
    """The one BYTES input of scalar rows that raw records feed (tabular rows, texts), or None."""
    if len(inputs) == 1 and inputs[0].dtype == "bytes" and inputs[0].shape == ():
        return inputs[0]
    return None


def decode_line(raw: bytes | bytearray, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec],
                limits: ServingConfig) -> Line:
    """The request one line holds (see the module's docstring); ProtocolError naming what is wrong."""
    record = raw_input(inputs)
    if record is not None and b'"inputs"' not in raw and not raw.lstrip().startswith(b'"'):
        # a raw record, parsed once: by the pre kernel (whose errors name the row), not here as well
        return Line({record.name: _one(bytes(raw).strip())}, 1, True)
    doc = parse_json(raw, "")
    if isinstance(doc, dict) and isinstance(doc.get("inputs"), list):  # a V2 request: parsed once, here
        check_json_size(raw, inputs, limits)
        req = decode_document(doc, memoryview(b""), inputs, outputs, limits=limits)
        return Line(req.inputs, req.rows, False, req.id, req.outputs)
    if record is not None:
        return Line({record.name: _one(doc.encode() if isinstance(doc, str) else bytes(raw).strip())}, 1, True)
    if not isinstance(doc, dict):
        names = ", ".join(s.name for s in inputs)
        raise ProtocolError(400, f"expected a JSON object: a V2 request ({{\"inputs\": [...]}}) or one row naming "
                                 f"the inputs ({names})")
    if b"true" not in raw and b"false" not in raw:  # numpy would take a JSON boolean for 1 or 0: only then
        fast = _fast_row(doc, inputs)
        if fast is not None:
            return Line(fast, 1, True)
    return Line(_named_row(doc, inputs), 1, True)





def named_rows(raws: Sequence[bytes], inputs: Sequence[TensorSpec]) -> Tensors | None:
    """Many lines' tensors at once (a row per line) when every line is one row naming each input
    (`{"image": [[...]]}`), all of one shape, whose numbers numpy reads as `decode_line` would one by one (right
    kind, in range; no true/false, which numpy takes for 1 and 0); None otherwise: each line is then decoded
    alone."""
    joined = b"\n".join(raws)
    if b"true" in joined or b"false" in joined or not _json.FAST:
        return None
    try:
        docs = _json.loads_each(raws, joined)
    except ValueError:
        return None
    names = {spec.name for spec in inputs}
    if not all(type(d) is dict and d.keys() == names for d in docs):
        return None
    tensors: Tensors = {}
    for spec in inputs:
        target, low, high = _target(spec.dtype)
        if target.kind not in "iuf":
            return None
        try:
            array = np.array([d[spec.name] for d in docs])
        except (ValueError, TypeError):  # ragged
            return None
        if array.ndim != 1 + len(spec.shape) or any(s >= 0 and d != s
                                                    for d, s in zip(array.shape[1:], spec.shape, strict=True)):
            return None
        kind = array.dtype.kind
        if target.kind == "f":
            if kind not in "iuf":
                return None
            with np.errstate(over="ignore"):  # beyond float32's range: +-inf, as `decode_line` makes it
                tensors[spec.name] = array.astype(target)
            continue
        if kind not in "iu" or (array.size and not low <= array.min() <= array.max() <= high):
            return None
        tensors[spec.name] = array.astype(target)
    return tensors


def _fast_row(doc: dict[str, Any], inputs: Sequence[TensorSpec]) -> Tensors | None:
    """`_named_row`'s answer made by numpy from the nested lists, when every value is already right (numbers of
    the input's kind, in its range, nested as its shape); None otherwise: `_named_row` then says what is wrong."""
    if len(doc) != len(inputs):
        return None
    tensors: Tensors = {}
    for spec in inputs:
        value = doc.get(spec.name)
        target, low, high = _target(spec.dtype)
        if value is None or target.kind not in "iuf":
            return None
        try:
            array = np.array(value)
        except (ValueError, TypeError):  # ragged
            return None
        if array.shape != spec.shape and (array.ndim != len(spec.shape) or any(
                s >= 0 and d != s for d, s in zip(array.shape, spec.shape, strict=True))):
            return None
        kind = array.dtype.kind
        if target.kind == "f":
            if kind not in "iuf":
                return None
            with np.errstate(over="ignore"):  # beyond float32's range: +-inf, as `values_from_json` makes it
                tensors[spec.name] = array.astype(target)[None]
            continue
        if kind not in "iu" or (array.size and not low <= array.min() <= array.max() <= high):
            return None
        tensors[spec.name] = array.astype(target)[None]
    return tensors


@functools.lru_cache(maxsize=64)
def _target(dtype: str) -> tuple[np.dtype[Any], int, int]:
    """The numpy dtype of a signature dtype and, for an integer one, its range (cached: numpy takes microseconds
    to answer either)."""
    target = numpy_dtype(dtype)
    if target.kind not in "iu":
        return target, 0, 0
    info = np.iinfo(target)
    return target, int(info.min), int(info.max)


def _one(value: bytes) -> np.ndarray:
    """A BYTES array of one row."""
    array = np.empty(1, dtype=object)
    array[0] = value
    return array


def _named_row(doc: dict[str, Any], inputs: Sequence[TensorSpec]) -> Tensors:
    """One row from `{input name: value nested as its shape}`."""
    unknown = sorted(set(doc) - {s.name for s in inputs})
    if unknown:
        raise ProtocolError(400, f"{unknown[0]}: unknown input; the model takes {[s.name for s in inputs]}")
    tensors: Tensors = {}
    for spec in inputs:
        if spec.name not in doc:
            raise ProtocolError(400, f"missing input {spec.name!r}; the model takes {[s.name for s in inputs]}")
        value = doc[spec.name]
        shape = _shape_of(value, spec)
        data = value if shape else [value]
        array = values_from_json(data, to_datatype(spec.dtype), shape or (1,), spec.name)
        tensors[spec.name] = array.reshape((1, *shape))
    return tensors


def _shape_of(value: Any, spec: TensorSpec) -> tuple[int, ...]:
    """The shape `value` is nested as, checked against `spec` (a flat list of a fixed shape is that shape)."""
    if not spec.shape:
        return ()
    dims: list[int] = []
    item = value
    while isinstance(item, list) and len(dims) < len(spec.shape):
        dims.append(len(item))
        item = item[0] if item else None
    fixed = all(s >= 0 for s in spec.shape)
    if fixed and len(dims) == 1 and len(spec.shape) > 1:  # flat: json_values checks its length
        return spec.shape
    if len(dims) != len(spec.shape) or any(s >= 0 and d != s for d, s in zip(dims, spec.shape, strict=True)):
        raise ProtocolError(400, f"{spec.name}: expected values nested as shape {list(spec.shape)}, got "
                                 f"{dims if dims else 'a single value'}")
    return tuple(dims)
