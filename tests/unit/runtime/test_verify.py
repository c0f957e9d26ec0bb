"""Bundle verification: every kind of tampering is refused with the file named; caches are removed, not trusted."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from runtime_bundle import seal, with_runtime, write_bundle

from infc.bundle import content_hash as compiler_content_hash
from infc_runtime import verify
from infc_runtime.serve import load_bundle
from infc_runtime.verify import BundleError, content_hash, verify_bundle


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    """The toy bundle with a copy of the runtime in it, as a built bundle has, sealed."""
    root = with_runtime(write_bundle(tmp_path / "bundle"))
    return seal(root)


def edit_manifest(root: Path, change: Callable[[dict[str, Any]], None], *, rehash: bool = True) -> None:
    """Change the manifest as someone rewriting it would: with a matching content_hash unless `rehash=False`."""
    manifest = json.loads((root / "manifest.json").read_text())
    change(manifest)
    if rehash:
        manifest["content_hash"] = content_hash(manifest)
    (root / "manifest.json").write_text(json.dumps(manifest))


def refused(root: Path) -> str:
    with pytest.raises(BundleError) as err:
        verify_bundle(root)
    message = str(err.value)
    assert "\n" not in message
    return message


def test_a_sealed_bundle_verifies(bundle: Path) -> None:
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert content_hash(manifest) == compiler_content_hash(manifest) == manifest["content_hash"]
    verified = verify_bundle(bundle)
    assert verified.content_hash == manifest["content_hash"] and verified.removed == ()
    assert verified.files == len(manifest["files"]) and verified.bytes > 0


def test_a_changed_model_byte_is_refused(bundle: Path) -> None:
    model = bundle / "model.onnx"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 1
    model.write_bytes(bytes(data))
    assert refused(bundle).startswith(f"{bundle}/model.onnx: changed (sha256 ")


@pytest.mark.parametrize("path", ["kernels/pre.py", "infc_runtime/app.py", "infc_runtime/verify.py"])
def test_an_edited_source_is_refused(bundle: Path, path: str) -> None:
    with (bundle / path).open("a") as f:
        f.write('\nopen("PWNED", "w").write("x")\n')
    assert f"{bundle}/{path}: changed" in refused(bundle)


def test_a_changed_line_in_the_runtime_is_refused(bundle: Path) -> None:
    app = bundle / "infc_runtime" / "app.py"
    app.write_text(app.read_text().replace("SERVER_NAME = ", "SERVER_NAME = 'x' or ", 1))
    assert f"{bundle}/infc_runtime/app.py: changed" in refused(bundle)


def test_a_missing_file_is_refused(bundle: Path) -> None:
    (bundle / "kernels" / "post.py").unlink()
    assert refused(bundle) == f"{bundle}/kernels/post.py: missing (listed in manifest.json)"


@pytest.mark.parametrize("extra", ["notes.txt", "kernels/evil.py", "infc_runtime/sitecustomize.py", ".hidden"])
def test_an_extra_file_is_refused(bundle: Path, extra: str) -> None:
    (bundle / extra).write_text("x = 1\n")
    assert refused(bundle) == f"{bundle}/{extra}: extra file (not in manifest.json)"


def test_python_bytecode_is_removed_not_trusted(bundle: Path) -> None:
    caches = [bundle / "infc_runtime" / "__pycache__" / "app.cpython-311.pyc",
              bundle / "kernels" / "__pycache__" / "pre.cpython-311.pyc",
              bundle / "kernels" / "__pycache__" / "pre.cpython-311.pyc.140000",  # a write cut short
              bundle / "__pycache__" / "serve.cpython-311.pyc"]
    for pyc in caches:
        pyc.parent.mkdir(exist_ok=True)
        pyc.write_bytes(b"forged bytecode")
    verified = verify_bundle(bundle)
    assert sorted(verified.removed) == sorted(p.relative_to(bundle).as_posix() for p in caches)
    assert not any(p.exists() for p in caches)
    assert verify_bundle(bundle).removed == ()


def test_numba_cache_files_are_kept_only_when_listed_and_matching(bundle: Path) -> None:
    cache = bundle / "kernels" / "__pycache__"
    cache.mkdir()
    (cache / "pre.scale-8.py311.nbi").write_bytes(b"index")
    (cache / "pre.scale-8.py311.1.nbc").write_bytes(b"code")
    (cache / "post.run-3.py311.nbi").write_bytes(b"index")
    seal(bundle)  # the three are shipped (listed in measurements.files)
    (cache / "pre.scale-8.py311.2.nbc").write_bytes(b"compiled here since")  # unlisted
    (cache / "pre.scale-8.py311.nbi").write_bytes(b"index, rewritten")  # listed, changed
    (cache / "post.run-3.py311.nbi").unlink()  # listed, missing: the kernels compile
    verified = verify_bundle(bundle)
    assert verified.mismatched == ("kernels/__pycache__/pre.scale-8.py311.nbi",)
    assert set(verified.removed) == {"kernels/__pycache__/pre.scale-8.py311.nbi",
                                     "kernels/__pycache__/pre.scale-8.py311.2.nbc"}
    assert sorted(p.name for p in cache.iterdir()) == ["pre.scale-8.py311.1.nbc"]


def test_the_ops_librarys_numba_cache_is_kept_when_listed(bundle: Path) -> None:
    cache = bundle / "infc_runtime" / "ops" / "__pycache__"
    cache.mkdir(parents=True)
    (cache / "rowwise._softmax_rows-22.py311.nbi").write_bytes(b"index")
    (cache / "rowwise._softmax_rows-22.py311.1.nbc").write_bytes(b"code")
    seal(bundle)  # shipped, as the kernels' own cache
    (cache / "rowwise._topk_rows-60.py311.nbi").write_bytes(b"compiled here since")  # unlisted
    verified = verify_bundle(bundle)
    assert verified.removed == ("infc_runtime/ops/__pycache__/rowwise._topk_rows-60.py311.nbi",)
    assert sorted(p.name for p in cache.iterdir()) == ["rowwise._softmax_rows-22.py311.1.nbc",
                                                       "rowwise._softmax_rows-22.py311.nbi"]


def test_a_cache_that_cannot_be_removed_is_refused(bundle: Path) -> None:
    cache = bundle / "kernels" / "__pycache__"
    cache.mkdir()
    (cache / "pre.run-3.py311.nbi").write_bytes(b"pickle")
    cache.chmod(0o555)
    try:
        if os.access(cache, os.W_OK):
            pytest.skip("running as a user who can write a read-only folder")
        assert "kernels/__pycache__/pre.run-3.py311.nbi: an untrusted cache file that cannot be removed" in \
            refused(bundle)
    finally:
        cache.chmod(0o755)


@pytest.mark.parametrize(("key", "value", "message"), [
    ("kernels.pre", "/tmp/evil.py", "kernels.pre: '/tmp/evil.py' is outside the bundle (absolute path)"),
    ("kernels.post", "../evil.py", "kernels.post: '../evil.py' is outside the bundle (..)"),
    ("model.path", "kernels/../../model.onnx", "model.path: 'kernels/../../model.onnx' is outside the bundle (..)"),
    ("model.path", "./model.onnx", "model.path: './model.onnx' is not a plain relative path"),
    ("model.path", "other.onnx", "model.path: 'other.onnx' is not among the manifest's files (not verified)"),
    ("files", {"/etc/passwd": "0" * 64}, "files: '/etc/passwd' is outside the bundle (absolute path)"),
    ("files", {"../outside.py": "0" * 64}, "files: '../outside.py' is outside the bundle (..)"),
    ("measurements.files", {"kernels/pre.py": "0" * 64},
     "measurements.files: 'kernels/pre.py' is not a measured file (report.md or Numba's cache "
     "kernels/__pycache__/*.nbi|*.nbc, infc_runtime/ops/__pycache__/*.nbi|*.nbc)"),
    ("measurements.files", {"infc_runtime/ops/rowwise.py": "0" * 64},
     "measurements.files: 'infc_runtime/ops/rowwise.py' is not a measured file (report.md or Numba's cache "
     "kernels/__pycache__/*.nbi|*.nbc, infc_runtime/ops/__pycache__/*.nbi|*.nbc)"),
])
def test_a_manifest_path_outside_the_bundle_is_refused(bundle: Path, key: str, value: Any, message: str) -> None:
    def change(manifest: dict[str, Any]) -> None:
        section, _, name = key.rpartition(".")
        target = manifest.setdefault(section, {}) if section else manifest
        if isinstance(value, dict):
            target[name] = {**target.get(name, {}), **value}
        else:
            target[name] = value

    edit_manifest(bundle, change)
    assert refused(bundle).endswith(message), refused(bundle)
    assert refused(bundle).startswith(f"{bundle}/manifest.json: ")


def test_a_symlink_out_of_the_bundle_is_refused(bundle: Path, tmp_path: Path) -> None:
    outside = tmp_path / "post.py"
    shutil.copyfile(bundle / "kernels" / "post.py", outside)  # same bytes: the hash alone would pass
    (bundle / "kernels" / "post.py").unlink()
    (bundle / "kernels" / "post.py").symlink_to(outside)
    assert refused(bundle) == f"{bundle}/kernels/post.py: outside the bundle (a symlink to {outside})"


def test_an_extra_symlink_is_refused(bundle: Path, tmp_path: Path) -> None:
    (bundle / "kernels" / "assets").symlink_to(tmp_path)
    assert refused(bundle) == f"{bundle}/kernels/assets: extra file (not in manifest.json)"


def test_a_manifest_that_is_too_big_or_not_json_is_refused(bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    manifest = bundle / "manifest.json"
    monkeypatch.setattr(verify, "MAX_MANIFEST_BYTES", manifest.stat().st_size - 1)
    assert refused(bundle) == f"{bundle}/manifest.json: larger than 0 MiB"
    monkeypatch.undo()
    for text, message in [("{", "invalid JSON (Expecting"), ("[1, 2]", "invalid JSON (expected an object)"),
                          ("[" * 100_000 + "]" * 100_000, "invalid JSON (nested too deeply)"),
                          ("{\"a\": \"\xff\"}", "invalid JSON (not UTF-8)")]:
        manifest.write_bytes(text.encode("latin-1"))
        assert refused(bundle).startswith(f"{bundle}/manifest.json: {message}"), text[:10]


def test_a_manifest_edited_without_its_content_hash_is_refused(bundle: Path) -> None:
    edit_manifest(bundle, lambda m: m["serving"].update(max_batch_size=10_000), rehash=False)
    assert refused(bundle) == f"{bundle}/manifest.json: content_hash does not match the manifest (edited after " \
                              "the build?)"


def test_a_manifest_without_hashes_is_refused(bundle: Path) -> None:
    edit_manifest(bundle, lambda m: m.pop("files"))
    assert refused(bundle) == f"{bundle}/manifest.json: files: expected an object of path -> sha256"


def test_load_bundle_verifies_before_importing_a_kernel(bundle: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with (bundle / "kernels" / "pre.py").open("a") as f:
        f.write('\nwith open("PWNED", "w") as pwned:\n    pwned.write("x")\n')
    with pytest.raises(BundleError, match="kernels/pre.py: changed"):
        load_bundle(bundle)
    assert not (tmp_path / "PWNED").exists()
    load_bundle(bundle, verify=False)  # the control: without the check, the appended line runs
    assert (tmp_path / "PWNED").exists()


@pytest.fixture
def with_wheel(bundle: Path) -> Path:
    """The toy bundle with one wheel in wheels/, listed (sha256 among `files`, size among `wheels`)."""
    (bundle / "wheels").mkdir()
    (bundle / "wheels" / "toy-1.0-py3-none-any.whl").write_bytes(b"not really a zip, never imported" * 100)
    seal(bundle)
    edit_manifest(bundle, lambda m: m.update(wheels={"wheels/toy-1.0-py3-none-any.whl": 3200}))
    return bundle


def test_a_wheel_is_checked_for_its_size_when_serving_and_hashed_in_full(with_wheel: Path) -> None:
    wheel = with_wheel / "wheels" / "toy-1.0-py3-none-any.whl"
    assert verify_bundle(with_wheel).bytes == verify_bundle(with_wheel, full=True).bytes
    wheel.write_bytes(wheel.read_bytes().replace(b"never", b"NEVER"))  # same size
    assert verify_bundle(with_wheel).content_hash  # not hashed at serve time (the server never imports it)
    with pytest.raises(BundleError, match=r"toy-1.0-py3-none-any.whl: changed \(sha256"):
        verify_bundle(with_wheel, full=True)
    wheel.write_bytes(wheel.read_bytes()[:-1])
    assert refused(with_wheel) == f"{with_wheel}/wheels/toy-1.0-py3-none-any.whl: changed (size 3199 bytes, the " \
                                  "manifest lists 3200)"
    wheel.unlink()
    assert refused(with_wheel) == f"{with_wheel}/wheels/toy-1.0-py3-none-any.whl: missing (listed in manifest.json)"


@pytest.mark.parametrize("wheels, message", [
    ({"model.onnx": 10}, "'model.onnx' is not a wheel among the manifest's files"),
    ({"wheels/other.whl": 10}, "'wheels/other.whl' is not a wheel among the manifest's files"),
    ({"wheels/toy-1.0-py3-none-any.whl": -1}, "expected a size in bytes"),
    ([], "wheels: expected an object"),
])
def test_a_bad_wheels_listing_is_refused(with_wheel: Path, wheels: Any, message: str) -> None:
    edit_manifest(with_wheel, lambda m: m.update(wheels=wheels))
    assert message in refused(with_wheel)


def test_the_bundles_venv_is_allowed_and_only_it(bundle: Path, tmp_path: Path) -> None:
    venv = bundle / ".venv" / "lib" / "site-packages"
    venv.mkdir(parents=True)
    (venv / "anything.py").write_text("x = 1\n")
    assert verify_bundle(bundle).removed == ()  # install.sh's environment: not walked
    (bundle / "kernels" / ".venv").mkdir()
    (bundle / "kernels" / ".venv" / "x.py").write_text("")
    assert refused(bundle) == f"{bundle}/kernels/.venv/x.py: extra file (not in manifest.json)"
    shutil.rmtree(bundle / "kernels" / ".venv")
    shutil.rmtree(bundle / ".venv")
    (bundle / ".venv").symlink_to(tmp_path)
    assert refused(bundle) == f"{bundle}/.venv: extra file (not in manifest.json)"
    (bundle / ".venv").unlink()
    (bundle / ".venv").write_text("")
    assert refused(bundle) == f"{bundle}/.venv: extra file (not in manifest.json)"
