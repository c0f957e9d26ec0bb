"""The bundle ABI: the typed manifest (its schema version above all) and the kernel module interface."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from runtime_bundle import INPUTS, OUTPUTS, seal, write_bundle

from infc_runtime import abi, verify
from infc_runtime.abi import (
    SCHEMA_VERSION,
    ChoiceRecord,
    KernelFiles,
    Manifest,
    ManifestError,
    ModelFile,
    kernel_module,
)
from infc_runtime.serve import main
from infc_runtime.types import ServingConfig


def _manifest() -> Manifest:
    return Manifest(name="toy", version="1", inputs=tuple(INPUTS), outputs=tuple(OUTPUTS),
                    model=ModelFile("model.onnx", "toy.onnx"), kernels=KernelFiles("kernels/pre.py", "kernels/post.py"),
                    session={"intra_op_num_threads": 1}, serving=ServingConfig(max_batch_size=4),
                    plan={"target": "x86"}, choice=ChoiceRecord("dynamic+fp32x1", "dynamic", ("MatMul_0",)),
                    passes=({"pass": "normalize", "modified": False},), versions={"onnx": "1"},
                    files={"model.onnx": "0" * 64}, content_hash="1" * 64, measurements={"results": {"passed": True}})


def test_a_manifest_survives_its_json_form() -> None:
    manifest = _manifest()
    d = json.loads(json.dumps(manifest.to_dict()))
    assert d["schema_version"] == SCHEMA_VERSION and d["format"] == 1
    assert d["choice"] == {"candidate": "dynamic+fp32x1", "base": "dynamic", "exclude": ["MatMul_0"]}
    assert Manifest.from_dict(d) == manifest
    assert Manifest.from_dict(d).to_dict() == d


def test_the_platform_and_the_wheels_survive_the_json_form_and_older_manifests_have_none() -> None:
    platform = {"python": "3.11", "implementation": "cp", "system": "Linux", "machine": "aarch64",
                "tags": ["manylinux_2_28_aarch64"], "glibc": "2.28", "wheelhouse": True}
    manifest = Manifest(**{**_manifest().__dict__, "platform": platform, "wheels": {"wheels/a-1-py3-none-any.whl": 9}})
    d = json.loads(json.dumps(manifest.to_dict()))
    assert d["platform"] == platform and d["wheels"] == {"wheels/a-1-py3-none-any.whl": 9}
    assert Manifest.from_dict(d) == manifest
    older = {k: v for k, v in d.items() if k not in ("platform", "wheels")} | {"schema_version": "1.2"}
    assert Manifest.from_dict(older).platform is None and Manifest.from_dict(older).wheels == {}
    assert "platform" not in _manifest().to_dict() and "wheels" not in _manifest().to_dict()


def test_a_manifest_written_before_the_schema_version_reads_as_1_0(bundle: Path) -> None:
    manifest = Manifest.from_dict(json.loads((bundle / "manifest.json").read_text()))
    assert manifest.schema_version == "1.0" and manifest.kernels.pre == "kernels/pre.py"
    assert manifest.choice is None and manifest.serving.max_batch_size == 8


@pytest.mark.parametrize("version", ["2.0", "0.9", "10.1"])
def test_another_major_schema_version_is_refused(version: str) -> None:
    with pytest.raises(ManifestError, match=rf"schema_version {version}: this runtime reads schema 1\.x only"):
        Manifest.from_dict({**_manifest().to_dict(), "schema_version": version})


def test_a_newer_minor_version_is_read() -> None:
    assert Manifest.from_dict({**_manifest().to_dict(), "schema_version": "1.7", "new": 1}).schema_version == "1.7"


@pytest.mark.parametrize(("change", "message"), [
    ({"schema_version": "one"}, "schema_version 'one': expected MAJOR.MINOR"),
    ({"kernels": {"pre": "kernels/pre.py"}}, "missing key 'post'"),
    ({"name": 3}, "name: expected a non-empty string"),
    ({"inputs": [{"name": "x"}]}, "missing key 'dtype'"),
])
def test_a_bad_manifest_is_refused_in_one_line(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ManifestError, match=message):
        Manifest.from_dict({**_manifest().to_dict(), **change})


def test_the_verifier_reads_the_same_major_version() -> None:
    assert verify.SCHEMA_MAJOR == abi.SCHEMA_MAJOR == int(SCHEMA_VERSION.split(".")[0])


def test_serve_refuses_another_major_version_with_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = write_bundle(tmp_path / "bundle")
    manifest = json.loads((root / "manifest.json").read_text())
    (root / "manifest.json").write_text(json.dumps({**manifest, "schema_version": "2.0"}))
    seal(root)  # a well-formed bundle of a future infc: it verifies, its schema is what is refused
    assert main(["serve", str(root)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "manifest.json: schema_version 2.0: this runtime reads schema 1.x only" in err
    assert main(["serve", str(root), "--no-verify"]) == 2  # the runtime's own check, without the verifier's
    assert "schema_version 2.0: this runtime reads schema 1.x only" in capsys.readouterr().err


def test_the_kernel_module_interface_is_read_by_name() -> None:
    module = ModuleType("k")
    with pytest.raises(TypeError, match="defines no callable run()"):
        kernel_module(module)
    module.run = lambda tensors: tensors  # type: ignore[attr-defined]
    module.COLUMNS = {"x": ("a",)}  # type: ignore[attr-defined]
    info = kernel_module(module)
    assert info.columns == {"x": ("a",)} and info.examples == {}
    module.EXAMPLES = ["not", "a", "dict"]  # type: ignore[attr-defined]
    with pytest.raises(TypeError, match="must be dicts"):
        kernel_module(module)
