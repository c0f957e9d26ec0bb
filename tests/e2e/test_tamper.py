"""A built bundle, tampered with in each way, is refused by its own serve.py before it listens, and the
injected code never runs; `--no-verify` serves it anyway, and says so."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import marshal
import shutil
import struct
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from servers import Server, free_port

from infc_runtime.verify import content_hash

PWN = 'with open("PWNED", "w") as _f:\n    _f.write("x")\n'
"""Code that leaves a file named PWNED in its working directory when it runs."""


@pytest.fixture
def bundle(digits_bundle: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(digits_bundle, tmp_path / "bundle", symlinks=True))


@pytest.fixture
def cwd(tmp_path: Path) -> Iterator[Path]:
    folder = tmp_path / "cwd"
    folder.mkdir()
    yield folder


def rewrite_manifest(bundle: Path, change: Callable[[dict[str, Any]], None], *, rehash: bool = True) -> None:
    """Edit the manifest as an attacker would, with a content_hash that matches (unless `rehash=False`)."""
    manifest = json.loads((bundle / "manifest.json").read_text())
    change(manifest)
    if rehash:
        manifest["content_hash"] = content_hash(manifest)
    (bundle / "manifest.json").write_text(json.dumps(manifest))


def append(path: Path, text: str) -> None:
    with path.open("a") as f:
        f.write("\n" + text)


def flip_model_byte(bundle: Path, outside: Path) -> str:
    model = bundle / "model.onnx"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0x01
    model.write_bytes(bytes(data))
    return "model.onnx: changed"


def append_kernel_line(bundle: Path, outside: Path) -> str:
    append(bundle / "kernels" / "pre.py", PWN)
    return "kernels/pre.py: changed"


def edit_runtime_line(bundle: Path, outside: Path) -> str:
    init = bundle / "infc_runtime" / "__init__.py"
    init.write_text(init.read_text().replace('__version__ = "', PWN + '__version__ = "', 1))
    return "infc_runtime/__init__.py: changed"


def absolute_kernel_path(bundle: Path, outside: Path) -> str:
    (outside / "evil.py").write_text(PWN + "def run(tensors):\n    return tensors\n")
    rewrite_manifest(bundle, lambda m: m["kernels"].update(pre=str(outside / "evil.py")))
    return f"kernels.pre: '{outside / 'evil.py'}' is outside the bundle (absolute path)"


def dotdot_kernel_path(bundle: Path, outside: Path) -> str:
    (bundle.parent / "evil.py").write_text(PWN + "def run(tensors):\n    return tensors\n")
    rewrite_manifest(bundle, lambda m: m["kernels"].update(post="../evil.py"))
    return "kernels.post: '../evil.py' is outside the bundle (..)"


def missing_file(bundle: Path, outside: Path) -> str:
    (bundle / "kernels" / "post.py").unlink()
    return "kernels/post.py: missing"


def extra_kernel_file(bundle: Path, outside: Path) -> str:
    (bundle / "kernels" / "evil.py").write_text(PWN)
    return "kernels/evil.py: extra file"


def planted_stdlib_module(bundle: Path, outside: Path) -> str:
    # Python puts the script's folder first on sys.path: this would shadow the hashlib verify.py imports
    (bundle / "hashlib.py").write_text(PWN + "from _hashlib import *\n")
    return "hashlib.py: extra file"


def symlink_out_of_the_bundle(bundle: Path, outside: Path) -> str:
    post = bundle / "kernels" / "post.py"
    shutil.copyfile(post, outside / "post.py")  # the same bytes: its hash alone would pass
    post.unlink()
    post.symlink_to(outside / "post.py")
    return f"kernels/post.py: outside the bundle (a symlink to {outside / 'post.py'})"


def manifest_edited_without_its_hash(bundle: Path, outside: Path) -> str:
    rewrite_manifest(bundle, lambda m: m["serving"].update(max_batch_size=100_000), rehash=False)
    return "manifest.json: content_hash does not match"


def verifier_replaced_and_resealed(bundle: Path, outside: Path) -> str:
    """A forger who rewrites the verifier to pass anything, and re-hashes it into a consistent manifest."""
    verify = bundle / "infc_runtime" / "verify.py"
    append(verify, PWN)
    digest = hashlib.sha256(verify.read_bytes()).hexdigest()
    rewrite_manifest(bundle, lambda m: m["files"].update({"infc_runtime/verify.py": digest}))
    return "infc_runtime/verify.py: changed (it is not the verifier this bundle was built with)"


TAMPERS = [flip_model_byte, append_kernel_line, edit_runtime_line, absolute_kernel_path, dotdot_kernel_path,
           missing_file, extra_kernel_file, planted_stdlib_module, symlink_out_of_the_bundle,
           manifest_edited_without_its_hash, verifier_replaced_and_resealed]


def run(command: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=120)


def pwned(*folders: Path) -> list[Path]:
    return [f / "PWNED" for f in folders if (f / "PWNED").exists()]


@pytest.mark.parametrize("tamper", TAMPERS, ids=lambda t: t.__name__)
def test_serve_py_refuses_a_tampered_bundle_before_listening(bundle: Path, cwd: Path, tmp_path: Path,
                                                             tamper: Callable[[Path, Path], str]) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    expected = tamper(bundle, outside)
    done = run([sys.executable, str(bundle / "serve.py"), "--host", "127.0.0.1", "--port", str(free_port())], cwd)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1, done.stderr
    assert expected in done.stderr
    assert "Uvicorn running" not in done.stdout + done.stderr and "Traceback" not in done.stderr
    assert not pwned(cwd, bundle, outside)


@pytest.mark.parametrize("tamper", [append_kernel_line, absolute_kernel_path, extra_kernel_file],
                         ids=lambda t: t.__name__)
@pytest.mark.parametrize("command", ["serve", "measure"])
def test_the_runtime_command_refuses_a_tampered_bundle(bundle: Path, cwd: Path, tmp_path: Path, command: str,
                                                       tamper: Callable[[Path, Path], str]) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    expected = tamper(bundle, outside)
    done = run([sys.executable, "-m", "infc_runtime", command, str(bundle)], cwd)
    assert (done.returncode, done.stdout) == (2, ""), done.stderr
    assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1 and expected in done.stderr
    assert not pwned(cwd, bundle, outside)


def forge_bytecode(source: Path) -> Path:
    """A .pyc of PWN that Python takes for `source`'s: its header records the source's mtime and size."""
    stat = source.stat()
    code = compile(PWN, str(source), "exec")
    header = importlib.util.MAGIC_NUMBER + struct.pack("<III", 0, int(stat.st_mtime) & 0xFFFFFFFF, stat.st_size)
    pyc = Path(importlib.util.cache_from_source(str(source)))
    pyc.parent.mkdir(exist_ok=True)
    pyc.write_bytes(header + marshal.dumps(code))
    return pyc


def test_forged_bytecode_is_removed_not_run(bundle: Path, cwd: Path) -> None:
    forge_bytecode(bundle / "infc_runtime" / "__init__.py")
    # the control: unverified, Python runs the forged bytecode instead of the verified source
    control = run([sys.executable, "-c", "import sys; sys.path.insert(0, sys.argv[1]); import infc_runtime",
                   str(bundle)], cwd)
    assert control.returncode == 0 and pwned(cwd), control.stderr
    (cwd / "PWNED").unlink()
    pyc = forge_bytecode(bundle / "infc_runtime" / "__init__.py")
    server = Server([sys.executable, str(bundle / "serve.py"), "--host", "127.0.0.1", "--port", "{port}"],
                    cwd / "server.log", cwd=cwd)
    try:
        server.wait_ready(timeout=120)
    finally:
        assert server.stop() == 0
    assert not pwned(cwd, bundle)
    assert not pyc.exists() or pyc.read_bytes()[16:] != marshal.dumps(compile(PWN, str(pyc), "exec"))


def test_no_verify_serves_a_changed_bundle_with_a_warning(bundle: Path, cwd: Path) -> None:
    (bundle / "NOTES.txt").write_text("an extra file")
    server = Server([sys.executable, str(bundle / "serve.py"), "--host", "127.0.0.1", "--port", "{port}",
                     "--no-verify"], cwd / "server.log", cwd=cwd)
    try:
        server.wait_ready(timeout=120)
        metrics = httpx.get(f"http://{server.url}/metrics").text
    finally:
        assert server.stop() == 0
    log = server.log.read_text()
    assert "WARNING" in log and "--no-verify" in log
    assert 'infc_bundle_verified{model="digits",version="1.0.0"} 0.0' in metrics
