"""Shared test setup: pytest puts this folder on sys.path, so tests can import
helper modules that live here (e.g. `runtime_bundle`)."""
