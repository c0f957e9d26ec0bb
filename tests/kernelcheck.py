"""Compile a stage's generated kernel module from steps, for tests that compare it with the numpy reference."""

from __future__ import annotations

import ast
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from infc.kernels.codegen import generate_module
from infc.kernels.graph import StepIssue, resolve
from infc_runtime.pipeline import load_kernel_module
from infc_runtime.types import TensorSpec

__all__ = ["Steps", "spec_of", "compile_steps", "assert_same"]

Steps = list[tuple[str, dict[str, Any]]]


def spec_of(name: str, arr: np.ndarray) -> TensorSpec:
    """The per-row signature of a batched array."""
    return TensorSpec(name, "bytes" if arr.dtype == object else str(arr.dtype), arr.shape[1:])


def compile_steps(folder: Path, stage: str, steps: Steps, start: list[TensorSpec],
                  side: list[TensorSpec] | None = None) -> Any:
    """Generate `stage`'s module for `steps` into `folder` (with its assets) and import it."""

    def fail(i: int, issue: StepIssue) -> None:
        raise AssertionError(f"step {i}: {issue}")

    flow = resolve(steps, start, fail, side or [])
    module = generate_module(stage, flow, name="t", version="0")
    ast.parse(module.source)  # plain, valid Python
    path = module.write(folder)
    return load_kernel_module(path)


def assert_same(got: Mapping[str, np.ndarray], want: Mapping[str, np.ndarray], *, rtol: float = 0.0,
                atol: float = 0.0) -> None:
    """Same names, shapes and dtypes; equal values (NaN equals NaN), or within the tolerance for floats."""
    assert sorted(got) == sorted(want)
    for name in want:
        assert got[name].shape == want[name].shape, name
        assert got[name].dtype == want[name].dtype, name
        if want[name].dtype.kind == "f" and (rtol or atol):
            np.testing.assert_allclose(got[name], want[name], rtol=rtol, atol=atol, err_msg=name)
        else:
            np.testing.assert_array_equal(got[name], want[name], err_msg=name)
