"""The serve command line: usage errors and bundles that do not verify or load end with exit 2 and one line;
the options reach the app."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from runtime_bundle import seal, write_bundle

from infc_runtime import app as app_module
from infc_runtime import http_server
from infc_runtime.pipeline import Pipeline
from infc_runtime.serve import BundleError, allowed_hosts, load_bundle, main, serve_bundle


def broken_bundles(root: Path) -> dict[str, tuple[Path, str]]:
    """Bundles broken in different ways, each with what the error must say."""
    cases: dict[str, tuple[Path, str]] = {}
    cases["missing dir"] = (root / "nowhere", "not a directory")
    cases["no manifest"] = (root / "empty", "no manifest.json")
    (root / "empty").mkdir()
    bad_json = write_bundle(root / "bad-json")
    (bad_json / "manifest.json").write_text("{")
    cases["bad json"] = (bad_json, "manifest.json: invalid JSON")
    no_key = write_bundle(root / "no-key")
    manifest = json.loads((no_key / "manifest.json").read_text())
    del manifest["inputs"]
    (no_key / "manifest.json").write_text(json.dumps(manifest))
    cases["missing key"] = (seal(no_key), "manifest.json: missing key 'inputs'")
    no_model = write_bundle(root / "no-model")
    (no_model / "model.onnx").unlink()
    cases["missing model"] = (no_model, "model.onnx: missing")
    tampered = write_bundle(root / "tampered")
    (tampered / "kernels" / "post.py").write_text("def run(:\n")
    cases["tampered kernel"] = (tampered, "kernels/post.py: changed")
    bad_kernel = write_bundle(root / "bad-kernel")
    (bad_kernel / "kernels" / "post.py").write_text("def run(:\n")
    cases["kernel syntax"] = (seal(bad_kernel), "SyntaxError")
    return cases


def test_load_bundle_turns_every_failure_into_one_message(tmp_path: Path) -> None:
    for case, (path, message) in broken_bundles(tmp_path).items():
        with pytest.raises(BundleError) as err:
            load_bundle(path)
        assert message in str(err.value), case
        assert "\n" not in str(err.value), case


def test_main_exits_2_with_one_line_for_a_broken_bundle(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cases = broken_bundles(tmp_path)
    for case in ("missing key", "tampered kernel"):
        path, message = cases[case]
        assert main(["serve", str(path)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and err.count("\n") == 1


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert main(["serve"]) == 2
    assert main(["serve", "dir", "--port", "eighty"]) == 2
    assert main(["serve", "dir", "--max-rows", "0"]) == 2
    assert main(["serve", "dir", "--max-body-bytes", "lots"]) == 2
    assert serve_bundle("dir", ["--bogus"]) == 2
    assert "usage:" in capsys.readouterr().err
    assert main(["serve", "--help"]) == 0
    help_text = capsys.readouterr().out
    for option in ("--log-level", "--no-verify", "--allow-host", "--max-body-bytes", "--max-decompressed-bytes",
                   "--max-rows", "--max-elements", "--max-pixels", "--access-log"):
        assert option in help_text


class Served:
    """What `_serve` handed to create_app and run_server, instead of serving."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.pipeline: Pipeline | None = None
        self.options: dict[str, Any] = {}
        self.verified: list[bool] = []
        self.server: dict[str, Any] = {}
        monkeypatch.setattr(app_module, "create_app", self.create_app)
        monkeypatch.setattr(http_server, "run_server", self.run_server)

    def create_app(self, pipeline: Pipeline, **options: Any) -> Any:
        self.pipeline, self.options = pipeline, options
        return SimpleNamespace(state=SimpleNamespace(metrics=SimpleNamespace(set_bundle_verified=self.verified.append)))

    def run_server(self, app: Any, **options: Any) -> int:
        self.server = options
        return 0


def test_limits_and_hosts_on_the_command_line_reach_the_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    served = Served(monkeypatch)
    bundle = write_bundle(tmp_path / "toy")
    assert main(["serve", str(bundle), "--port", "9000", "--max-body-bytes", "1000", "--max-rows", "3",
                 "--max-elements", "30", "--allow-host", "toy.internal"]) == 0
    assert served.pipeline is not None
    serving = served.pipeline.serving
    assert (serving.max_body_bytes, serving.max_rows, serving.max_elements) == (1000, 3, 30)
    assert serving.max_batch_size == 8  # the manifest's, untouched
    assert served.options == {"warmup": True, "allowed_hosts": ["localhost", "127.0.0.1", "::1", "toy.internal"],
                              "tracing": None}  # no OTEL_* variable: no tracing
    assert served.verified == [True]
    assert served.server == {"host": "127.0.0.1", "port": 9000, "log_level": "info", "access_log": False,
                             "on_shutdown": None}  # no gRPC endpoint to stop


def test_the_access_log_is_asked_for_on_the_command_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    served = Served(monkeypatch)
    bundle = write_bundle(tmp_path / "toy")
    assert main(["serve", str(bundle)]) == 0
    assert served.server["access_log"] is False
    assert main(["serve", str(bundle), "--access-log"]) == 0
    assert served.server["access_log"] is True


def test_no_verify_serves_a_changed_bundle_and_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    served = Served(monkeypatch)
    bundle = write_bundle(tmp_path / "toy")
    (bundle / "notes.txt").write_text("an extra file")
    assert main(["serve", str(bundle)]) == 2
    assert main(["serve", str(bundle), "--no-verify"]) == 0
    assert served.verified == [False]
    assert any(r.levelname == "WARNING" and "--no-verify" in r.getMessage() for r in caplog.records)


def test_allowed_hosts() -> None:
    assert allowed_hosts("127.0.0.1", []) == ["localhost", "127.0.0.1", "::1"]
    assert allowed_hosts("localhost", ["a"]) == ["localhost", "127.0.0.1", "::1", "a"]
    assert allowed_hosts("::1", []) == ["localhost", "127.0.0.1", "::1"]
    assert allowed_hosts("127.0.0.2", []) == ["localhost", "127.0.0.1", "::1", "127.0.0.2"]
    assert allowed_hosts("0.0.0.0", []) is None
    assert allowed_hosts("0.0.0.0", ["model.example.com"]) == ["model.example.com"]
    assert allowed_hosts("10.1.2.3", []) is None


# in a fresh interpreter without the compiler: what the server does before it is ready (load, app, HTTP
# stack, warm-up), then the heavy packages it imported
STARTUP = r"""
import json, sys
sys.modules["infc"] = None
from infc_runtime import http_server
from infc_runtime.app import create_app
from infc_runtime.serve import load_bundle
pipeline = load_bundle(sys.argv[1])
create_app(pipeline)
pipeline.warmup()
heavy = ("numba", "llvmlite", "scipy", "yaml", "jinja2", "jsonschema", "onnx", "grpc", "google.protobuf",
         "prometheus_client", "PIL", "tokenizers", "h11")
print(json.dumps(sorted(name for name in heavy if name in sys.modules)))
"""


def _imported_by_startup(bundle: Path) -> list[str]:
    done = subprocess.run([sys.executable, "-I", "-c", STARTUP, str(bundle)], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    imported: list[str] = json.loads(done.stdout.strip().splitlines()[-1])
    return imported


def test_a_server_imports_only_what_its_bundle_needs_before_it_is_ready(tmp_path: Path) -> None:
    # numpy-only kernels: no Numba (nor what Numba imports when installed: scipy, yaml); no gRPC without
    # --grpc-port; prometheus_client waits for the first scrape; h11 only without httptools (installed here);
    # nothing of the compiler's
    assert _imported_by_startup(write_bundle(tmp_path / "plain")) == []
    # the same with a Numba kernel: Numba is imported, and only that
    assert {"numba", "llvmlite"} <= set(_imported_by_startup(write_bundle(tmp_path / "numba", numba=True))) <= {
        "numba", "llvmlite", "scipy", "yaml"}
