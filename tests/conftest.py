"""Shared test setup. Tests import helper modules that live in this folder
(`examples`, `servers`, `runtime_bundle`); pytest runs in importlib mode (test
files may share basenames across folders), so the folder is put on sys.path here."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import pytest  # noqa: E402

OPT_IN = ("arm_wheels",)
"""Markers (registered in pyproject.toml) of slow tests that run only when `-m` names them."""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    selected = config.getoption("markexpr") or ""
    for item in items:
        for marker in OPT_IN:
            if marker in item.keywords and marker not in selected:
                item.add_marker(pytest.mark.skip(reason=f"opt-in: run with -m {marker}"))
