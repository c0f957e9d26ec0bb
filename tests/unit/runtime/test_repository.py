"""policy.yaml parsing and the repository's view of models and versions (no server)."""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest
from runtime_bundle import write_bundle

from infc_runtime.repository import Policy, PolicyError, Repository, parse_policy, version_key
from infc_runtime.verify import BundleError


@pytest.mark.parametrize("text", [
    "current: 1.0.0\ncanary: {version: 1.1.0, share: 0.2}\n",
    "# traffic\ncurrent: '1.0.0'   # the stable one\ncanary:\n  version: \"1.1.0\"\n  share: 0.2\n",
])
def test_policy_flow_and_block_forms(text: str) -> None:
    assert parse_policy(text, "policy.yaml") == Policy("1.0.0", "1.1.0", 0.2)


def test_policy_without_canary() -> None:
    assert parse_policy("current: 3\n", "p") == Policy("3")
    assert Policy("3").versions == ("3",)


@pytest.mark.parametrize(("text", "message"), [
    ("canary: {version: 2, share: 0.5}\n", "p: current: expected a version"),
    ("current: 1\ncanary: {version: 2, share: 1.5}\n", "p: canary.share: expected a number from 0 to 1"),
    ("current: 1\ncanary: {version: 1, share: 0.5}\n", "p: canary.version: 1 is the current version"),
    ("current: 1\ncanary: {version: 2, weight: 0.5}\n", "p: canary: unknown key 'weight'"),
    ("current: 1\ncurent: 2\n", "p: unknown key 'curent'"),
    ("current 1\n", "p:1: expected `key: value`"),
    ("  share: 1\n", "p:1: indented line outside a mapping"),
])
def test_policy_errors_name_the_file_and_key(text: str, message: str) -> None:
    with pytest.raises(PolicyError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_policy(text, "p")


def test_versions_sort_as_numbers() -> None:
    assert sorted(["1.10.0", "1.9.0", "2", "1.9.1"], key=version_key) == ["1.9.0", "1.9.1", "1.10.0", "2"]


def test_repository_policy_defaults_to_the_highest_version_and_checks_the_file(tmp_path: Path) -> None:
    write_bundle(tmp_path / "toy" / "1.9.0", name="toy", version="1.9.0")
    write_bundle(tmp_path / "toy" / "1.10.0", name="toy", version="1.10.0")
    repo = Repository(tmp_path)
    assert repo.models() == ["toy"]
    assert repo.policy("toy") == Policy("1.10.0")
    assert repo.wanted("toy", repo.policy("toy")) == ["1.10.0"]
    (tmp_path / "toy" / "policy.yaml").write_text("current: 1.9.0\ncanary: {version: 2.0.0, share: 0.1}\n")
    with pytest.raises(PolicyError, match="policy.yaml: model 'toy' has no version '2.0.0'"):
        repo.policy("toy")


def test_repository_load_verifies_and_checks_the_folders(tmp_path: Path) -> None:
    write_bundle(tmp_path / "toy" / "2", name="toy", version="1")  # folder says 2, manifest says 1
    with pytest.raises(BundleError, match="manifest says model 'toy' version '1', its folders say 'toy' '2'"):
        Repository(tmp_path).load("toy", "2")
    bundle = write_bundle(tmp_path / "toy" / "1", name="toy", version="1")
    (bundle / "kernels" / "pre.py").write_text("raise SystemExit('imported')\n")
    with pytest.raises(BundleError, match="kernels/pre.py"):
        Repository(tmp_path).load("toy", "1")


def test_bundles_named_one_by_one(tmp_path: Path) -> None:
    a = write_bundle(tmp_path / "a", name="m", version="1")
    b = write_bundle(tmp_path / "b", name="m", version="2")
    repo = Repository.of_bundles([a, b])
    assert repo.fixed and repo.models() == ["m"]
    assert repo.wanted("m", repo.policy("m")) == ["1", "2"] and repo.policy("m").current == "2"
    with pytest.raises(BundleError, match="model 'm' version '1' is also in"):
        Repository.of_bundles([a, write_bundle(tmp_path / "c", name="m", version="1")])


def _archive(bundle: Path, path: Path, top: str, extra: tarfile.TarInfo | None = None) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        tar.add(bundle, arcname=top)
        if extra is not None:
            tar.addfile(extra)
    return path


def test_archives_are_versions_unpacked_and_verified(tmp_path: Path) -> None:
    bundle = write_bundle(tmp_path / "src" / "toy-2", name="toy", version="2")
    (tmp_path / "repo" / "toy").mkdir(parents=True)
    _archive(bundle, tmp_path / "repo" / "toy" / "toy-2-linux_x86_64.tar.gz", "toy-2")
    _archive(bundle, tmp_path / "repo" / "toy" / "3.tar.gz", "toy-2")
    repo = Repository(tmp_path / "repo")
    assert sorted(repo.versions("toy")) == ["2", "3"]
    assert repo.load("toy", "2").version == "2"
    with pytest.raises(BundleError, match="manifest says model 'toy' version '2', its folders say 'toy' '3'"):
        repo.load("toy", "3")


def test_an_archive_with_a_link_is_refused(tmp_path: Path) -> None:
    bundle = write_bundle(tmp_path / "src", name="toy", version="1")
    link = tarfile.TarInfo("toy-1/escape")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    (tmp_path / "repo" / "toy").mkdir(parents=True)
    _archive(bundle, tmp_path / "repo" / "toy" / "1.tar.gz", "toy-1", link)
    with pytest.raises(BundleError, match="'toy-1/escape' is not a plain file or folder"):
        Repository(tmp_path / "repo").load("toy", "1")
