"""The wheelhouse: pip's cross-platform download for the target, from a local index (no network), the
requirements pinned by hash, the glibc the wheels need, and pip's failures as one clear error (exit 5)."""

from __future__ import annotations

import hashlib
import sys
import zipfile
from pathlib import Path

import pytest

from infc.errors import WheelhouseError
from infc.wheelhouse import archive_platform, fetch_wheelhouse, platform_record, platform_tags, roots

CP = f"cp{sys.version_info[0]}{sys.version_info[1]}"


def _wheel(folder: Path, name: str, tag: str, requires: tuple[str, ...] = ()) -> Path:
    """A minimal valid wheel (pip reads its METADATA to resolve)."""
    path = folder / f"{name}-1.0-{tag}.whl"
    info = f"{name}-1.0.dist-info"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(f"{name}/__init__.py", "")
        z.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n"
                                       + "".join(f"Requires-Dist: {r}\n" for r in requires))
        z.writestr(f"{info}/WHEEL", f"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: false\nTag: {tag}\n")
        z.writestr(f"{info}/RECORD", "")
    return path


@pytest.fixture
def index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A local find-links folder and no index: pip sees only these files."""
    folder = tmp_path / "index"
    folder.mkdir()
    _wheel(folder, "top", "py3-none-any", requires=("native",))
    _wheel(folder, "native", f"{CP}-{CP}-manylinux_2_17_aarch64.manylinux2014_aarch64")
    _wheel(folder, "native", f"{CP}-{CP}-manylinux_2_28_x86_64")
    (folder / "sdistonly-1.0.tar.gz").write_bytes(b"")
    for name, value in {"PIP_CONFIG_FILE": "/dev/null", "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(folder),
                        "PIP_NO_CACHE_DIR": "1"}.items():
        monkeypatch.setenv(name, value)
    return folder


@pytest.mark.parametrize("target, machine, glibc", [("arm", "aarch64", "2.17"), ("x86", "x86_64", "2.28")])
def test_the_targets_wheels_are_fetched_and_pinned_by_hash(index: Path, target: str, machine: str,
                                                           glibc: str) -> None:
    house = fetch_wheelhouse("# pins\ntop==1.0\n", target)
    native = next(p for p in index.iterdir() if p.name.startswith("native") and machine in p.name)
    assert sorted(house.wheels) == sorted([f"wheels/{native.name}", "wheels/top-1.0-py3-none-any.whl"])
    assert house.wheels[f"wheels/{native.name}"] == native.read_bytes()
    lines = [line for line in house.requirements.splitlines() if not line.startswith("#")]
    top = (index / "top-1.0-py3-none-any.whl").read_bytes()
    assert lines == [f"native==1.0 --hash=sha256:{hashlib.sha256(native.read_bytes()).hexdigest()}",
                     f"top==1.0 --hash=sha256:{hashlib.sha256(top).hexdigest()}"]
    assert house.glibc == glibc and house.pinned == {"native": "1.0", "top": "1.0"}
    assert archive_platform(target) == f"linux_{machine}"
    record = platform_record(target, house)
    assert record["machine"] == machine and record["glibc"] == glibc and record["wheelhouse"] is True
    assert record["tags"] == platform_tags(target) and f"manylinux2014_{machine}" in record["tags"]


def test_the_roots_are_resolved_for_the_target_the_pins_constrain_them(index: Path) -> None:
    """A pin of the build host's closure that the target does not need (here: one with no wheel at all) is not
    fetched; the roots' dependencies are, at their pinned versions."""
    house = fetch_wheelhouse("top==1.0\nnative==1.0\nhost-only==1.0; sys_platform != 'win32'\n", "arm", ["top"])
    assert house.pinned == {"native": "1.0", "top": "1.0"}
    with pytest.raises(WheelhouseError, match=r"at the pinned versions \(pip: top 1\.0 depends on native; The user "
                                              r"requested \(constraint\) native==2\.0\)"):
        fetch_wheelhouse("top==1.0\nnative==2.0\n", "arm", ["top"])


def test_the_roots_are_the_runtimes_direct_requirements() -> None:
    assert {"onnxruntime", "numpy", "numba", "uvicorn", "starlette"} <= set(roots("x86"))
    assert "onnxruntime-gpu" in roots("cuda") and "onnxruntime" not in roots("cuda")
    assert "tokenizers" in roots("arm", ["tokenizers"]) and "tokenizers" not in roots("arm")


def test_cuda_is_x86_64() -> None:
    assert platform_tags("cuda") == platform_tags("x86") and archive_platform("cuda") == "linux_x86_64"


def test_a_distribution_without_a_wheel_for_the_platform_is_named(index: Path) -> None:
    with pytest.raises(WheelhouseError, match=r"linux_aarch64, Python 3\.\d+\): no wheel of sdistonly==1\.0 for "
                                              r"this platform") as err:
        fetch_wheelhouse("sdistonly==1.0\n", "arm")
    assert err.value.exit_code == 5
    with pytest.raises(WheelhouseError, match=r"no set of wheels for this platform at the pinned versions \(pip: The "
                                              r"user requested sdistonly==1\.0; The user requested \(constraint\) "
                                              r"sdistonly==1\.0\)") as err:
        fetch_wheelhouse("sdistonly==1.0\n", "arm", ["sdistonly"])
    assert err.value.exit_code == 5


def test_an_unreachable_index_is_said_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIP_CONFIG_FILE", "/dev/null")
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")  # nothing listens on the discard port
    monkeypatch.setenv("PIP_NO_CACHE_DIR", "1")
    monkeypatch.setenv("PIP_RETRIES", "0")
    with pytest.raises(WheelhouseError, match=r"the package index is unreachable \(pip could not connect to "
                                              r"http://127\.0\.0\.1:9/simple/numpy/"):
        fetch_wheelhouse("numpy==2.0.0\n", "x86")


def test_a_download_that_takes_too_long_is_stopped(index: Path) -> None:
    with pytest.raises(WheelhouseError, match=r"did not finish in 0\.01 s"):
        fetch_wheelhouse("top==1.0\n", "arm", timeout=0.01)
