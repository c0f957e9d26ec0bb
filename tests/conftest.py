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
import threading
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from infc.emulate import EMULATOR_DIR_ENV, emulator_dir  # noqa: E402 - after the folder is on sys.path

os.environ.setdefault("INFC_TESTS_EMULATOR_DIR", str(emulator_dir()))
os.environ[EMULATOR_DIR_ENV] = str(Path(tempfile.gettempdir()) / "infc-tests-no-emulator")


def _triton_clients_collected_on_any_thread() -> None:
    """tritonclient.http's client closes itself in `__del__`, joining its gevent pool; that pool belongs to the
    thread that made the client, and when the cyclic garbage collector happens to run on another thread (a later
    test's worker pool) the join raises InvalidThreadUseError, which pytest reports against that later test. The
    tests close their clients themselves: off the main thread, the destructor leaves it at that."""
    try:
        from tritonclient.http import _client
    except ImportError:
        return
    close_on_del = _client.InferenceServerClient.__del__

    def __del__(self: object) -> None:
        if threading.current_thread() is threading.main_thread():
            close_on_del(self)

    _client.InferenceServerClient.__del__ = __del__  # type: ignore[method-assign]


_triton_clients_collected_on_any_thread()

OPT_IN = {
    "qemu": "opt-in: `pytest -m qemu` runs it (after `python -m infc.emulate setup`)",
    "arm_wheels": "opt-in: `pytest -m arm_wheels` runs it (downloads ~120 MB of aarch64 wheels)",
}
"""Markers (registered in pyproject.toml) of slow tests that run only when `-m` names them, with the reason shown."""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    selected = config.getoption("markexpr") or ""
    for item in items:
        for marker, reason in OPT_IN.items():
            if marker in item.keywords and marker not in selected:
                item.add_marker(pytest.mark.skip(reason=reason))
