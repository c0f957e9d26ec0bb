"""The line forms of `infc run` and the streaming endpoint (`infc_runtime.lines`), and how the endpoint splits a
body into bounded lines (`infc_runtime.stream._lines`)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from infc_runtime.abi import RequestError
from infc_runtime.lines import decode_line, named_rows
from infc_runtime.protocol import ProtocolError
from infc_runtime.stream import _lines
from infc_runtime.types import ServingConfig, TensorSpec

IMAGE = [TensorSpec("image", "uint8", (2, 3))]
ROWS = [TensorSpec("rows", "bytes", ())]
OUT = [TensorSpec("labels", "bytes", ())]
LIMITS = ServingConfig(max_rows=4)


def test_a_v2_request_line_keeps_its_rows_id_and_outputs() -> None:
    doc = {"id": "a", "inputs": [{"name": "image", "shape": [2, 2, 3], "datatype": "UINT8", "data": list(range(12))}],
           "outputs": [{"name": "labels"}]}
    line = decode_line(json.dumps(doc).encode(), IMAGE, OUT, LIMITS)
    assert line.rows == 2 and not line.one_row and line.id == "a" and [o.name for o in line.outputs or []] == ["labels"]
    np.testing.assert_array_equal(line.tensors["image"], np.arange(12, dtype=np.uint8).reshape(2, 2, 3))
    doc["inputs"][0]["shape"] = [5, 2, 3]
    doc["inputs"][0]["data"] = [0] * 30
    with pytest.raises(ProtocolError, match=r"serving.max_rows") as info:  # the server's limits hold
        decode_line(json.dumps(doc).encode(), IMAGE, OUT, LIMITS)
    assert info.value.status == 413


@pytest.mark.parametrize("value", [[[1, 2, 3], [4, 5, 6]], [1, 2, 3, 4, 5, 6]])
def test_a_named_row_nested_or_flat(value: list[Any]) -> None:
    line = decode_line(json.dumps({"image": value}).encode(), IMAGE, OUT, LIMITS)
    assert line.one_row and line.rows == 1 and line.tensors["image"].shape == (1, 2, 3)
    assert line.tensors["image"].dtype == np.uint8 and line.tensors["image"][0, 1, 2] == 6


@pytest.mark.parametrize(("raw", "message"), [
    (b'{"image": [[1, 2], [3, 4]]}', r"image: expected values nested as shape \[2, 3\], got \[2, 2\]"),
    (b'{"image": [[1, 2, 3], [4, 5, 300]]}', r"out of range for UINT8"),
    (b'{"pixels": 1}', r"pixels: unknown input"),
    (b'{}', r"missing input 'image'"),
    (b'[1, 2]', r"expected a JSON object"),
    (b'{"image": ', r"malformed JSON"),
])
def test_a_bad_named_row_says_what_is_wrong(raw: bytes, message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        decode_line(raw, IMAGE, OUT, LIMITS)


def test_raw_records_for_one_bytes_input() -> None:
    row = b' {"mean radius": 17.99} '
    line = decode_line(row, ROWS, OUT, LIMITS)
    assert line.one_row and line.tensors["rows"].tolist() == [b'{"mean radius": 17.99}']
    text = decode_line(b'"a sentence \\u00e9"', ROWS, OUT, LIMITS)
    assert text.tensors["rows"].tolist() == ["a sentence é".encode()]
    v2 = {"inputs": [{"name": "rows", "shape": [1], "datatype": "BYTES", "data": ["{}"]}]}
    assert not decode_line(json.dumps(v2).encode(), ROWS, OUT, LIMITS).one_row


def _body(*chunks: bytes) -> Any:
    messages = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    return receive


async def _collect(receive: Any, max_bytes: int) -> list[tuple[int, bytes | None]]:
    return [item async for item in _lines(receive, max_bytes, timeout_s=5)]


def test_the_stream_splits_lines_across_chunks_and_bounds_them() -> None:
    receive = _body(b'{"a": 1}\n{"b"', b': 2}\n\n', b"x" * 40, b"y" * 40 + b"\nlast")
    assert asyncio.run(_collect(receive, max_bytes=32)) == [(1, b'{"a": 1}'), (2, b'{"b": 2}'), (4, None),
                                                           (5, b"last")]


_pixel = st.one_of(st.integers(-2, 300), st.floats(-1, 2), st.booleans(), st.none())
_row = st.one_of(st.lists(st.lists(_pixel, min_size=3, max_size=3), min_size=2, max_size=2),  # nested
                 st.lists(_pixel, min_size=6, max_size=6),  # flat: decode_line takes it, named_rows declines
                 st.lists(st.lists(_pixel, min_size=2, max_size=2), min_size=2, max_size=2))  # wrong shape


@settings(max_examples=150, deadline=None)
@given(rows=st.lists(_row, min_size=1, max_size=5), dtype=st.sampled_from(["uint8", "float32"]),
       extra=st.booleans())
def test_named_rows_at_once_equal_each_line_decoded_alone(rows: list[Any], dtype: str, extra: bool) -> None:
    """A block of named rows read in one numpy step is exactly the lines decoded one by one, or declined (None:
    `infc run` then decodes each line alone), never a different answer."""
    inputs = [TensorSpec("image", dtype, (2, 3))]
    raws = [json.dumps({"image": r, **({"other": 1} if extra and i == 0 else {})}).encode()
            for i, r in enumerate(rows)]
    block = named_rows(raws, inputs)
    alone: list[np.ndarray] | None = []
    for raw in raws:
        try:
            assert alone is not None
            alone.append(decode_line(raw, inputs, OUT, LIMITS).tensors["image"])
        except (ProtocolError, RequestError):
            alone = None
            break
    if block is None:
        return
    assert alone is not None, "a block with a bad line must be declined"
    want = np.concatenate(alone)
    assert block["image"].dtype == want.dtype
    np.testing.assert_array_equal(block["image"], want)
