"""A model repository on disk: models, their versions, their traffic policy.

    REPO_DIR/
      digits/                 a model: its name is the bundles' manifest name
        policy.yaml           optional: which version answers the unversioned URL (below)
        1.0.0/                a version: a bundle directory, named after its manifest version
        digits-1.1.0-linux_x86_64.tar.gz    or an archive, as `infc build --archive` names it
        1.2.0.tar.gz                        (or VERSION.tar.gz), its bundle under one top folder

`infc serve REPO_DIR` serves it; `infc serve BUNDLE BUNDLE...` serves the
bundles named (`Repository.of_bundles`: every bundle loaded, the highest version
of each name current, no policy file). A version's bundle is verified
(`verify.verify_bundle`) and its manifest's name and version are checked against
its folders before any of its code is imported (`Repository.load`); one that
fails is not served, and the repository index reports it UNAVAILABLE with the
reason.

An archive is unpacked into a private temporary folder when its version is
loaded (plain files and folders only, `tarfile`'s "data" filter, at most
`MAX_ARCHIVE_MEMBERS` entries and `MAX_ARCHIVE_BYTES` in all), then verified as
a directory is; a folder of the same version wins over an archive.

`policy.yaml` (a small YAML subset: `key: value` lines, one nested mapping as a
block or `{key: value, ...}`, `#` comments; at most `MAX_POLICY_BYTES`):

    current: 1.0.0                          # required: the version the unversioned URL serves
    canary: {version: 1.1.0, share: 0.2}    # optional: that share of the traffic goes to the canary

Without a policy file the highest version is current (versions compare as
dotted numbers, then as text). From a repository, only the versions the policy
names are loaded: a swap loads the new one, then unloads the old one.
"""

from __future__ import annotations

import atexit
import json
import re
import shutil
import tarfile
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .verify import MANIFEST, MAX_MANIFEST_BYTES, BundleError, verify_bundle

if TYPE_CHECKING:
    from .pipeline import Pipeline

__all__ = ["MAX_ARCHIVE_BYTES", "MAX_ARCHIVE_MEMBERS", "MAX_POLICY_BYTES", "POLICY", "Policy", "PolicyError",
           "Repository", "parse_policy", "policy_from", "read_identity", "unpack", "version_key"]

POLICY = "policy.yaml"
MAX_POLICY_BYTES = 64 << 10
MAX_ARCHIVE_MEMBERS = 100_000
MAX_ARCHIVE_BYTES = 32 << 30
_ARCHIVE = ".tar.gz"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
"""A model or version folder name (no path separators, no leading dot)."""


class PolicyError(Exception):
    """A traffic policy is malformed or names a version that does not exist; the message names the file."""


@dataclass(frozen=True)
class Policy:
    """Which version answers a model's unversioned URL, and the share of that traffic its canary takes."""

    current: str
    canary: str | None = None
    share: float = 0.0

    @property
    def versions(self) -> tuple[str, ...]:
        """The versions this policy routes to."""
        return (self.current,) if self.canary is None else (self.current, self.canary)

    def to_dict(self) -> dict[str, Any]:
        return {"current": self.current,
                "canary": None if self.canary is None else {"version": self.canary, "share": self.share}}


def version_key(version: str) -> tuple[tuple[int, Any], ...]:
    """A sort key: dotted numbers compare as numbers (`1.10` after `1.9`), other parts as text."""
    return tuple((0, int(part)) if part.isdigit() else (1, part) for part in re.split(r"[.+-]", version))


def parse_policy(text: str, where: str) -> Policy:
    """The policy in `text` (the YAML subset above); `PolicyError` naming `where:line` otherwise."""
    doc = _parse_mapping(text, where)
    return policy_from(doc, where)


def policy_from(doc: Mapping[str, Any], where: str) -> Policy:
    """A `Policy` from a mapping (`current`, `canary: {version, share}`), as policy.yaml or the admin API give it."""
    unknown = sorted(set(doc) - {"current", "canary"})
    if unknown:
        raise PolicyError(f"{where}: unknown key {unknown[0]!r} (expected current, canary)")
    current = doc.get("current")
    if not isinstance(current, str | int | float) or not str(current):
        raise PolicyError(f"{where}: current: expected a version, got {current!r}")
    canary = doc.get("canary")
    if canary is None:
        return Policy(str(current))
    if not isinstance(canary, Mapping):
        raise PolicyError(f"{where}: canary: expected {{version: V, share: S}}, got {canary!r}")
    unknown = sorted(set(canary) - {"version", "share"})
    if unknown:
        raise PolicyError(f"{where}: canary: unknown key {unknown[0]!r} (expected version, share)")
    version, share = canary.get("version"), canary.get("share", 0)
    if not isinstance(version, str | int | float) or not str(version):
        raise PolicyError(f"{where}: canary.version: expected a version, got {version!r}")
    try:
        fraction = float(share)
    except (TypeError, ValueError):
        fraction = -1.0
    if not 0.0 <= fraction <= 1.0 or isinstance(share, bool):
        raise PolicyError(f"{where}: canary.share: expected a number from 0 to 1, got {share!r}")
    if str(version) == str(current):
        raise PolicyError(f"{where}: canary.version: {version} is the current version")
    return Policy(str(current), str(version), fraction)


def _parse_mapping(text: str, where: str) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    block: dict[str, Any] | None = None
    for number, raw in enumerate(text.splitlines(), 1):
        line = re.sub(r"(^|\s)#.*$", "", raw).rstrip()
        if not line.strip():
            continue
        at = f"{where}:{number}"
        indented = line[0] in " \t"
        key, colon, value = line.strip().partition(":")
        if not colon or not key:
            raise PolicyError(f"{at}: expected `key: value`, got {raw.strip()[:80]!r}")
        if indented:
            if block is None:
                raise PolicyError(f"{at}: indented line outside a mapping")
            block[key.strip()] = _scalar(value.strip(), at)
            continue
        value = value.strip()
        if not value:
            block = doc[key.strip()] = {}
        elif value.startswith("{"):
            block = None
            doc[key.strip()] = _flow(value, at)
        else:
            block = None
            doc[key.strip()] = _scalar(value, at)
    return doc


def _flow(value: str, at: str) -> dict[str, Any]:
    if not value.endswith("}"):
        raise PolicyError(f"{at}: expected a mapping in braces, got {value[:80]!r}")
    out: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in value[1:-1].split(","))):
        key, colon, scalar = item.partition(":")
        if not colon:
            raise PolicyError(f"{at}: expected `key: value` in braces, got {item[:80]!r}")
        out[key.strip()] = _scalar(scalar.strip(), at)
    return out


def _scalar(value: str, at: str) -> Any:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    if value in ("null", "~", ""):
        return None
    if value[0] in "[{":
        raise PolicyError(f"{at}: unexpected {value[:80]!r}")
    try:
        return float(value) if re.fullmatch(r"-?\d*\.\d+|-?\d+\.?\d*[eE][-+]?\d+", value) else value
    except ValueError:
        return value


class Repository:
    """Where each model's versions are and what their policy says; loads (verifies first) one version."""

    def __init__(self, root: Path | None, bundles: Mapping[str, Mapping[str, Path]] | None = None, *,
                 verify: bool = True, public_key: str | None = None, allow_cpu_fallback: bool = False,
                 loader: Callable[[Path, bool], Pipeline] | None = None) -> None:
        """`loader(path, allow_cpu_fallback)`: loads a verified bundle (`serve.load_bundle`, which words every
        failure as a `BundleError`); default: `Pipeline.load`."""
        self.root = root
        self.loader = loader
        self._bundles = {name: dict(versions) for name, versions in (bundles or {}).items()}
        self.verify, self.public_key, self.allow_cpu_fallback = verify, public_key, allow_cpu_fallback

    @classmethod
    def of_bundles(cls, paths: Iterable[Path], **options: Any) -> Repository:
        """The bundles in `paths`, by their manifests' name and version (read, not trusted until verified)."""
        bundles: dict[str, dict[str, Path]] = {}
        for path in paths:
            name, version = read_identity(path)
            if version in bundles.get(name, {}):
                raise BundleError(f"{path}: model {name!r} version {version!r} is also in {bundles[name][version]}")
            bundles.setdefault(name, {})[version] = path
        return cls(None, bundles, **options)

    @property
    def fixed(self) -> bool:
        """Bundles named one by one: every version is served, there are no policy files."""
        return self.root is None

    def models(self) -> list[str]:
        """The model names in the repository."""
        if self.root is None:
            return sorted(self._bundles)
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and _NAME.fullmatch(p.name))

    def versions(self, name: str) -> dict[str, Path]:
        """Each version of model `name` and its bundle directory (empty for an unknown model)."""
        if self.root is None:
            return dict(self._bundles.get(name, {}))
        folder = self.root / name
        if not _NAME.fullmatch(name) or not folder.is_dir():
            return {}
        found: dict[str, Path] = {}
        for p in folder.iterdir():
            if p.is_dir() and _NAME.fullmatch(p.name):
                found[p.name] = p
            elif p.is_file() and p.name.endswith(_ARCHIVE):
                stem = p.name[:-len(_ARCHIVE)]
                if stem.startswith(f"{name}-") and "-" in stem[len(name) + 1:]:
                    stem = stem[len(name) + 1:].rpartition("-")[0]  # NAME-VERSION-PLATFORM
                if _NAME.fullmatch(stem):
                    found.setdefault(stem, p)
        return found

    def policy_path(self, name: str) -> Path | None:
        return None if self.root is None else self.root / name / POLICY

    def policy_stamp(self, name: str) -> tuple[int, int] | None:
        """The policy file's modification time and size (None without one): it changed when this does."""
        path = self.policy_path(name)
        try:
            info = path.stat() if path is not None else None
        except OSError:
            return None
        return None if info is None else (info.st_mtime_ns, info.st_size)

    def policy(self, name: str) -> Policy:
        """Model `name`'s policy: its policy.yaml, else the highest version current; `PolicyError` when the file is
        malformed or names a version that is not there."""
        versions = self.versions(name)
        path = self.policy_path(name)
        if path is None or not path.is_file():
            if not versions:
                raise PolicyError(f"model {name!r}: no version in the repository")
            return Policy(max(versions, key=version_key))
        with path.open("rb") as f:
            data = f.read(MAX_POLICY_BYTES + 1)
        if len(data) > MAX_POLICY_BYTES:
            raise PolicyError(f"{path}: larger than {MAX_POLICY_BYTES} bytes")
        try:
            policy = parse_policy(data.decode("utf-8"), str(path))
        except UnicodeDecodeError:
            raise PolicyError(f"{path}: not UTF-8") from None
        self.check(name, policy, str(path))
        return policy

    def check(self, name: str, policy: Policy, where: str) -> None:
        """`PolicyError` unless every version `policy` names is in the repository."""
        versions = self.versions(name)
        for version in policy.versions:
            if version not in versions:
                raise PolicyError(f"{where}: model {name!r} has no version {version!r} (it has "
                                  f"{', '.join(sorted(versions, key=version_key)) or 'none'})")

    def wanted(self, name: str, policy: Policy) -> list[str]:
        """The versions to keep loaded under `policy`: all of them for bundles named one by one."""
        return sorted(self.versions(name), key=version_key) if self.fixed else list(policy.versions)

    def load(self, name: str, version: str) -> Pipeline:
        """Verify version `version` of model `name`, check its identity, then load it (blocking: call it off the
        event loop once serving); `BundleError` (or `ProviderError`) with the reason when it cannot be served."""
        path = self.versions(name).get(version)
        if path is None:
            raise BundleError(f"model {name!r} has no version {version!r}")
        if path.is_file():
            path = unpack(path, Path(tempfile.mkdtemp(prefix=f"infc-{name}-{version}-", dir=_scratch())))
        if self.verify:  # before the manifest is trusted and before any of the bundle's code is imported
            verify_bundle(path, public_key=self.public_key)
        found = read_identity(path)
        if found != (name, version):
            raise BundleError(f"{path}: its manifest says model {found[0]!r} version {found[1]!r}, its folders "
                              f"say {name!r} {version!r}")
        if self.loader is not None:
            return self.loader(path, self.allow_cpu_fallback)
        from .pipeline import Pipeline

        return Pipeline.load(path, allow_cpu_fallback=self.allow_cpu_fallback)


def read_identity(path: Path) -> tuple[str, str]:
    """The name and version in the bundle `path`'s manifest (bounded read); `BundleError` when unreadable."""
    manifest = path / MANIFEST
    try:
        with manifest.open("rb") as f:
            data = f.read(MAX_MANIFEST_BYTES + 1)
        if len(data) > MAX_MANIFEST_BYTES:
            raise BundleError(f"{manifest}: larger than {MAX_MANIFEST_BYTES} bytes")
        doc = json.loads(data)
    except OSError as exc:
        raise BundleError(f"{path}: no readable {MANIFEST} ({exc.strerror}; is this an infc bundle?)") from None
    except ValueError as exc:
        raise BundleError(f"{manifest}: invalid JSON ({exc})") from None
    name, version = (doc.get("name"), doc.get("version")) if isinstance(doc, dict) else (None, None)
    if not isinstance(name, str) or not isinstance(version, str):
        raise BundleError(f"{manifest}: expected string `name` and `version`")
    return name, version


_SCRATCH: list[Path] = []


def _scratch() -> Path:
    """A private folder for unpacked archives, removed when the process exits."""
    if not _SCRATCH:
        _SCRATCH.append(Path(tempfile.mkdtemp(prefix="infc-repository-")))
        atexit.register(shutil.rmtree, _SCRATCH[0], True)
    return _SCRATCH[0]


def unpack(archive: Path, into: Path) -> Path:
    """Unpack the bundle archive `archive` into the empty folder `into`; the bundle's folder (the archive's one top
    folder). Only plain files and folders, inside `into`, within the limits; `BundleError` otherwise."""
    if not hasattr(tarfile, "data_filter"):
        raise BundleError(f"{archive}: this Python cannot unpack archives safely (needs 3.11.4 or later): unpack it")
    try:
        with tarfile.open(archive, "r:gz") as tar:
            members, total = [], 0
            for member in tar:
                members.append(member)
                total += member.size
                if len(members) > MAX_ARCHIVE_MEMBERS or total > MAX_ARCHIVE_BYTES:
                    raise BundleError(f"{archive}: more than {MAX_ARCHIVE_MEMBERS} entries or {MAX_ARCHIVE_BYTES} "
                                      "bytes")
                if not (member.isfile() or member.isdir()):
                    raise BundleError(f"{archive}: {member.name[:200]!r} is not a plain file or folder")
            tops = {m.name.split("/", 1)[0] for m in members}
            if len(tops) != 1 or not _NAME.fullmatch(next(iter(tops))):
                raise BundleError(f"{archive}: expected one top folder, found {len(tops)}")
            tar.extractall(into, members=members, filter="data")
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise BundleError(f"{archive}: cannot unpack: {exc}") from None
    return into / tops.pop()
