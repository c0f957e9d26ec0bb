"""`infc run` decodes lines a block at a time (`batch_run._decode_block`): each line's request is exactly what
`decode_line` makes of it alone, or the same error."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from infc_runtime.batch_run import _Chunk, _decode_block, _Later
from infc_runtime.lines import decode_line
from infc_runtime.protocol import ProtocolError
from infc_runtime.types import ServingConfig, TensorSpec

OUT = [TensorSpec("labels", "bytes", ())]
TEXT = [TensorSpec("text", "bytes", ())]
IMAGE = [TensorSpec("image", "uint8", (2, 2))]


def _alone(raw: bytes, inputs: list[TensorSpec]) -> Any:
    try:
        line = decode_line(raw, inputs, OUT, ServingConfig())
    except ProtocolError as exc:
        return exc.message
    return {k: v.tolist() for k, v in line.tensors.items()}, line.rows


def _block(raws: list[bytes], inputs: list[TensorSpec]) -> list[Any]:
    pipeline: Any = SimpleNamespace(inputs=inputs, outputs=OUT, serving=ServingConfig())
    later = [_Later(n, raw, pipeline) for n, raw in enumerate(raws, start=1)]
    got: list[Any] = []
    for items, unit in _decode_block(later, pipeline):
        if isinstance(unit, _Chunk):
            assert len(items) == unit.rows
            got += [({k: v.tolist() for k, v in unit.line(i).tensors.items()}, 1) for i in range(unit.rows)]
        else:
            [item] = items
            got.append(item.error if unit is None else ({k: v.tolist() for k, v in unit.tensors.items()}, unit.rows))
        assert [i.line for i in items] == [later[len(got) - len(items) + j].line for j in range(len(items))]
    return got


V2 = {"inputs": [{"name": "text", "shape": [2], "datatype": "BYTES", "data": ["x", "y"]}]}
TEXT_LINES = [b'{"mean radius": 1.5}\n', b'"a text, with \\"inputs\\" in it"\n', b'  "caf\\u00e9"  \n',
              json.dumps(V2).encode(),
              b'"not closed\n', b'[1, 2]\n', b'{"inputs": 3}\n']
IMAGE_LINES = [b'{"image": [[1, 2], [3, 4]]}\n', b'{"image": [5, 6, 7, 8]}\n', b'{"image": [[1, 2], [3, 400]]}\n',
               b'{"image": [[true, 2], [3, 4]]}\n', b'{"image": [[0, 0], [0, 0]]}\n', b'not json\n']


@pytest.mark.parametrize(("inputs", "lines"), [(TEXT, TEXT_LINES), (IMAGE, IMAGE_LINES), (IMAGE, IMAGE_LINES[:1] * 3),
                                               (IMAGE, [IMAGE_LINES[0], IMAGE_LINES[4]])])
def test_a_block_decodes_each_line_as_decode_line_does(inputs: list[TensorSpec], lines: list[bytes]) -> None:
    assert _block(lines, inputs) == [_alone(raw, inputs) for raw in lines]


def test_a_block_of_texts_is_one_bytes_array(tmp_path: Path) -> None:
    pipeline: Any = SimpleNamespace(inputs=TEXT, outputs=OUT, serving=ServingConfig())
    later = [_Later(n, raw, pipeline) for n, raw in enumerate([b'"one"\n', b'{"a": 1}\n', b'"two"\n'], start=1)]
    [(items, unit)] = list(_decode_block(later, pipeline))
    assert isinstance(unit, _Chunk) and unit.rows == 3 and len(items) == 3
    np.testing.assert_array_equal(unit.tensors["text"], np.array([b"one", b'{"a": 1}', b"two"], dtype=object))
