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
        (PRE, (-1, -1, 3), True),  # 224x224x3 out, read at looked-up positions: vectorizes only as a prange
        ([("resize", {"shorter": 8})], (-1, -1), True),  # a size known only at run time
        ([("resize", {"size": [8, 8]}), ("to_float", {})], (-1, -1), False),  # 64 elements: the prange costs more
        ([("resize", {"size": [40, 40], "method": "nearest"})], (-1, -1, 3), True),  # 4,800 elements
        ([("resize", {"fit": [40, 40]}), ("pad", {"size": [40, 40]})], (80, 60, 3), True),
        ([("to_float", {}), ("layout", {"from": "HWC", "to": "CHW"})], (-1, -1, 3), False),  # in-order reads
        ([("center_crop", {"size": [200, 200]}), ("channel_order", {"from": "RGB", "to": "BGR"})], (-1, -1, 3),
         False),  # offsets and arithmetic: in order too
        ([("channel_order", {"from": "RGB", "to": "GBR"})], (-1, -1, 3), True),  # a channel table
    ],
)
def test_prange_where_it_pays(steps: Steps, shape: tuple[int, ...], parallel: bool) -> None:
    source = _source(steps, TensorSpec("image", "uint8", shape))
    assert ("parallel=True" in source) == parallel
    assert ("numba.prange" in source) == parallel
    # threads: the module's THREADS (INFC_KERNEL_THREADS, default 1), set around the loop only
    assert ("numba.set_num_threads(THREADS)" in source) == parallel


def test_threads_come_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import numba

    most = numba.config.NUMBA_NUM_THREADS
    for value, threads in (("1", 1), ("2", min(2, most)), ("999", most), ("0", 1)):
        monkeypatch.setenv("INFC_KERNEL_THREADS", value)
        module = compile_steps(tmp_path / value, "pre", PRE, [TensorSpec("image", "uint8", (-1, -1, 3))])
        got = module.THREADS
        assert got == threads, value
    before = numba.get_num_threads()
    module.run({"image": np.zeros((1, 5, 5, 3), np.uint8)})
    assert numba.get_num_threads() == before, "the caller's setting is put back"


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
