"""Verify a bundle against its manifest before any of it is imported or read.

`verify_bundle(root)` checks, in this order, and raises `BundleError` (one line
naming the file and what is wrong) at the first problem:

1. `manifest.json` is a regular file inside the bundle, at most
   `MAX_MANIFEST_BYTES`, valid UTF-8 JSON, of a schema version whose major is
   `SCHEMA_MAJOR` (`abi.SCHEMA_VERSION`'s: a bundle of another major is
   refused by name before its layout is read), and its `content_hash` is the sha256
   of the manifest without `measurements` and `content_hash` (as the compiler's
   `infc.bundle.content_hash` computes it; it covers `files`).
2. Every path the manifest names (`files`, `measurements.files`, `model.path`,
   `kernels.pre`, `kernels.post`) is a plain relative POSIX path (no leading
   `/`, no `..`, `.` or empty parts, no backslash) that stays inside the bundle
   once symlinks are resolved; `model.path` and the kernels are among `files`;
   `measurements.files` names only measured files (`report.md`, Numba's cache
   `kernels/__pycache__/*.nbi|*.nbc` and `infc_runtime/ops/__pycache__/*.nbi|*.nbc`).
3. Every file in `files` and `report.md` exists, is a regular file, and has
   its listed sha256 (read in 1 MiB chunks: memory stays bounded whatever the
   size).
4. No other file is in the bundle, except caches, which are never trusted:
   any unlisted file directly inside a `__pycache__/` folder (Python's `.pyc`
   files, and the Numba cache the server writes when it compiles) is removed
   before anything is imported, and so is a listed Numba cache file whose hash
   does not match (Numba rewrites its index when it compiles a new signature).
   Python runs a `.pyc` instead of its source whenever the `.pyc` header
   records the source's mtime and size, and Numba unpickles its cache files:
   left in place, either would run code the manifest does not vouch for.
   Removed caches are rebuilt: Numba compiles during the warm-up, before the
   server reports ready. A listed Numba cache file may be missing (a bundle
   copied without it compiles the same way). A folder that cannot be written
   (a read-only bundle) cannot hold caches written since the build, so a cache
   that cannot be removed fails the check.

What this protects, honestly: a bundle whose files were changed, added or
removed after the build is refused before any kernel module is imported and
before the model is read. The manifest is checked against itself only (its
`content_hash`); whoever can rewrite the manifest with new hashes is not
stopped until the content hash is signed (deploy work). `measurements` is not
covered by the content hash. The bundle's own `serve.py` is the trust root: it
runs this module, compiled from its source bytes, before importing anything
else of the bundle; with `python -m infc_runtime serve` the runtime is the
installed one and the bundle's runtime copy is checked but not used.

This module uses the standard library only, so that `serve.py` can run it
before the `infc_runtime` package is imported.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

__all__ = ["MAX_MANIFEST_BYTES", "SCHEMA_MAJOR", "BundleError", "Verified", "content_hash", "schema_version",
           "verify_bundle"]

MAX_MANIFEST_BYTES = 32 << 20
"""A larger manifest.json is refused before it is parsed."""

SCHEMA_MAJOR = 1
"""The manifest schema's major version the runtime reads (`abi` takes it from here: this module imports
nothing of the package, see above)."""

MANIFEST = "manifest.json"
_CHUNK = 1 << 20
_SHA256 = re.compile(r"[0-9a-f]{64}")
_NUMBA_CACHE = re.compile(r"(kernels|infc_runtime/ops)/__pycache__/[^/]+\.nb[ic]")
"""Numba's cache: of the generated kernels, and of the runtime's ops library they call."""
_REPORT = "report.md"


class BundleError(Exception):
    """A bundle directory cannot be loaded; the message says why, for people."""


@dataclass(frozen=True)
class Verified:
    """What `verify_bundle` checked: the bundle's identity and what it removed."""

    root: Path
    content_hash: str
    files: int
    bytes: int
    removed: tuple[str, ...] = ()
    """Cache files removed: unlisted, or listed Numba cache files that did not match (in `mismatched`)."""
    mismatched: tuple[str, ...] = ()

    def summary(self) -> str:
        text = f"{self.files} files ({self.bytes / 1e6:.1f} MB) match content hash {self.content_hash[:12]}"
        return text + (f"; removed {len(self.removed)} untrusted cache file(s)" if self.removed else "")


def content_hash(manifest: Mapping[str, Any]) -> str:
    """sha256 over the manifest without `measurements` and `content_hash` (the compiler's rule)."""
    content = {k: v for k, v in manifest.items() if k not in ("measurements", "content_hash")}
    return hashlib.sha256(json.dumps(content, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def verify_bundle(root: str | Path) -> Verified:
    """Check the bundle in `root` against its manifest (module docstring); remove untrusted caches."""
    base = Path(os.path.realpath(root))
    if not base.is_dir():
        raise BundleError(f"{root}: not a directory")
    manifest = _read_manifest(base, root)
    where = f"{root}/{MANIFEST}"
    try:
        schema_version(manifest)
    except ValueError as exc:
        raise BundleError(f"{where}: {exc}") from None
    expected = manifest.get("content_hash")
    if not isinstance(expected, str) or content_hash(manifest) != expected:
        raise BundleError(f"{where}: content_hash does not match the manifest (edited after the build?)")
    files = _listing(manifest.get("files"), where, "files")
    measurements = manifest.get("measurements", {})
    if not isinstance(measurements, dict):
        raise BundleError(f"{where}: measurements: expected an object")
    measured = _listing(measurements.get("files", {}), where, "measurements.files")
    for path in measured:
        if path != _REPORT and not _NUMBA_CACHE.fullmatch(path):
            raise BundleError(f"{where}: measurements.files: {path!r} is not a measured file "
                              "(report.md or Numba's cache kernels/__pycache__/*.nbi|*.nbc, "
                              "infc_runtime/ops/__pycache__/*.nbi|*.nbc)")
    for key, path in _named_paths(manifest, where):
        _check_shape(path, where, key)
        if path not in files:
            raise BundleError(f"{where}: {key}: {path!r} is not among the manifest's files (not verified)")
    total, mismatched = 0, []
    for path, digest in {**files, **measured}.items():
        cache = _NUMBA_CACHE.fullmatch(path) is not None
        size = _check_file(base, root, path, digest, optional=cache)
        if size is None:
            mismatched.append(path)
        else:
            total += size
    untrusted = sorted([*mismatched, *_unlisted(base, root, files.keys() | measured.keys())])
    removed = tuple(_remove(base, root, path) for path in untrusted)
    return Verified(base, expected, len(files) + len(measured), total, removed, tuple(sorted(mismatched)))


def _read_manifest(base: Path, root: str | Path) -> dict[str, Any]:
    where = f"{root}/{MANIFEST}"
    path = base / MANIFEST
    if not path.exists() and not path.is_symlink():
        raise BundleError(f"{root}: no {MANIFEST} (is this an infc bundle?)")
    _inside(base, root, MANIFEST)
    try:
        with open(path, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise BundleError(f"{where}: not a regular file")
            data = f.read(MAX_MANIFEST_BYTES + 1)
    except OSError as exc:
        raise BundleError(f"{where}: cannot read ({exc.strerror})") from None
    if len(data) > MAX_MANIFEST_BYTES:
        raise BundleError(f"{where}: larger than {MAX_MANIFEST_BYTES >> 20} MiB")
    try:
        manifest = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise BundleError(f"{where}: invalid JSON (not UTF-8)") from None
    except json.JSONDecodeError as exc:
        raise BundleError(f"{where}: invalid JSON ({exc})") from None
    except RecursionError:
        raise BundleError(f"{where}: invalid JSON (nested too deeply)") from None
    if not isinstance(manifest, dict):
        raise BundleError(f"{where}: invalid JSON (expected an object)")
    return manifest


def schema_version(manifest: Mapping[str, Any]) -> str:
    """The manifest's `schema_version` ("1.0" for one written before it was), or ValueError for a malformed one
    or another major (`abi.Manifest` reads it through here too: one rule for both readers)."""
    value = manifest.get("schema_version", f"{manifest.get('format', SCHEMA_MAJOR)}.0")
    found = re.fullmatch(r"(\d+)\.(\d+)", value) if isinstance(value, str) else None
    if found is None:
        raise ValueError(f"schema_version {value!r}: expected MAJOR.MINOR, e.g. '{SCHEMA_MAJOR}.1'")
    if int(found[1]) != SCHEMA_MAJOR:
        raise ValueError(f"schema_version {value}: this runtime reads schema {SCHEMA_MAJOR}.x only (serve the "
                         "bundle with the runtime it ships, `python serve.py`, or rebuild it with this infc)")
    return value


def _listing(value: Any, where: str, key: str) -> dict[str, str]:
    """A `files` mapping: checked paths -> sha256 hex digests."""
    if not isinstance(value, dict):
        raise BundleError(f"{where}: {key}: expected an object of path -> sha256")
    for path, digest in value.items():
        _check_shape(path, where, key)
        if path == MANIFEST:
            raise BundleError(f"{where}: {key}: lists {MANIFEST} itself")
        if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
            raise BundleError(f"{where}: {key}: {path!r}: expected a sha256 hex digest")
    return value


def _named_paths(manifest: dict[str, Any], where: str) -> Iterator[tuple[str, Any]]:
    """The paths the runtime opens: the model and the two kernel modules."""
    model, kernels = manifest.get("model"), manifest.get("kernels")
    if not isinstance(model, dict) or "path" not in model:
        raise BundleError(f"{where}: model.path: missing")
    if not isinstance(kernels, dict) or not {"pre", "post"} <= kernels.keys():
        raise BundleError(f"{where}: kernels: expected pre and post")
    yield "model.path", model["path"]
    yield "kernels.pre", kernels["pre"]
    yield "kernels.post", kernels["post"]


def _check_shape(path: Any, where: str, key: str) -> None:
    """A relative POSIX path in canonical form: nothing that could name a file outside the bundle."""
    if not isinstance(path, str) or not path:
        raise BundleError(f"{where}: {key}: {path!r} is not a path")
    parts = path.split("/")
    if path.startswith("/") or PurePosixPath(path).is_absolute():
        raise BundleError(f"{where}: {key}: {path!r} is outside the bundle (absolute path)")
    if ".." in parts:
        raise BundleError(f"{where}: {key}: {path!r} is outside the bundle (..)")
    if "\\" in path or "\0" in path or any(p in ("", ".") for p in parts):
        raise BundleError(f"{where}: {key}: {path!r} is not a plain relative path")


def _inside(base: Path, root: str | Path, rel: str) -> Path:
    """`base/rel` with symlinks resolved; refused when that leaves the bundle."""
    real = Path(os.path.realpath(base / rel))
    if real != base and base not in real.parents:
        raise BundleError(f"{root}/{rel}: outside the bundle (a symlink to {real})")
    return real


def _check_file(base: Path, root: str | Path, rel: str, digest: str, *, optional: bool) -> int | None:
    """The file's size when it matches `digest`; None for an optional cache file that does not."""
    path = base / rel
    if not path.exists() and not path.is_symlink():
        if optional:
            return 0
        raise BundleError(f"{root}/{rel}: missing (listed in {MANIFEST})")
    real = _inside(base, root, rel)
    h, size = hashlib.sha256(), 0
    try:
        with open(real, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise BundleError(f"{root}/{rel}: not a regular file")
            while chunk := f.read(_CHUNK):
                h.update(chunk)
                size += len(chunk)
    except OSError as exc:
        raise BundleError(f"{root}/{rel}: cannot read ({exc.strerror})") from None
    if h.hexdigest() == digest:
        return size
    if optional:
        return None
    raise BundleError(f"{root}/{rel}: changed (sha256 {h.hexdigest()[:12]}..., the manifest lists {digest[:12]}...)")


def _unlisted(base: Path, root: str | Path, listed: set[str]) -> list[str]:
    """Unlisted caches (to remove); an unlisted file anywhere else fails the check."""
    caches = []
    for folder, dirs, names in os.walk(base):
        here = Path(folder)
        # a symlinked folder is not walked into: it is an entry of its own, never a listed file
        for name in [*names, *(d for d in dirs if (here / d).is_symlink())]:
            rel = (here / name).relative_to(base).as_posix()
            if rel == MANIFEST or rel in listed:
                continue
            if here.name == "__pycache__" and not (here / name).is_dir():
                caches.append(rel)
                continue
            raise BundleError(f"{root}/{rel}: extra file (not in {MANIFEST})")
    return caches


def _remove(base: Path, root: str | Path, rel: str) -> str:
    try:
        os.unlink(base / rel)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise BundleError(f"{root}/{rel}: an untrusted cache file that cannot be removed ({exc.strerror})") from None
    return rel
