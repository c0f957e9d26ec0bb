"""Compute a bundle (files + manifest, in memory), then write it.

Computing is separate from writing, so `--dry-run`, tests and the report can
look at a bundle without touching disk. Files are sorted and carry no
timestamps: the same inputs give the same bytes (the manifest's measured
numbers aside).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any

import yaml

from . import __version__
from .templating import environment

__all__ = ["Bundle", "compute_bundle", "write_bundle", "runtime_files", "render"]


def render(template: str, **values: Any) -> str:
    """Render one of templates/bundle/."""
    return environment("bundle").get_template(template).render(infc_version=__version__, **values)


def runtime_files() -> dict[str, bytes]:
    """The `infc_runtime` package, as bundle paths -> bytes (sources only)."""
    root = files("infc_runtime")
    out: dict[str, bytes] = {}
    for entry in sorted(root.iterdir(), key=lambda e: e.name):
        if entry.is_file() and entry.name.endswith((".py", ".txt")):
            out[f"infc_runtime/{entry.name}"] = entry.read_bytes()
    return out


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Bundle:
    """Everything a bundle holds: relative path -> bytes, plus its manifest."""

    name: str
    version: str
    files: Mapping[str, bytes]
    manifest: Mapping[str, Any] = field(default_factory=dict)

    @property
    def dirname(self) -> str:
        return f"{self.name}-{self.version}"

    def all_files(self) -> dict[str, bytes]:
        """The files with `manifest.json` added."""
        text = json.dumps(self.manifest, indent=2, sort_keys=True) + "\n"
        return {**self.files, "manifest.json": text.encode()}

    def with_file(self, path: str, data: bytes) -> Bundle:
        """This bundle plus one file, hashed into the manifest (the others are not hashed again)."""
        files = dict(sorted({**self.files, path: data}.items()))
        hashes = dict(sorted({**self.manifest["files"], path: _sha256(data)}.items()))
        return Bundle(self.name, self.version, files, {**self.manifest, "files": hashes})

    def size(self) -> int:
        return sum(len(b) for b in self.all_files().values())


def compute_bundle(*, name: str, version: str, files_: Mapping[str, bytes], manifest: Mapping[str, Any],
                   spec_data: Mapping[str, Any]) -> Bundle:
    """Add the resolved spec and the hash of every file to the manifest."""
    contents = dict(files_)
    contents["spec.yaml"] = yaml.safe_dump(dict(spec_data), sort_keys=False).encode()
    full = dict(manifest)
    full["files"] = {path: _sha256(data) for path, data in sorted(contents.items())}
    return Bundle(name, version, dict(sorted(contents.items())), full)


def write_bundle(bundle: Bundle, outdir: Path) -> Path:
    """Write to `outdir/<name>-<version>/`, replacing an older build atomically."""
    outdir.mkdir(parents=True, exist_ok=True)
    final = outdir / bundle.dirname
    staging = Path(tempfile.mkdtemp(prefix=f".{bundle.dirname}.", dir=outdir))
    try:
        for rel, data in bundle.all_files().items():
            path = staging / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        os.chmod(staging, 0o755)
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
