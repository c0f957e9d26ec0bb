"""The example spec, built once per test session into a temporary folder (as it is, and for `target: cuda`)."""

from __future__ import annotations

from pathlib import Path

import pytest
from examples import DIGITS_SPEC, digits_copy

from infc.build import BuildOutcome, build


@pytest.fixture(scope="session")
def digits_build(tmp_path_factory: pytest.TempPathFactory) -> BuildOutcome:
    return build(DIGITS_SPEC, tmp_path_factory.mktemp("build"), iterations=50, latency_gate="off", lock="ignore")


@pytest.fixture(scope="session")
def digits_bundle(digits_build: BuildOutcome) -> Path:
    assert digits_build.path is not None
    return digits_build.path


@pytest.fixture(scope="session")
def cuda_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example built for `target: cuda` (fp32): on a host without CUDA, built and measured on CPU."""
    folder = tmp_path_factory.mktemp("cuda")
    spec = digits_copy(folder, {"target: {hardware: x86, isa: native}": "target: {hardware: cuda, fp16: false}",
                                "quantize: auto": "quantize: none"})
    result = build(spec, folder / "out", iterations=20, latency_gate="off", lock="ignore")
    assert result.path is not None
    return result.path


@pytest.fixture(scope="session")
def digits_wheelhouse_build(tmp_path_factory: pytest.TempPathFactory) -> BuildOutcome:
    """The example built with its wheelhouse (x86_64 wheels for this Python) and its archive."""
    return build(DIGITS_SPEC, tmp_path_factory.mktemp("wheelhouse"), iterations=50, latency_gate="off",
                 lock="ignore", wheelhouse=True, archive=True)
