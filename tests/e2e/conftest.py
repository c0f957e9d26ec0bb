"""The example spec, built once per test session into a temporary folder."""

from __future__ import annotations

from pathlib import Path

import pytest
from examples import DIGITS_SPEC

from infc.build import BuildOutcome, build


@pytest.fixture(scope="session")
def digits_build(tmp_path_factory: pytest.TempPathFactory) -> BuildOutcome:
    return build(DIGITS_SPEC, tmp_path_factory.mktemp("build"), iterations=50, latency_gate="off", lock="ignore")


@pytest.fixture(scope="session")
def digits_bundle(digits_build: BuildOutcome) -> Path:
    assert digits_build.path is not None
    return digits_build.path


@pytest.fixture(scope="session")
def digits_wheelhouse_build(tmp_path_factory: pytest.TempPathFactory) -> BuildOutcome:
    """The example built with its wheelhouse (x86_64 wheels for this Python) and its archive."""
    return build(DIGITS_SPEC, tmp_path_factory.mktemp("wheelhouse"), iterations=50, latency_gate="off",
                 lock="ignore", wheelhouse=True, archive=True)
