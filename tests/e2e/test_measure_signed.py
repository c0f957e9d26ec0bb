"""`infc measure BUNDLE --public-key PUB` (and `python -m infc_runtime measure`): a signed bundle is measured with
its signature required; an unsigned or wrongly signed one is refused before anything of it is read."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

QUICK = ("--min-samples", "5", "--min-seconds", "0", "--max-seconds", "1")
NO_KEY = {k: v for k, v in os.environ.items() if k != "INFC_PUBLIC_KEY"}


def run(*command: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *command], capture_output=True, text=True, timeout=300,
                          env=NO_KEY if env is None else env)


@pytest.fixture
def bundle(digits_bundle: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(digits_bundle, tmp_path / "bundle", symlinks=True))


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    for prefix in ("signer", "other"):
        done = run("-m", "infc", "keygen", "--out", str(tmp_path / prefix))
        assert done.returncode == 0, done.stderr
    return tmp_path / "signer.key", tmp_path / "signer.pub"


def test_an_unsigned_bundle_is_refused_and_a_signed_one_measured(bundle: Path, keys: tuple[Path, Path],
                                                                 tmp_path: Path) -> None:
    private, public = keys
    refused = run("-m", "infc", "measure", str(bundle), "--public-key", str(public), *QUICK)
    assert (refused.returncode, refused.stdout) == (2, ""), refused.stderr
    assert refused.stderr.startswith("error: ") and refused.stderr.count("\n") == 1, refused.stderr
    assert "manifest.sig: missing: the bundle is not signed" in refused.stderr
    assert run("-m", "infc", "sign", str(bundle), "--key", str(private)).returncode == 0
    done = run("-m", "infc", "measure", str(bundle), "--public-key", str(public), *QUICK)
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["format"] == 1 and doc["samples"] >= 5 and doc["providers"] == ["CPUExecutionProvider"]
    assert doc["cpu_fallback"] == []
    other = run("-m", "infc_runtime", "measure", str(bundle), *QUICK,
                env={**NO_KEY, "INFC_PUBLIC_KEY": str(tmp_path / "other.pub")})
    assert other.returncode == 2 and "manifest.sig: bad signature" in other.stderr, other.stderr
    both = run("-m", "infc_runtime", "measure", str(bundle), "--public-key", str(public), "--no-verify", *QUICK)
    assert both.returncode == 2 and "--no-verify cannot be used with a public key" in both.stderr
    key_text = [line for line in private.read_text().splitlines() if not line.startswith("-----")]
    assert not [t for t in key_text if t in refused.stderr + done.stderr + done.stdout + other.stderr]
