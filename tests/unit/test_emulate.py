"""The emulator folder and its errors, without an emulator (the real runs are behind the `qemu` marker)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from infc.emulate import EMULATOR_DIR_ENV, EmulatorNotSetUp, arm64, emulator_dir, main, x86_64


def test_the_folder_is_the_env_vars_else_the_users_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(EMULATOR_DIR_ENV, str(tmp_path))
    assert emulator_dir() == tmp_path
    monkeypatch.delenv(EMULATOR_DIR_ENV)
    assert emulator_dir() == Path.home() / ".cache/infc/emulators"


def test_missing_pieces_are_named_with_the_set_up_command(tmp_path: Path) -> None:
    with pytest.raises(EmulatorNotSetUp, match=r"qemu-aarch64 not found: .*bin/qemu-aarch64 \(run `python -m "
                                               r"infc.emulate setup`"):
        arm64("cortex-a72", None, tmp_path)
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin/qemu-aarch64").write_text("")
    with pytest.raises(EmulatorNotSetUp, match="the arm64 sysroot's python3.11 not found"):
        arm64("cortex-a72", None, tmp_path)
    with pytest.raises(EmulatorNotSetUp, match="qemu-x86_64 not found"):
        x86_64(root=tmp_path)


def test_an_emulator_command_runs_the_sysroots_python_with_the_target_site(tmp_path: Path) -> None:
    for rel in ("bin/qemu-aarch64", "arm64-bookworm/usr/bin/python3.11"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("")
    emulator = arm64("neoverse-n1", tmp_path / "site", tmp_path)
    sysroot = str(tmp_path / "arm64-bookworm")
    assert emulator.command("serve.py", ["--port", "1"]) == [
        str(tmp_path / "bin/qemu-aarch64"), "-cpu", "neoverse-n1", "-L", sysroot, sysroot + "/usr/bin/python3.11",
        "serve.py", "--port", "1"]
    assert emulator.environ()["PYTHONPATH"] == str(tmp_path / "site") and "QEMU_CPU" not in emulator.environ()


def test_run_without_emulator_exits_2_with_the_reason(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(EMULATOR_DIR_ENV, str(tmp_path))
    (tmp_path / "script.py").write_text("")
    (tmp_path / "requirements.txt").write_text("numpy==2.0.0\n")
    assert main(["run", str(tmp_path / "script.py")]) == 2
    assert "infc.emulate: qemu-aarch64 not found" in capsys.readouterr().err
    done = subprocess.run([sys.executable, "-m", "infc.emulate", "nonsense"], capture_output=True, text=True)
    assert done.returncode == 2 and "python -m infc.emulate setup" in done.stderr
