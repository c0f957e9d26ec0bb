"""Compute a bundle (files + manifest, in memory), then write it.

Computing is separate from writing, so tests and the report can look at a
bundle without touching disk. Same inputs (spec, model, data, lock, versions)
give the same bytes: files are sorted, carry no timestamps and get fixed modes.
What a build measures or what depends on the build machine lives apart:

The manifest is an `infc_runtime.abi.Manifest` (the type the runtime reads);
`manifest.json` is its `to_dict()`.

- `manifest.measurements`: every measured figure (accuracy, latency with its
  intervals, candidates, batch sweep, host noise), plus `files`, the sha256 of
  the measured files: `report.md` and Numba's cache (`kernels/__pycache__/`, `infc_runtime/ops/__pycache__/`,
  whose machine code embeds the build machine).
- `manifest.files`: the sha256 of every other file, and `content_hash`: one
  sha256 over those files and the rest of the manifest, equal across rebuilds.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, replace
from importlib.resources import files
from pathlib import Path
from typing import Any

import yaml

from infc_runtime.abi import Manifest

from . import __version__
from .templating import environment

__all__ = ["Bundle", "compute_bundle", "content_hash", "is_measured", "write_bundle", "stage_bundle",
           "runtime_files", "render", "file_mode", "EXECUTABLE"]

_MEASURED_PREFIXES = ("kernels/__pycache__/", "infc_runtime/ops/__pycache__/")
_MEASURED_FILES = ("report.md",)
EXECUTABLE = ("install.sh",)
"""The files written (and archived) with mode 0755; every other file gets 0644."""


def render(template: str, **values: Any) -> str:
    """Render one of templates/bundle/."""
    return environment("bundle").get_template(template).render(infc_version=__version__, **values)


def runtime_files() -> dict[str, bytes]:
    """The `infc_runtime` package and its `ops` subpackage, as bundle paths -> bytes (sources only)."""
    out: dict[str, bytes] = {}
    for package in ("infc_runtime", "infc_runtime.ops"):
        folder = package.replace(".", "/")
        for entry in sorted(files(package).iterdir(), key=lambda e: e.name):
            if entry.is_file() and entry.name.endswith((".py", ".txt")):
                out[f"{folder}/{entry.name}"] = entry.read_bytes()
    return out


def is_measured(path: str) -> bool:
    """Whether a bundle file holds measurements or build-machine code (kept out of the content hash)."""
    return path in _MEASURED_FILES or path.startswith(_MEASURED_PREFIXES)


def file_mode(path: str) -> int:
    """A bundle file's mode: 0755 for `EXECUTABLE`, else 0644 (whatever the umask)."""
    return 0o755 if path in EXECUTABLE else 0o644


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def content_hash(manifest: Mapping[str, Any]) -> str:
    """sha256 over the manifest without its measurements (its `files` hashes included): the bundle's identity."""
    content = {k: v for k, v in manifest.items() if k not in ("measurements", "content_hash")}
    return _sha256(json.dumps(content, sort_keys=True, separators=(",", ":")).encode())


@dataclass(frozen=True)
class Bundle:
    """Everything a bundle holds: relative path -> bytes, plus its manifest."""

    name: str
    version: str
    files: Mapping[str, bytes]
    manifest: Manifest

    @property
    def dirname(self) -> str:
        return f"{self.name}-{self.version}"

    @property
    def content_hash(self) -> str:
        return self.manifest.content_hash

    def all_files(self) -> dict[str, bytes]:
        """The files with `manifest.json` added."""
        text = json.dumps(self.manifest.to_dict(), indent=2, sort_keys=True) + "\n"
        return {**self.files, "manifest.json": text.encode()}

    def with_files(self, added: Mapping[str, bytes]) -> Bundle:
        """This bundle plus measured files (report, Numba cache), hashed into `measurements.files`."""
        unmeasured = [p for p in added if not is_measured(p)]
        if unmeasured:
            raise ValueError(f"only measured files can be added to a computed bundle, not {unmeasured}")
        contents = dict(sorted({**self.files, **added}.items()))
        measurements = dict(self.manifest.measurements)
        hashes = {**measurements.get("files", {}), **{p: _sha256(d) for p, d in added.items()}}
        measurements["files"] = dict(sorted(hashes.items()))
        return Bundle(self.name, self.version, contents, replace(self.manifest, measurements=measurements))

    def with_measurements(self, **sections: Any) -> Bundle:
        """This bundle with sections of `measurements` set (the content hash does not change)."""
        measurements = {**self.manifest.measurements, **sections}
        return Bundle(self.name, self.version, self.files, replace(self.manifest, measurements=measurements))

    def size(self) -> int:
        return sum(len(b) for b in self.all_files().values())


def compute_bundle(*, files_: Mapping[str, bytes], manifest: Manifest, spec_data: Mapping[str, Any]) -> Bundle:
    """Add the resolved spec, the hash of every file and the content hash to the manifest."""
    contents = dict(files_)
    contents["spec.yaml"] = yaml.safe_dump(dict(spec_data), sort_keys=False).encode()
    hashes = {path: _sha256(data) for path, data in sorted(contents.items()) if not is_measured(path)}
    hashed = replace(manifest, files=hashes, content_hash="")
    full = replace(hashed, content_hash=content_hash(hashed.to_dict()))
    measured = {p: d for p, d in contents.items() if is_measured(p)}
    bundle = Bundle(manifest.name, manifest.version,
                    dict(sorted((p, d) for p, d in contents.items() if not is_measured(p))), full)
    return bundle.with_files(measured) if measured else bundle


def _epoch() -> float | None:
    """SOURCE_DATE_EPOCH (reproducible-builds.org), when set: the time every written file gets."""
    value = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    return float(value) if value.isdigit() else None


def _write_tree(bundle: Bundle, root: Path) -> None:
    """Every file under `root`, files `file_mode` and folders 0755 whatever the umask, times from
    SOURCE_DATE_EPOCH."""
    epoch = _epoch()
    for rel, data in bundle.all_files().items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        os.chmod(path, file_mode(rel))
    for folder in [root, *(p for p in root.rglob("*") if p.is_dir())]:
        os.chmod(folder, 0o755)
    if epoch is not None:
        for path in [*root.rglob("*"), root]:
            os.utime(path, (epoch, epoch))


def stage_bundle(bundle: Bundle, root: Path) -> Path:
    """Write the bundle's files into an existing scratch folder `root` (for measuring it before it ships)."""
    _write_tree(bundle, root)
    return root


def write_bundle(bundle: Bundle, outdir: Path) -> Path:
    """Write to `outdir/<name>-<version>/`, replacing an older build atomically."""
    outdir.mkdir(parents=True, exist_ok=True)
    final = outdir / bundle.dirname
    staging = Path(tempfile.mkdtemp(prefix=f".{bundle.dirname}.", dir=outdir))
    try:
        _write_tree(bundle, staging)
        if final.exists():
            old = final.with_name(f".{bundle.dirname}.old")
            shutil.rmtree(old, ignore_errors=True)
            final.rename(old)
            staging.rename(final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            staging.rename(final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return final
