"""Shared test setup. Tests import helper modules that live in this folder
(`examples`, `servers`, `runtime_bundle`); pytest runs in importlib mode (test
files may share basenames across folders), so the folder is put on sys.path here."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
