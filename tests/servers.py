"""A real server process on a free loopback port, for tests; always stopped in teardown."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

__all__ = ["Server", "dockerfile_command", "free_port", "serving"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """`command` (with `{port}` filled in) as a subprocess, its log in a file."""

    def __init__(self, command: Sequence[str], log: Path, cwd: Path | None = None,
                 env: Mapping[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"127.0.0.1:{self.port}"
        self.log = log
        with log.open("wb") as out:
            argv = [part.format(port=self.port) for part in command]
            self.process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=cwd, env=env)

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        with httpx.Client(base_url=f"http://{self.url}") as client:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    pytest.fail(f"server exited with {self.process.returncode}:\n{self.log.read_text()}")
                try:
                    if client.get("/v2/health/ready").status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                time.sleep(0.05)
        pytest.fail(f"server not ready after {timeout} s:\n{self.log.read_text()}")

    def stop(self) -> int:
        """SIGTERM, then SIGKILL if it does not exit in time; the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
        return self.process.wait()


def dockerfile_command(bundle: Path, instruction: str = "CMD") -> list[str]:
    """The exec-form CMD of the bundle's Dockerfile (how its container starts the server), or its HEALTHCHECK's
    command (`instruction="HEALTHCHECK"`: how Docker asks whether it is ready)."""
    (line,) = [ln for ln in (bundle / "Dockerfile").read_text().splitlines() if ln.startswith(f"{instruction} ")]
    command: list[str] = json.loads(line[line.index("CMD ") + 4:] if instruction == "HEALTHCHECK"
                                    else line.removeprefix(f"{instruction} "))
    return command


@contextmanager
def serving(bundle: Path, log: Path) -> Iterator[Server]:
    """The bundle's own `serve.py` on a free loopback port, ready; stopped on exit."""
    server = Server([sys.executable, str(bundle / "serve.py"), "--host", "127.0.0.1", "--port", "{port}"], log)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()
