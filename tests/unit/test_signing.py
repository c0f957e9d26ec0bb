"""`infc keygen` and `infc sign` (infc.signing), and the verifier's signature check (infc_runtime.verify), on the toy
bundle with real Ed25519 keys."""

from __future__ import annotations

import base64
import json
import os
import stat
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from runtime_bundle import seal, with_runtime, write_bundle

from infc.signing import Keys, SigningError, keygen, sign_bundle
from infc_runtime.serve import load_bundle, main, serve_bundle
from infc_runtime.verify import SIGNATURE, BundleError, content_hash, verify_bundle


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    """The toy bundle with a copy of the runtime, of the schema that may be signed, sealed."""
    root = with_runtime(write_bundle(tmp_path / "bundle"))
    manifest = json.loads((root / "manifest.json").read_text())
    (root / "manifest.json").write_text(json.dumps({**manifest, "schema_version": "1.2"}))
    return seal(root)


@pytest.fixture
def keys(tmp_path: Path) -> Keys:
    return keygen(tmp_path / "signer")


def refused(root: Path, public_key: Path) -> str:
    with pytest.raises(BundleError) as err:
        verify_bundle(root, public_key=public_key)
    message = str(err.value)
    assert "\n" not in message
    return message


def key_texts(keys: Keys) -> list[str]:
    """The base64 bodies of both PEM files: what must never be shown."""
    return ["".join(k.read_text().splitlines()[1:-1]) for k in (keys.private, keys.public)]


def test_keygen_writes_a_private_key_only_its_owner_reads_and_the_public_key(keys: Keys) -> None:
    assert keys.private.name == "signer.key" and keys.public.name == "signer.pub"
    assert stat.S_IMODE(keys.private.stat().st_mode) == 0o600
    private = serialization.load_pem_private_key(keys.private.read_bytes(), password=None)
    public = serialization.load_pem_public_key(keys.public.read_bytes())
    assert isinstance(private, ed25519.Ed25519PrivateKey) and isinstance(public, ed25519.Ed25519PublicKey)
    raw = serialization.Encoding.Raw, serialization.PublicFormat.Raw
    assert private.public_key().public_bytes(*raw) == public.public_bytes(*raw)
    assert keys.fingerprint.startswith("sha256:") and len(keys.fingerprint) == 23


def test_keygen_never_overwrites_a_key(keys: Keys) -> None:
    before = keys.private.read_bytes()
    with pytest.raises(SigningError, match=r"signer\.key: already exists"):
        keygen(keys.private.with_suffix(""))
    assert keys.private.read_bytes() == before


def test_keygen_ignores_a_permissive_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        made = keygen(tmp_path / "open")
    finally:
        os.umask(old)
    assert stat.S_IMODE(made.private.stat().st_mode) == 0o600


def test_a_signed_bundle_verifies_with_its_public_key(bundle: Path, keys: Keys) -> None:
    signed = sign_bundle(bundle, keys.private)
    assert signed.signature == bundle / SIGNATURE and signed.fingerprint == keys.fingerprint
    signature = base64.b64decode(signed.signature.read_bytes().strip(), validate=True)
    public = serialization.load_pem_public_key(keys.public.read_bytes())
    assert isinstance(public, ed25519.Ed25519PublicKey)
    public.verify(signature, (bundle / "manifest.json").read_bytes())  # over the manifest's exact bytes
    verified = verify_bundle(bundle, public_key=keys.public)
    assert verified.signed_by == keys.fingerprint and f"signed by key {keys.fingerprint}" in verified.summary()
    assert verify_bundle(bundle).signed_by is None  # without a key, manifest.sig is allowed, not checked
    load_bundle(bundle, public_key=keys.public)


def test_an_unsigned_bundle_is_refused_with_a_key(bundle: Path, keys: Keys) -> None:
    assert refused(bundle, keys.public) == (f"{bundle}/manifest.sig: missing: the bundle is not signed, and the "
                                            f"public key {keys.public} requires a signature (infc sign BUNDLE "
                                            "--key KEY)")


def test_a_manifest_rewritten_after_signing_is_refused(bundle: Path, keys: Keys) -> None:
    sign_bundle(bundle, keys.private)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["serving"]["max_batch_size"] = 10_000
    manifest["content_hash"] = content_hash(manifest)  # consistent in itself: only the signature stops it
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    verify_bundle(bundle)
    assert refused(bundle, keys.public).startswith(f"{bundle}/manifest.sig: bad signature: manifest.json is not "
                                                   f"signed by the key in {keys.public}")


def test_a_file_changed_after_signing_is_refused(bundle: Path, keys: Keys) -> None:
    sign_bundle(bundle, keys.private)
    with (bundle / "kernels" / "pre.py").open("a") as f:
        f.write("\n# changed\n")
    assert refused(bundle, keys.public).startswith(f"{bundle}/kernels/pre.py: changed")  # the signature held


def test_another_key_is_refused(bundle: Path, keys: Keys, tmp_path: Path) -> None:
    sign_bundle(bundle, keys.private)
    other = keygen(tmp_path / "other")
    assert "manifest.sig: bad signature" in refused(bundle, other.public)


@pytest.mark.parametrize("content", [b"", b"not base64!\n", base64.b64encode(b"x" * 63), b"A" * 5000])
def test_a_malformed_signature_is_refused(bundle: Path, keys: Keys, content: bytes) -> None:
    (bundle / SIGNATURE).write_bytes(content)
    assert refused(bundle, keys.public) == f"{bundle}/manifest.sig: not an Ed25519 signature (expected 64 bytes " \
                                           "in base64)"


def test_a_bad_public_key_is_refused_without_showing_it(bundle: Path, keys: Keys, tmp_path: Path) -> None:
    sign_bundle(bundle, keys.private)
    message = refused(bundle, keys.private)
    assert message.startswith(f"public key {keys.private}: holds a private key")
    garbage = tmp_path / "garbage.pub"
    garbage.write_text("-----BEGIN PUBLIC KEY-----\nc2VjcmV0IGJ5dGVz\n-----END PUBLIC KEY-----\n")
    assert refused(bundle, garbage) == f"public key {garbage}: not an Ed25519 public key in PEM form (`infc " \
                                       "keygen` writes one)"
    assert "cannot read" in refused(bundle, tmp_path / "missing.pub")
    for text in key_texts(keys):
        assert text not in message


def test_the_manifest_may_not_list_its_signature(bundle: Path, keys: Keys) -> None:
    sign_bundle(bundle, keys.private)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["files"][SIGNATURE] = "0" * 64
    manifest["content_hash"] = content_hash(manifest)
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="files: lists manifest.sig"):
        verify_bundle(bundle)


def test_sign_refuses_a_bundle_that_does_not_verify(bundle: Path, keys: Keys) -> None:
    (bundle / "kernels" / "evil.py").write_text("x = 1\n")
    with pytest.raises(SigningError, match=rf"cannot sign {bundle}: it does not verify: .*kernels/evil.py: extra "
                                           "file"):
        sign_bundle(bundle, keys.private)
    assert not (bundle / SIGNATURE).exists()


def test_sign_refuses_a_bundle_whose_verifier_predates_signatures(bundle: Path, keys: Keys) -> None:
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["schema_version"] = "1.1"
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    seal(bundle)
    with pytest.raises(SigningError, match=r"schema 1\.1, whose verifier does not know manifest.sig"):
        sign_bundle(bundle, keys.private)
    assert not (bundle / SIGNATURE).exists()


def test_sign_refuses_a_public_or_missing_key_without_showing_it(bundle: Path, keys: Keys, tmp_path: Path) -> None:
    with pytest.raises(SigningError) as err:
        sign_bundle(bundle, keys.public)
    assert str(err.value) == f"--key {keys.public}: not an Ed25519 private key in PEM form (`infc keygen` writes one)"
    assert all(text not in str(err.value) for text in key_texts(keys))
    with pytest.raises(SigningError, match="cannot read"):
        sign_bundle(bundle, tmp_path / "missing.key")
    assert not (bundle / SIGNATURE).exists()


def test_signing_again_replaces_the_signature(bundle: Path, keys: Keys, tmp_path: Path) -> None:
    sign_bundle(bundle, keys.private)
    other = keygen(tmp_path / "other")
    sign_bundle(bundle, other.private)
    assert verify_bundle(bundle, public_key=other.public).signed_by == other.fingerprint
    assert "bad signature" in refused(bundle, keys.public)
    assert sorted(p.name for p in bundle.iterdir() if p.name.startswith((".", "manifest"))) == [
        "manifest.json", "manifest.sig"]


def test_serve_refuses_a_key_its_serve_py_did_not_check(bundle: Path, keys: Keys, monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    # serve.py looks for `--public-key` itself; an abbreviation argparse accepts must not skip the check
    unchecked = verify_bundle(bundle).summary()
    assert serve_bundle(bundle, ["--public", str(keys.public)], verified=unchecked) == 2
    assert "the bundle's signature was not checked (give the option in full" in capsys.readouterr().err
    monkeypatch.setenv("INFC_PUBLIC_KEY", str(keys.public))
    assert serve_bundle(bundle, [], verified=unchecked) == 2
    assert serve_bundle(bundle, ["--no-verify"]) == 2
    assert "--no-verify cannot be used with a public key" in capsys.readouterr().err


def test_the_runtime_command_checks_the_signature(bundle: Path, keys: Keys, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", str(bundle), "--public-key", str(keys.public)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "manifest.sig: missing: the bundle is not signed" in err


def test_without_cryptography_a_key_is_a_clear_error(bundle: Path, keys: Keys, monkeypatch: pytest.MonkeyPatch) -> None:
    sign_bundle(bundle, keys.private)
    monkeypatch.setitem(sys.modules, "cryptography.hazmat.primitives", None)  # import fails as if not installed
    assert refused(bundle, keys.public) == (f"public key {keys.public}: checking a signature needs the Python "
                                            "package cryptography, which is not installed (pip install "
                                            "cryptography; a bundle's requirements.txt pins it)")
    verify_bundle(bundle)  # without a key, nothing needs it
    with pytest.raises(SigningError, match="signing needs the Python package cryptography"):
        keygen(bundle.parent / "nokey")


def test_bundles_pin_cryptography_for_serve_public_key() -> None:
    from importlib import metadata

    from infc.pins import pinned_requirements

    assert f"\ncryptography=={metadata.version('cryptography')}\n" in pinned_requirements("x86")
