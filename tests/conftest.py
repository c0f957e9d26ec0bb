"""Shared test setup. Tests import helper modules that live in this folder
(`examples`, `servers`, `runtime_bundle`); pytest runs in importlib mode (test
files may share basenames across folders), so the folder is put on sys.path here.

Emulators (`python -m infc.emulate setup`) change which numerics a build measures
accuracy on: the default run never sees them (INFC_EMULATOR_DIR points nowhere).
Tests marked `qemu` are opt-in (`pytest -m qemu`); they find the set-up folder in
INFC_TESTS_EMULATOR_DIR."""

import os
import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from infc.emulate import EMULATOR_DIR_ENV, emulator_dir  # noqa: E402 - after the folder is on sys.path

os.environ.setdefault("INFC_TESTS_EMULATOR_DIR", str(emulator_dir()))
os.environ[EMULATOR_DIR_ENV] = str(Path(tempfile.gettempdir()) / "infc-tests-no-emulator")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if "qemu" in (config.getoption("markexpr") or ""):
        return
    skip = pytest.mark.skip(reason="opt-in: `pytest -m qemu` runs it (after `python -m infc.emulate setup`)")
    for item in items:
        if "qemu" in item.keywords:
            item.add_marker(skip)
