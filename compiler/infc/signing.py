"""Signing bundles: `infc keygen --out PREFIX` and `infc sign BUNDLE --key KEY`.

A signature is Ed25519 (the `cryptography` package) over the exact bytes of
the bundle's `manifest.json`, written beside it as `manifest.sig` (base64, one
line). The manifest holds the sha256 of every other file and the content hash
over itself, so one signature vouches for the whole bundle; the server checks
it before it parses the manifest (`serve --public-key PUB` or INFC_PUBLIC_KEY:
`infc_runtime.verify`). Only a bundle that verifies is signed, and only one
whose own verifier accepts `manifest.sig` (schema 1.2 or later).

Keys are PEM files: PKCS#8 private keys (unencrypted, written 0600) and
SubjectPublicKeyInfo public keys. No message ever shows a key's bytes: errors
name the file, and a key is shown only by its fingerprint (`verify.fingerprint`).
"""

from __future__ import annotations

import base64
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infc_runtime.abi import SIGNED_SINCE
from infc_runtime.verify import MANIFEST, SIGNATURE, BundleError, fingerprint, schema_version, verify_bundle

from .errors import InfcError
from .lock import write_atomic

__all__ = ["Keys", "Signed", "SigningError", "keygen", "sign_bundle"]


class SigningError(InfcError):
    """A key or bundle cannot be used for signing (exit 2); the message names the file, never a key's bytes."""

    exit_code = 2


@dataclass(frozen=True)
class Keys:
    """What `keygen` wrote."""

    private: Path
    public: Path
    fingerprint: str


@dataclass(frozen=True)
class Signed:
    """What `sign_bundle` wrote: the signature file and the fingerprint of the key that verifies it."""

    signature: Path
    fingerprint: str
    content_hash: str


def keygen(prefix: Path) -> Keys:
    """Write a new Ed25519 key pair: `PREFIX.key` (private, PEM PKCS#8, mode 0600) and `PREFIX.pub` (public,
    PEM); neither may exist already (a key is never overwritten)."""
    serialization, ed25519 = _crypto()
    private, public = Path(f"{prefix}.key"), Path(f"{prefix}.pub")
    for path in (private, public):
        if path.exists() or path.is_symlink():
            raise SigningError(f"{path}: already exists (keys are never overwritten: choose another --out)")
    if not private.parent.is_dir():
        raise SigningError(f"{private.parent}: no such folder (for --out {prefix})")
    key = ed25519.Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    pub = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    try:
        # O_EXCL: never through a file or link planted since the check; 0600 from the start, whatever the umask
        fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o600)
            f.write(pem)
        fd = os.open(public, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        with os.fdopen(fd, "wb") as f:
            f.write(pub)
    except OSError as exc:
        raise SigningError(f"{exc.filename or prefix}: cannot write the key ({exc.strerror})") from None
    return Keys(private, public, fingerprint(key.public_key()))


def sign_bundle(bundle: Path, key_path: Path) -> Signed:
    """Verify `bundle`, sign its manifest.json's bytes with the private key in `key_path`, write manifest.sig
    (replacing an older one), then verify again with the matching public key (the manifest did not change)."""
    serialization, ed25519 = _crypto()
    key = _private_key(key_path, serialization, ed25519)
    try:
        verified = verify_bundle(bundle)  # an unsigned check: the files match the manifest
    except BundleError as exc:
        raise SigningError(f"cannot sign {bundle}: it does not verify: {exc}") from None
    data = (bundle / MANIFEST).read_bytes()
    _check_schema(bundle, data)
    signature = bundle / SIGNATURE
    write_atomic(signature, base64.b64encode(key.sign(data)) + b"\n")
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    with tempfile.TemporaryDirectory(prefix="infc-sign-") as tmp:
        pub_path = Path(tmp) / "key.pub"
        pub_path.write_bytes(public)
        try:
            checked = verify_bundle(bundle, public_key=pub_path)
        except BundleError as exc:  # the manifest changed while it was being signed
            signature.unlink(missing_ok=True)
            raise SigningError(f"cannot sign {bundle}: it changed while being signed: {exc}") from None
    return Signed(signature, checked.signed_by or fingerprint(key.public_key()), verified.content_hash)


def _crypto() -> tuple[Any, Any]:
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError:
        raise SigningError("signing needs the Python package cryptography (pip install cryptography)") from None
    return serialization, ed25519


def _private_key(path: Path, serialization: Any, ed25519: Any) -> Any:
    """The Ed25519 private key in the PEM file `path`; SigningError naming the file (never its content)."""
    try:
        pem = path.read_bytes()
    except OSError as exc:
        raise SigningError(f"--key {path}: cannot read ({exc.strerror})") from None
    if b"ENCRYPTED PRIVATE KEY" in pem:
        raise SigningError(f"--key {path}: an encrypted key; infc signs with an unencrypted PEM key "
                           "(`infc keygen` writes one, mode 0600)")
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError):  # their messages are not shown: nothing of the file's content is
        key = None
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise SigningError(f"--key {path}: not an Ed25519 private key in PEM form (`infc keygen` writes one)")
    return key


def _check_schema(bundle: Path, data: bytes) -> None:
    """Refuse a bundle whose own serve.py would refuse manifest.sig as an extra file (built before 1.2)."""
    major, minor = schema_version(json.loads(data)).split(".")  # checked MAJOR.MINOR by verify_bundle
    version = (int(major), int(minor))
    if version < SIGNED_SINCE:
        shown = ".".join(map(str, version))
        raise SigningError(f"cannot sign {bundle}: its manifest is schema {shown}, whose verifier does not know "
                           f"{SIGNATURE} (signed bundles are {'.'.join(map(str, SIGNED_SINCE))} or later: rebuild "
                           "it with this infc)")
