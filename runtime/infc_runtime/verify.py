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

4a. The wheelhouse (`wheels/`, `infc build --wheelhouse`): its wheels are
   among `files` with their sha256, and the manifest's `wheels` gives each one's
   size. By default (`full=False`, what `serve.py` runs at every start) a wheel
   is checked for presence, being a regular file inside the bundle, and its
   size, not hashed: ~100 MB of sha256 at every start would cost more than the
   rest of a cold start, and the server never imports from `wheels/` (pip
   installs them, with `--require-hashes` against requirements.txt, which this
   check hashes). `full=True` (`serve.py --verify-only`, which `install.sh`
   runs before it installs anything) hashes them too.
4b. `.venv/` at the bundle's top level (a real folder, not a symlink) is not
   walked: it is the environment `install.sh` makes by default, the one the
   server runs in, as trusted as any site-packages the interpreter reads (a
   bundle cannot vouch for the interpreter that checks it). Only that folder:
   a `.venv` elsewhere, or a file or symlink of that name, is an extra file.

5. With a public key (`public_key=`, a PEM file; `serve --public-key PUB` or
   `INFC_PUBLIC_KEY`), first of all: `manifest.sig` beside the manifest is an
   Ed25519 signature (base64) over the exact bytes of `manifest.json` by the
   matching private key (`infc sign BUNDLE --key KEY`). Since the manifest
   hashes every other file, a good signature vouches for the whole bundle.
   `manifest.sig` is the one file besides `manifest.json` that the manifest
   does not list. Checking it needs the `cryptography` package, imported only
   then (a bundle's requirements.txt pins it).

What this protects, honestly: a bundle whose files were changed, added or
removed after the build is refused before any kernel module is imported and
before the model is read. The manifest is checked against itself only (its
`content_hash`); whoever can rewrite the manifest with new hashes is stopped
only by a signature checked with a public key (5.). `measurements` is not
covered by the content hash. The bundle's own `serve.py` is the trust root: it
runs this module, compiled from its source bytes, before importing anything
else of the bundle; with `python -m infc_runtime serve` the runtime is the
installed one and the bundle's runtime copy is checked but not used.

This module uses the standard library only, so that `serve.py` can run it
before the `infc_runtime` package is imported.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import re
import stat
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

__all__ = ["MANIFEST", "MAX_MANIFEST_BYTES", "SCHEMA_MAJOR", "SIGNATURE", "BundleError", "Verified", "content_hash",
           "fingerprint", "load_public_key", "schema_version", "verify_bundle", "VENV"]

MAX_MANIFEST_BYTES = 32 << 20
"""A larger manifest.json is refused before it is parsed."""

SCHEMA_MAJOR = 1
"""The manifest schema's major version the runtime reads (`abi` takes it from here: this module imports
nothing of the package, see above)."""

MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
"""The Ed25519 signature over manifest.json's bytes (base64, one line): written by `infc sign`."""
_MAX_SIGNATURE_BYTES = 1024
_CHUNK = 1 << 20
_SHA256 = re.compile(r"[0-9a-f]{64}")
_NUMBA_CACHE = re.compile(r"(kernels|infc_runtime/ops)/__pycache__/[^/]+\.nb[ic]")
"""Numba's cache: of the generated kernels, and of the runtime's ops library they call."""
_REPORT = "report.md"
VENV = ".venv"
"""The one unlisted folder a bundle may hold: `install.sh`'s default virtual environment (4b.)."""
_WHEELS = "wheels/"


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
    signed_by: str | None = None
    """The fingerprint of the public key whose signature was checked (`fingerprint`); None: not checked."""

    def summary(self) -> str:
        text = f"{self.files} files ({self.bytes / 1e6:.1f} MB) match content hash {self.content_hash[:12]}"
        if self.signed_by is not None:
            text += f"; {MANIFEST} signed by key {self.signed_by}"
        return text + (f"; removed {len(self.removed)} untrusted cache file(s)" if self.removed else "")


def content_hash(manifest: Mapping[str, Any]) -> str:
    """sha256 over the manifest without `measurements` and `content_hash` (the compiler's rule)."""
    content = {k: v for k, v in manifest.items() if k not in ("measurements", "content_hash")}
    return hashlib.sha256(json.dumps(content, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def verify_bundle(root: str | Path, *, public_key: str | Path | None = None, full: bool = False) -> Verified:
    """Check the bundle in `root` against its manifest (module docstring); remove untrusted caches.

    `public_key`: a PEM file; the manifest's bytes must then carry a good signature by its private key,
    checked before they are parsed. `full`: hash the wheelhouse's wheels too (else their sizes, 4a.)."""
    base = Path(os.path.realpath(root))
    if not base.is_dir():
        raise BundleError(f"{root}: not a directory")
    data = _read_manifest_bytes(base, root)
    signed_by = None
    if public_key is not None:  # the signature before anything of the manifest is parsed
        signed_by = _check_signature(base, root, data, load_public_key(public_key), public_key)
    manifest = _parse_manifest(data, root)
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
    sizes = _wheel_sizes(manifest.get("wheels", {}), files, where)
    total, mismatched = 0, []
    for path, digest in {**files, **measured}.items():
        cache = _NUMBA_CACHE.fullmatch(path) is not None
        if path in sizes and not full:
            size: int | None = _check_size(base, root, path, sizes[path])
        else:
            size = _check_file(base, root, path, digest, optional=cache)
        if size is None:
            mismatched.append(path)
        else:
            total += size
    untrusted = sorted([*mismatched, *_unlisted(base, root, files.keys() | measured.keys())])
    removed = tuple(_remove(base, root, path) for path in untrusted)
    return Verified(base, expected, len(files) + len(measured), total, removed, tuple(sorted(mismatched)),
                    signed_by)


def load_public_key(path: str | Path) -> Any:
    """The Ed25519 public key in the PEM file `path`; BundleError (naming the file, never its content) when it
    cannot be read or is not one, or when the `cryptography` package is not installed."""
    serialization, ed25519 = _crypto(f"public key {path}")
    try:
        with open(path, "rb") as f:
            pem = f.read(_MAX_SIGNATURE_BYTES * 16)
    except OSError as exc:
        raise BundleError(f"public key {path}: cannot read ({exc.strerror})") from None
    if b"PRIVATE KEY" in pem:  # said without echoing it: a private key belongs with `infc sign` only
        raise BundleError(f"public key {path}: holds a private key; give the public key (`infc keygen` writes "
                          "it as PREFIX.pub)")
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError):  # their messages are not shown: nothing of the file's content is
        key = None
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise BundleError(f"public key {path}: not an Ed25519 public key in PEM form (`infc keygen` writes one)")
    return key


def fingerprint(key: Any) -> str:
    """`sha256:` and the first 16 hex digits of the sha256 of an Ed25519 public key's 32 raw bytes."""
    serialization, _ = _crypto("a key fingerprint")
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "sha256:" + hashlib.sha256(raw).hexdigest()[:16]


def _crypto(needed_by: str) -> tuple[Any, Any]:
    """`cryptography`'s serialization and ed25519 modules, imported only when a signature is checked."""
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError:
        raise BundleError(f"{needed_by}: checking a signature needs the Python package cryptography, which is "
                          "not installed (pip install cryptography; a bundle's requirements.txt pins it)") from None
    return serialization, ed25519


def _check_signature(base: Path, root: str | Path, data: bytes, key: Any, public_key: str | Path) -> str:
    """The key's fingerprint when `manifest.sig` is a good signature of `data` by `key`, else BundleError."""
    where = f"{root}/{SIGNATURE}"
    path = base / SIGNATURE
    if not path.exists() and not path.is_symlink():
        raise BundleError(f"{where}: missing: the bundle is not signed, and the public key {public_key} requires a "
                          f"signature (infc sign BUNDLE --key KEY)")
    text = _read_small(base, root, SIGNATURE, _MAX_SIGNATURE_BYTES)
    try:
        signature = base64.b64decode(text.strip(), validate=True) if len(text) <= _MAX_SIGNATURE_BYTES else b""
    except (binascii.Error, ValueError):
        signature = b""
    if len(signature) != 64:
        raise BundleError(f"{where}: not an Ed25519 signature (expected 64 bytes in base64)")
    try:
        key.verify(signature, data)
    except Exception:  # cryptography's InvalidSignature
        raise BundleError(f"{where}: bad signature: {MANIFEST} is not signed by the key in {public_key} (signed "
                          "by another key, or changed since it was signed)") from None
    return fingerprint(key)


def _read_manifest_bytes(base: Path, root: str | Path) -> bytes:
    where = f"{root}/{MANIFEST}"
    path = base / MANIFEST
    if not path.exists() and not path.is_symlink():
        raise BundleError(f"{root}: no {MANIFEST} (is this an infc bundle?)")
    data = _read_small(base, root, MANIFEST, MAX_MANIFEST_BYTES)
    if len(data) > MAX_MANIFEST_BYTES:
        raise BundleError(f"{where}: larger than {MAX_MANIFEST_BYTES >> 20} MiB")
    return data


def _read_small(base: Path, root: str | Path, name: str, limit: int) -> bytes:
    """At most `limit` + 1 bytes of the bundle's regular file `name` (kept inside the bundle); BundleError else."""
    where = f"{root}/{name}"
    _inside(base, root, name)
    try:
        with open(base / name, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise BundleError(f"{where}: not a regular file")
            return f.read(limit + 1)
    except OSError as exc:
        raise BundleError(f"{where}: cannot read ({exc.strerror})") from None


def _parse_manifest(data: bytes, root: str | Path) -> dict[str, Any]:
    where = f"{root}/{MANIFEST}"
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
        if path in (MANIFEST, SIGNATURE):
            raise BundleError(f"{where}: {key}: lists {path} (the manifest and its signature are not listed)")
        if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
            raise BundleError(f"{where}: {key}: {path!r}: expected a sha256 hex digest")
    return value


def _wheel_sizes(value: Any, files: dict[str, str], where: str) -> dict[str, int]:
    """The manifest's `wheels`: `wheels/FILE` (among `files`) -> size in bytes."""
    if not isinstance(value, dict):
        raise BundleError(f"{where}: wheels: expected an object of path -> size")
    for path, size in value.items():
        if not isinstance(path, str) or not path.startswith(_WHEELS) or path not in files:
            raise BundleError(f"{where}: wheels: {path!r} is not a wheel among the manifest's files")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise BundleError(f"{where}: wheels: {path!r}: expected a size in bytes")
    return value


def _check_size(base: Path, root: str | Path, rel: str, expected: int) -> int:
    """A wheel's size, when it is a regular file inside the bundle of the listed size (not hashed: 4a.)."""
    path = base / rel
    if not path.exists() and not path.is_symlink():
        raise BundleError(f"{root}/{rel}: missing (listed in {MANIFEST})")
    real = _inside(base, root, rel)
    try:
        info = os.stat(real)
    except OSError as exc:
        raise BundleError(f"{root}/{rel}: cannot read ({exc.strerror})") from None
    if not stat.S_ISREG(info.st_mode):
        raise BundleError(f"{root}/{rel}: not a regular file")
    if info.st_size != expected:
        raise BundleError(f"{root}/{rel}: changed (size {info.st_size} bytes, the manifest lists {expected})")
    return expected


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
        if here == base and VENV in dirs and not (here / VENV).is_symlink():
            dirs.remove(VENV)  # install.sh's environment (4b.): not walked
        # a symlinked folder is not walked into: it is an entry of its own, never a listed file
        for name in [*names, *(d for d in dirs if (here / d).is_symlink())]:
            rel = (here / name).relative_to(base).as_posix()
            if rel in (MANIFEST, SIGNATURE) or rel in listed:
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
