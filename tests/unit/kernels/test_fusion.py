"""kernels/fusion.py: how a fused group's loop is laid out (one pass over the output, row-invariant
work hoisted, parallel when it pays) and that each layout computes the same values."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from kernelcheck import Steps, assert_same, compile_steps

from infc.kernels import fusion
from infc.kernels.codegen import generate
from infc.kernels.graph import resolve
from infc.kernels.reference import run_reference
from infc_runtime.types import TensorSpec

PRE: Steps = [("resize", {"size": [224, 224]}), ("to_float", {"scale": 1 / 255}),
              ("normalize", {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}),
              ("layout", {"from": "HWC", "to": "CHW"})]


def _source(steps: Steps, start: TensorSpec) -> str:
    def fail(i: int, issue: Exception) -> None:
        raise AssertionError(str(issue))

    return generate("pre", resolve(steps, [start], fail), name="t", version="0")


def _loop(source: str) -> list[str]:
    """The lines of the (single) loop function."""
    lines = source.splitlines()
    start = next(i for i, line in enumerate(lines) if re.match(r"def \w+_loop\(", line))
    end = next(i for i in range(start + 1, len(lines)) if lines[i] and not lines[i].startswith(" "))
    return [line for line in lines[start:end] if line.strip()]


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def test_one_pass_over_the_output_in_input_order() -> None:
    loop = _loop(_source(PRE, TensorSpec("image", "uint8", (-1, -1, 3))))
    headers = [line.strip() for line in loop if line.strip().startswith("for ")]
    # CHW output, loops nest H, W, C (the input's order): reads stay local, the layout only moves the write
    assert headers == ["for r in numba.prange(x.shape[0] * 224):", "for i2 in range(224):", "for i0 in range(3):"]
    assert loop[-1].strip() == "out[n, i0, i1, i2] = v"
    assert sum("= x[n," in line for line in loop) == 4, "four source samples per output element"


def test_row_and_column_tables_are_read_outside_the_innermost_loop() -> None:
    loop = _loop(_source(PRE, TensorSpec("image", "uint8", (-1, -1, 3))))
    inner = _indent(loop[-1])
    rows = {_indent(line) for line in loop if re.search(r"= rows_\d+[iw][01]\[", line)}
    cols = {_indent(line) for line in loop if re.search(r"= cols_\d+[iw][01]\[", line)}
    assert len(rows) == len(cols) == 1, (rows, cols)
    assert min(rows) < min(cols) < inner, "a row's taps once per row, a column's once per column"


@pytest.mark.parametrize(
    ("steps", "shape", "parallel"),
    [
        (PRE, (-1, -1, 3), True),  # 224x224x3 out
        ([("to_float", {})], (8, 8), False),  # 64 elements: threads cost more than they save
        ([("to_float", {})], (-1, -1), True),  # size known only at run time: images are usually large
        ([("resize", {"size": [8, 8]}), ("to_float", {})], (-1, -1), False),  # small output, any input
    ],
)
def test_parallel_when_the_output_is_large(steps: Steps, shape: tuple[int, ...], parallel: bool) -> None:
    source = _source(steps, TensorSpec("image", "uint8", shape))
    assert ("parallel=True" in source) == parallel
    assert ("numba.prange" in source) == parallel


def test_serial_and_parallel_loops_agree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    start = TensorSpec("image", "uint8", (-1, -1, 3))
    x = {"image": np.random.default_rng(0).integers(0, 256, (3, 31, 45, 3), dtype=np.uint8)}
    steps: Steps = [("resize", {"size": [17, 23]}), *PRE[1:]]
    results: dict[bool, Any] = {}
    for parallel in (True, False):
        monkeypatch.setattr(fusion, "PARALLEL_MIN_ELEMENTS", 0 if parallel else 1 << 62)
        module = compile_steps(tmp_path / str(parallel), "pre", steps, [start])
        assert ("numba.prange" in Path(module.__file__).read_text()) == parallel
        results[parallel] = module.run(x)
    assert_same(results[True], results[False])
    assert_same(results[True], run_reference(steps, x))


def test_rank_zero_rows(tmp_path: Path) -> None:
    steps: Steps = [("scale", {"factor": 2.0})]
    module = compile_steps(tmp_path, "pre", steps, [TensorSpec("x", "int32", ())])
    x = {"x": np.arange(5, dtype=np.int32)}
    assert_same(module.run(x), run_reference(steps, x))
