"""A built bundle signed with `infc sign` serves with `--public-key` (or INFC_PUBLIC_KEY) and is refused unsigned,
changed or signed by another key, before it listens; no key is ever shown. Its manifest records its provenance."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from examples import DIGITS_DIR, DIGITS_SPEC
from servers import Server, free_port

from infc import __version__
from infc.build import BuildOutcome
from infc_runtime.verify import content_hash


def run(*command: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)


def infc(*args: str) -> subprocess.CompletedProcess[str]:
    return run(sys.executable, "-m", "infc", *args)


@pytest.fixture
def bundle(digits_bundle: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(digits_bundle, tmp_path / "bundle", symlinks=True))


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    done = infc("keygen", "--out", str(tmp_path / "signer"))
    assert done.returncode == 0, done.stderr
    private, public = tmp_path / "signer.key", tmp_path / "signer.pub"
    assert f"wrote {private}" in done.stdout and str(public) in done.stdout
    assert not [t for t in secrets(private, public) if t in done.stdout + done.stderr]
    return private, public


def secrets(*pems: Path) -> list[str]:
    """The base64 lines of PEM files: what no output may hold."""
    return [line for pem in pems for line in pem.read_text().splitlines() if not line.startswith("-----")]


def sign(bundle: Path, private: Path) -> subprocess.CompletedProcess[str]:
    done = infc("sign", str(bundle), "--key", str(private))
    assert done.returncode == 0, done.stderr
    assert f"wrote {bundle / 'manifest.sig'}" in done.stdout
    return done


def test_a_signed_bundle_serves_with_its_public_key_and_no_key_is_logged(bundle: Path, keys: tuple[Path, Path],
                                                                        tmp_path: Path) -> None:
    private, public = keys
    signed = sign(bundle, private)
    server = Server([sys.executable, str(bundle / "serve.py"), "--host", "127.0.0.1", "--port", "{port}",
                     "--public-key", str(public)], tmp_path / "server.log")
    try:
        server.wait_ready(timeout=120)
    finally:
        assert server.stop() == 0
    log = server.log.read_text()
    assert "manifest.json signed by key sha256:" in log
    assert not [t for t in secrets(private, public) if t in log + signed.stdout + signed.stderr]


def test_infc_serve_takes_the_public_key_from_the_environment(bundle: Path, keys: tuple[Path, Path],
                                                              tmp_path: Path) -> None:
    private, public = keys
    sign(bundle, private)
    env = {**os.environ, "INFC_PUBLIC_KEY": str(public)}
    server = Server([sys.executable, "-m", "infc", "serve", str(bundle), "--port", "{port}"], tmp_path / "server.log",
                    env=env)
    try:
        server.wait_ready(timeout=120)
    finally:
        assert server.stop() == 0
    log = server.log.read_text()
    assert "signed by key sha256:" in log and not [t for t in secrets(private, public) if t in log]


def unsigned(bundle: Path, private: Path, public: Path, tmp_path: Path) -> tuple[Path, str]:
    return public, "manifest.sig: missing: the bundle is not signed"


def manifest_rewritten_after_signing(bundle: Path, private: Path, public: Path, tmp_path: Path) -> tuple[Path, str]:
    sign(bundle, private)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["serving"]["max_batch_size"] = 100_000
    manifest["content_hash"] = content_hash(manifest)  # a consistent forgery: only the signature stops it
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    return public, "manifest.sig: bad signature: manifest.json is not signed by the key in"


def signed_by_another_key(bundle: Path, private: Path, public: Path, tmp_path: Path) -> tuple[Path, str]:
    sign(bundle, private)
    assert infc("keygen", "--out", str(tmp_path / "other")).returncode == 0
    return tmp_path / "other.pub", "manifest.sig: bad signature"


def private_key_given_as_public(bundle: Path, private: Path, public: Path, tmp_path: Path) -> tuple[Path, str]:
    sign(bundle, private)
    return private, f"public key {private}: holds a private key"


REFUSALS = [unsigned, manifest_rewritten_after_signing, signed_by_another_key, private_key_given_as_public]


@pytest.mark.parametrize("case", REFUSALS, ids=lambda c: c.__name__)
def test_a_bundle_without_a_good_signature_is_refused_before_listening(
        bundle: Path, keys: tuple[Path, Path], tmp_path: Path,
        case: Callable[[Path, Path, Path, Path], tuple[Path, str]]) -> None:
    private, public = keys
    key, expected = case(bundle, private, public, tmp_path)
    port = str(free_port())
    for command in ([str(bundle / "serve.py"), "--port", port, "--public-key", str(key)],
                    ["-m", "infc_runtime", "serve", str(bundle), "--port", port, "--public-key", str(key)]):
        done = run(sys.executable, *command)
        assert done.returncode == 2, done.stderr
        assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1, done.stderr
        assert expected in done.stderr and "Traceback" not in done.stderr
        assert "Uvicorn running" not in done.stdout + done.stderr
        assert not [t for t in secrets(private, public) if t in done.stdout + done.stderr]


def test_the_environment_key_is_required_too_and_excludes_no_verify(bundle: Path, keys: tuple[Path, Path]) -> None:
    env = {**os.environ, "INFC_PUBLIC_KEY": str(keys[1])}
    done = run(sys.executable, str(bundle / "serve.py"), "--port", str(free_port()), env=env)
    assert done.returncode == 2 and "manifest.sig: missing" in done.stderr, done.stderr
    done = run(sys.executable, str(bundle / "serve.py"), "--port", str(free_port()), "--no-verify", env=env)
    assert done.returncode == 2 and "--no-verify cannot be used with a public key" in done.stderr, done.stderr


def test_infc_sign_refuses_a_bundle_that_does_not_verify(bundle: Path, keys: tuple[Path, Path]) -> None:
    with (bundle / "kernels" / "pre.py").open("a") as f:
        f.write("\n# changed after the build\n")
    done = infc("sign", str(bundle), "--key", str(keys[0]))
    assert done.returncode == 2, done.stderr
    assert f"cannot sign {bundle}: it does not verify: " in done.stderr and "kernels/pre.py: changed" in done.stderr
    assert "Traceback" not in done.stderr and not (bundle / "manifest.sig").exists()


def test_infc_keygen_and_sign_usage_errors_exit_2(bundle: Path, keys: tuple[Path, Path]) -> None:
    again = infc("keygen", "--out", str(keys[0].with_suffix("")))
    assert again.returncode == 2 and "already exists" in again.stderr
    wrong = infc("sign", str(bundle), "--key", str(keys[1]))
    assert wrong.returncode == 2 and "not an Ed25519 private key" in wrong.stderr
    assert not [t for t in secrets(*keys) if t in again.stderr + wrong.stderr]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_manifest_records_the_bundles_provenance(digits_build: BuildOutcome, digits_bundle: Path) -> None:
    manifest = json.loads((digits_bundle / "manifest.json").read_text())
    provenance = manifest["provenance"]
    assert provenance["spec_sha256"] == sha256(DIGITS_SPEC)
    assert provenance["model_sha256"] == sha256(DIGITS_DIR / "digits.onnx")
    assert provenance["lock_sha256"] is None  # built with lock="ignore"
    assert provenance["infc_version"] == __version__
    assert provenance["build_host"] == {"system": platform.system(), "machine": platform.machine(),
                                        "isa": digits_build.plan.host_isa}
    assert manifest["measurements"]["host"]["platform"] == platform.platform()
