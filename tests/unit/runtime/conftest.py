"""Fixtures shared by the runtime's unit tests: a small bundle, and a heap left as pytest had it."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

import pytest
from runtime_bundle import write_bundle


@pytest.fixture(autouse=True)
def _isolated_heap() -> Iterator[None]:
    """An app that warms up settles the heap (gc.freeze, a higher gen-0 threshold) of the process it runs in:
    here, pytest's. Undo it after each test so that the rest of the session collects as usual."""
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small sealed bundle of the test model (tests/runtime_bundle.py)."""
    return write_bundle(tmp_path_factory.mktemp("bundle"))
