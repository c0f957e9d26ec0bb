"""`infc build --wheelhouse --archive`: the archive unpacks into a bundle that installs with no index (its own
install.sh, into a fresh venv) and serves; a changed, missing or extra file in it is refused before the server
listens; the archive is the same bytes every time it is written."""

from __future__ import annotations

import gzip
import os
import platform
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import httpx
import numpy as np
import pytest
from examples import DIGITS_DIR, digits_copy
from packaging.utils import parse_wheel_filename
from servers import Server

from infc.archive import write_archive
from infc.build import BuildOutcome, build
from infc.bundle import Bundle
from infc_runtime.pipeline import Pipeline


def _offline_env(tmp: Path) -> dict[str, str]:
    """No pip configuration (this machine's find-links and index) and an index that cannot answer: pip can use
    nothing but what install.sh gives it."""
    links = tmp / "no-links"
    links.mkdir(exist_ok=True)
    return {**os.environ, "PIP_CONFIG_FILE": os.devnull, "PIP_INDEX_URL": "http://127.0.0.1:9/simple",
            "PIP_FIND_LINKS": str(links), "PIP_NO_CACHE_DIR": "1", "HOME": str(tmp)}


@pytest.fixture(scope="module")
def unpacked(digits_wheelhouse_build: BuildOutcome, tmp_path_factory: pytest.TempPathFactory) -> Path:
    assert digits_wheelhouse_build.archive is not None
    assert digits_wheelhouse_build.archive.name == "digits-1.0.0-linux_x86_64.tar.gz"
    folder = tmp_path_factory.mktemp("unpacked")
    subprocess.run(["tar", "-xzf", str(digits_wheelhouse_build.archive)], cwd=folder, check=True)
    assert sorted(p.name for p in folder.iterdir()) == ["digits-1.0.0"]
    return folder / "digits-1.0.0"


@pytest.fixture(scope="module")
def installed(unpacked: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The unpacked bundle after `./install.sh` (its default venv, BUNDLE/.venv), with no index."""
    env = {**_offline_env(tmp_path_factory.mktemp("home")), "INFC_INSTALL_NO_COMPILE": "1"}  # 4x faster
    done = subprocess.run(["./install.sh"], cwd=unpacked, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "from " + str(unpacked / "wheels") + " (no network)" in done.stdout
    return unpacked


def test_the_bundle_ships_its_wheels_pinned_by_hash(digits_wheelhouse_build: BuildOutcome) -> None:
    bundle = digits_wheelhouse_build.bundle
    wheels = sorted(p.removeprefix("wheels/") for p in bundle.files if p.startswith("wheels/"))
    pins = [line for line in bundle.files["requirements.txt"].decode().splitlines() if not line.startswith("#")]
    assert len(pins) == len(wheels) and {p.split("==")[0] for p in pins} >= {"onnxruntime", "numpy", "numba"}
    assert all(" --hash=sha256:" in p for p in pins)
    assert {p.split(" ")[0] for p in pins} == {"{}=={}".format(*parse_wheel_filename(w)[:2]) for w in wheels}
    assert _platforms(wheels) == {"any", "x86_64"}, wheels
    manifest = bundle.manifest
    assert manifest.platform is not None and manifest.platform["python"] == f"{sys.version_info[0]}." \
                                                                              f"{sys.version_info[1]}"
    assert manifest.platform["machine"] == "x86_64" and manifest.platform["wheelhouse"] is True
    assert manifest.wheels == {p: len(d) for p, d in bundle.files.items() if p.startswith("wheels/")}


def _platforms(wheels: list[str]) -> set[str]:
    """The machines the wheels' platform tags name ('any' for pure Python); each wheel fits this Python."""
    python = f"cp{sys.version_info[0]}{sys.version_info[1]}"
    out = set()
    for wheel in wheels:
        tags = parse_wheel_filename(wheel)[3]
        assert any(t.interpreter in (python, "py3", "py2.py3") or t.abi == "abi3" for t in tags), wheel
        out |= {next((m for m in ("x86_64", "aarch64") if t.platform.endswith(f"_{m}")), t.platform) for t in tags}
    return out


def test_an_unpacked_archive_installs_offline_and_serves(installed: Path, tmp_path: Path) -> None:
    images = np.load(DIGITS_DIR / "val.npz")["image"][:4]
    python = installed / ".venv" / "bin" / "python"
    server = Server([str(python), str(installed / "serve.py"), "--host", "127.0.0.1", "--port", "{port}"],
                    tmp_path / "server.log", cwd=tmp_path)
    try:
        server.wait_ready()  # the bundle verifies with its .venv inside it
        body = {"inputs": [{"name": "image", "shape": list(images.shape), "datatype": "UINT8",
                            "data": images.ravel().tolist()}]}
        reply = httpx.post(f"http://{server.url}/v2/models/digits/infer", json=body, timeout=30)
    finally:
        assert server.stop() == 0
    assert reply.status_code == 200, reply.text
    outputs = {o["name"]: o for o in reply.json()["outputs"]}
    expected = Pipeline.load(installed).run({"image": images})
    np.testing.assert_allclose(np.array(outputs["scores"]["data"]).reshape(outputs["scores"]["shape"]),
                               expected["scores"], rtol=1e-6)
    assert np.array(outputs["labels"]["data"]).reshape(-1).tolist() == \
        [b.decode() for b in np.asarray(expected["labels"]).reshape(-1)]


def _copy(bundle: Path, tmp: Path) -> Path:
    return Path(shutil.copytree(bundle, tmp / "copy", ignore=shutil.ignore_patterns(".venv")))


def _wheel(bundle: Path) -> Path:
    return min((bundle / "wheels").iterdir(), key=lambda p: p.stat().st_size)


def _append(path: Path, text: str) -> None:
    with path.open("a") as f:
        f.write(text)


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-1])


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


TAMPERS = {
    "changed kernel": (lambda b: _append(b / "kernels" / "pre.py", "\n# changed\n"), "kernels/pre.py: changed"),
    "missing model": (lambda b: (b / "model.onnx").unlink(), "model.onnx: missing"),
    "extra file": (lambda b: (b / "kernels" / "extra.py").write_text("x = 1\n"), "kernels/extra.py: extra file"),
    "truncated wheel": (lambda b: _truncate(_wheel(b)), "changed (size"),
    "missing wheel": (lambda b: _wheel(b).unlink(), ": missing"),
    "a .venv symlink": (lambda b: (b / ".venv").symlink_to(b / "wheels"), ".venv: extra file"),
}


@pytest.mark.parametrize("tamper", sorted(TAMPERS))
def test_a_tampered_unpacked_archive_is_refused_before_listening(unpacked: Path, tmp_path: Path,
                                                                   tamper: str) -> None:
    bundle = _copy(unpacked, tmp_path)
    change, message = TAMPERS[tamper]
    change(bundle)
    done = subprocess.run([sys.executable, str(bundle / "serve.py"), "--host", "127.0.0.1", "--port", "9"],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr and "Uvicorn running" not in done.stderr + done.stdout
    assert str(bundle) in done.stderr


def test_a_changed_wheel_of_the_same_size_is_found_by_the_full_check_and_install_sh(unpacked: Path,
                                                                                     tmp_path: Path) -> None:
    """Serving reads the wheels' sizes only (the server never imports them); install.sh hashes them first."""
    bundle = _copy(unpacked, tmp_path)
    wheel = _wheel(bundle)
    _flip(wheel)
    done = subprocess.run([sys.executable, str(bundle / "serve.py"), "--verify-only"], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2 and f"wheels/{wheel.name}: changed (sha256" in done.stderr
    done = subprocess.run([str(bundle / "install.sh"), str(tmp_path / "venv")], capture_output=True, text=True,
                          timeout=60, env=_offline_env(tmp_path))
    assert done.returncode == 6, done.stdout + done.stderr
    assert f"wheels/{wheel.name}: changed" in done.stderr and "nothing installed" in done.stderr
    assert not (tmp_path / "venv").exists()


def test_install_sh_without_a_python_exits_3(unpacked: Path, tmp_path: Path) -> None:
    done = subprocess.run([str(unpacked / "install.sh"), str(tmp_path / "venv")], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "PYTHON": "python-that-does-not-exist"})
    assert done.returncode == 3 and "'python-that-does-not-exist' not found" in done.stderr
    done = subprocess.run([str(unpacked / "install.sh"), "a", "b"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "usage" in done.stderr


def _other_pythons() -> list[str]:
    """CPython 3 interpreters of another major.minor than this one that run here (on PATH, or pyenv's)."""
    this = f"{sys.version_info[0]}.{sys.version_info[1]}"
    candidates = [shutil.which(f"python3.{minor}") for minor in range(6, 16)]
    candidates += [str(p) for p in sorted(Path.home().glob(".pyenv/versions/3.*/bin/python3"))]
    out = []
    for path in candidates:
        if path is None:
            continue
        found = subprocess.run([path, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                               capture_output=True, text=True, timeout=30)
        if found.returncode == 0 and found.stdout.strip() not in ("", this):
            out.append(path)
    return out


@pytest.mark.skipif(not _other_pythons(), reason="no Python of another version on PATH")
def test_install_sh_refuses_another_python_version(unpacked: Path, tmp_path: Path) -> None:
    for python in _other_pythons():
        done = subprocess.run([str(unpacked / "install.sh"), str(tmp_path / "venv")], capture_output=True,
                              text=True, timeout=60, env={**os.environ, "PYTHON": python})
        assert done.returncode == 4, done.stderr
        assert f"this bundle needs CPython {sys.version_info[0]}.{sys.version_info[1]}; '{python}' is Python 3." \
            in done.stderr
        assert not (tmp_path / "venv").exists()


def test_the_archive_is_the_same_bytes_every_time(digits_wheelhouse_build: BuildOutcome, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    built = digits_wheelhouse_build.archive
    assert built is not None
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    old = os.umask(0o077)  # a umask that would change modes, were they taken from it
    try:
        again = write_archive(digits_wheelhouse_build.bundle, tmp_path, "linux_x86_64")
    finally:
        os.umask(old)
    assert again.read_bytes() == built.read_bytes()
    header = built.read_bytes()[:10]
    assert header[3] & 0x08 == 0 and header[4:8] == b"\0\0\0\0"  # gzip: no FNAME, mtime 0
    with tarfile.open(built) as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert names[0] == "digits-1.0.0" and names == sorted(names, key=lambda n: n.split("/"))
    assert {(m.uid, m.gid, m.uname, m.gname, m.mtime) for m in members} == {(0, 0, "", "", 315532800)}
    modes = {m.name.removeprefix("digits-1.0.0/"): (m.mode, m.type) for m in members}
    assert modes["install.sh"] == (0o755, tarfile.REGTYPE) and modes["serve.py"] == (0o644, tarfile.REGTYPE)
    assert modes["wheels"] == (0o755, tarfile.DIRTYPE)
    assert all(m.isfile() or m.isdir() for m in members)
    assert gzip.decompress(built.read_bytes())  # one gzip member, readable


def test_source_date_epoch_sets_every_mtime(digits_wheelhouse_build: BuildOutcome, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    full = digits_wheelhouse_build.bundle
    small = Bundle(full.name, full.version, {p: d for p, d in full.files.items() if not p.startswith("wheels/")},
                   full.manifest)  # the same writer, less the 127 MB of wheels to compress
    path = write_archive(small, tmp_path, "linux_x86_64")
    with tarfile.open(path) as tar:
        assert {m.mtime for m in tar.getmembers()} == {1700000000}


@pytest.mark.arm_wheels
def test_an_arm_bundle_ships_aarch64_wheels_and_refuses_this_machine(tmp_path: Path) -> None:
    """Downloads the aarch64 wheelhouse (~100 MB when pip's cache is cold): opt in with `-m arm_wheels`."""
    spec = digits_copy(tmp_path / "spec", {"target: {hardware: x86, isa: native}": "target: {hardware: arm}"})
    outcome = build(spec, tmp_path / "out", iterations=50, latency_gate="off", lock="ignore", wheelhouse=True,
                    archive=True)
    assert outcome.archive is not None and outcome.archive.name == "digits-1.0.0-linux_aarch64.tar.gz"
    wheels = [p.removeprefix("wheels/") for p in outcome.bundle.files if p.startswith("wheels/")]
    assert _platforms(wheels) == {"any", "aarch64"}, wheels
    assert {parse_wheel_filename(w)[0] for w in wheels} >= {"onnxruntime", "numpy", "numba", "llvmlite"}
    assert outcome.bundle.manifest.platform is not None and outcome.bundle.manifest.platform["machine"] == "aarch64"
    if platform.machine() == "x86_64":
        assert outcome.path is not None
        done = subprocess.run([str(outcome.path / "install.sh"), str(tmp_path / "venv")], capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 5, done.stdout + done.stderr
        assert "this bundle is for Linux aarch64; this Python runs on x86_64" in done.stderr


def test_without_a_wheelhouse_install_sh_says_it_uses_the_index(digits_bundle: Path, tmp_path: Path) -> None:
    """A plain build: install.sh (0755) installs from the index, saying so; an index that cannot answer is exit 7."""
    assert (digits_bundle / "install.sh").stat().st_mode & 0o777 == 0o755
    assert not (digits_bundle / "wheels").exists()
    assert "--hash" not in (digits_bundle / "requirements.txt").read_text()
    env = {**_offline_env(tmp_path), "PIP_RETRIES": "0"}
    done = subprocess.run([str(digits_bundle / "install.sh"), str(tmp_path / "venv")], capture_output=True,
                          text=True, timeout=300, env=env)
    assert done.returncode == 7, done.stdout + done.stderr
    assert "no wheels/ in this bundle (built without --wheelhouse): installing from the package index" in done.stdout
    assert "pip could not install requirements.txt from the package index" in done.stderr


@pytest.mark.parametrize("how", ["--wheelhouse", "deploy: {wheelhouse: true}"])
def test_an_unreachable_index_fails_the_build_with_exit_5_before_the_work(how: str, tmp_path: Path) -> None:
    spec = digits_copy(tmp_path / "spec", {"serving:": f"{how}\nserving:"} if how.startswith("deploy") else {})
    flag = [how] if how.startswith("--") else []
    done = subprocess.run([sys.executable, "-m", "infc", "build", str(spec), "-o", str(tmp_path / "out"), "--no-lock",
                           *flag], capture_output=True, text=True, timeout=300, env=_offline_env(tmp_path))
    assert done.returncode == 5, done.stderr
    assert "downloading the run-time wheels for linux_x86_64" in done.stderr
    assert "the package index is unreachable (pip could not connect to http://127.0.0.1:9/simple/" in done.stderr
    assert "candidate" not in done.stderr and not list((tmp_path / "out").iterdir())
