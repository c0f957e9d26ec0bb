"""The serve command line: usage errors and bundles that do not load end with exit 2 and one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from runtime_bundle import write_bundle

from infc_runtime.serve import BundleError, load_bundle, main, serve_bundle


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
    del manifest["kernels"]
    (no_key / "manifest.json").write_text(json.dumps(manifest))
    cases["missing key"] = (no_key, "manifest.json: missing key 'kernels'")
    no_model = write_bundle(root / "no-model")
    (no_model / "model.onnx").unlink()
    cases["missing model"] = (no_model, "model.onnx")
    bad_kernel = write_bundle(root / "bad-kernel")
    (bad_kernel / "kernels" / "post.py").write_text("def run(:\n")
    cases["kernel syntax"] = (bad_kernel, "SyntaxError")
    return cases


def test_load_bundle_turns_every_failure_into_one_message(tmp_path: Path) -> None:
    for case, (path, message) in broken_bundles(tmp_path).items():
        with pytest.raises(BundleError) as err:
            load_bundle(path)
        assert message in str(err.value), case
        assert "\n" not in str(err.value), case


def test_main_exits_2_with_one_line_for_a_broken_bundle(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path, message = broken_bundles(tmp_path)["missing key"]
    assert main(["serve", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert main(["serve"]) == 2
    assert main(["serve", "dir", "--port", "eighty"]) == 2
    assert serve_bundle("dir", ["--bogus"]) == 2
    assert "usage:" in capsys.readouterr().err
    assert main(["serve", "--help"]) == 0
    assert "--log-level" in capsys.readouterr().out
