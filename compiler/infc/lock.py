"""The plan lock: measured choices recorded beside the spec, reviewed like code, reused while valid.

A build makes decisions from measurements (which quantization candidate, which
nodes stay fp32, the batch size and window). Measurements are noisy, so two
builds of one spec could decide differently. `infc build specs/x.yaml` writes
the decisions to `specs/x.lock` (JSON, sorted keys) together with the
measurements behind them and a hash of every input they depend on: the
resolved spec (its name and version aside), the model, the calibration and
validation data, the files steps read, the target, and the infc and
onnxruntime versions. The next build with unchanged inputs reuses the choices
and re-measures only to check the budgets; a changed input invalidates the lock
(the message says which) and the build searches again; `--relock` always
searches; `--locked` (CI) fails with exit 2 instead of searching.

Lookup: `STEM.lock` beside the spec, else an `infc.lock` there that names this
spec's file; a new lock is written as `STEM.lock`.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from . import __version__
from .bounded import TooLarge, read_bounded
from .errors import InfcError
from .kernels import registry
from .spec import Spec
from .spec.files import shown

__all__ = ["LOCK_VERSION", "MODES", "Choices", "Lock", "LockError", "LockInputs", "LockStatus", "changes",
           "current_inputs", "file_sha256", "find_lock", "flatten", "read_lock", "spec_changes", "write_atomic",
           "write_lock"]

LOCK_VERSION = 1
MODES = ("auto", "relock", "locked", "ignore")
"""auto: reuse a valid lock, else search and write one; relock: search and write; locked: reuse or fail
(exit 2); ignore: neither read nor write one (experiments, tests)."""

_MAX_LOCK_BYTES = 4 << 20  # a lock is a few kB; a bigger file is not one of ours
_IDENTITY = ("name", "version", "deploy", "monitor")  # renaming, a new version, how it ships or what it watches
# changes no measured decision
_SERVING_IDENTITY = ("cache",)  # nor does a response cache in front of the batcher


class LockError(InfcError):
    """The lock file cannot be used as asked (unreadable, or stale under `--locked`)."""

    exit_code = 2


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes, read in chunks (models can be large)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


@dataclass(frozen=True)
class LockInputs:
    """Everything the locked decisions depend on."""

    spec: dict[str, Any]
    """The resolved spec as data (defaults applied), without name, version, deploy and serving.cache."""
    files: dict[str, str]
    """sha256 of each file the spec names, by the key that names it (`model`, `optimize.calibration`, ...)."""
    target: dict[str, Any]
    versions: dict[str, str]

    def to_dict(self) -> dict[str, Any]:
        return {"spec": self.spec, "spec_sha256": hashlib.sha256(_canonical_json(self.spec).encode()).hexdigest(),
                "files": self.files, "target": self.target, "versions": self.versions}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LockInputs:
        return cls(dict(d["spec"]), dict(d["files"]), dict(d["target"]), dict(d["versions"]))


@dataclass(frozen=True)
class Choices:
    """What the search decided: the candidate (its base plan and the nodes kept fp32) and the batching."""

    candidate: str
    """The chosen candidate's name, e.g. `fp32` or `dynamic+fp32x2`."""
    base: str
    """The plan candidate it derives from (`fp32`, `dynamic`, `static`, `fp16`)."""
    exclude: tuple[str, ...]
    """Quantizable nodes kept in fp32 (the sensitivity search's result)."""
    serving: dict[str, Any]
    """`max_batch_size` and `max_queue_delay_ms` (measured or pinned by the spec)."""

    def to_dict(self) -> dict[str, Any]:
        return {"candidate": self.candidate, "base": self.base, "exclude": list(self.exclude),
                "serving": self.serving}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Choices:
        return cls(str(d["candidate"]), str(d["base"]), tuple(str(n) for n in d["exclude"]), dict(d["serving"]))


@dataclass(frozen=True)
class Lock:
    """One lock file: the inputs, the choices made from them, and the measurements behind them."""

    spec_file: str
    inputs: LockInputs
    choices: Choices
    evidence: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"lock_version": LOCK_VERSION, "spec_file": self.spec_file, "generated_by": f"infc {__version__}",
                "inputs": self.inputs.to_dict(), "choices": self.choices.to_dict(), "evidence": self.evidence}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Lock:
        return cls(str(d["spec_file"]), LockInputs.from_dict(d["inputs"]), Choices.from_dict(d["choices"]),
                   dict(d.get("evidence", {})))


@dataclass(frozen=True)
class LockStatus:
    """What a build did with its lock, for the CLI, the JSON result and the report."""

    path: Path | None
    state: str
    """`reused`, `written` (there was none), `relocked` (`--relock`), `invalidated` (an input changed;
    searched again and rewritten), `ignored`, or `not written` (the build failed, or the folder is read-only)."""
    reasons: tuple[str, ...] = ()

    def describe(self) -> str:
        where = shown(self.path) if self.path else "no lock"
        why = f": {'; '.join(self.reasons)}" if self.reasons else ""
        return f"lock {where} {self.state}{why}"

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path) if self.path else None, "state": self.state, "reasons": list(self.reasons)}


def find_lock(spec_file: Path) -> Path:
    """The lock for `spec_file`: an existing `STEM.lock`, else an `infc.lock` naming this spec, else `STEM.lock`."""
    own = spec_file.with_suffix(".lock")
    shared = spec_file.parent / "infc.lock"
    if not own.exists() and shared.is_file():
        try:
            if read_lock(shared).spec_file == spec_file.name:
                return shared
        except LockError:
            pass
    return own


def read_lock(path: Path) -> Lock:
    """The lock at `path`; LockError (exit 2) when it is not a readable lock of this format."""
    try:
        raw = read_bounded(path, _MAX_LOCK_BYTES)
    except TooLarge:
        raise LockError(f"{shown(path)}: larger than {_MAX_LOCK_BYTES >> 20} MiB, not an infc lock") from None
    except OSError as e:
        raise LockError(f"{shown(path)}: cannot read the lock: {e.strerror or e}") from None
    try:
        data = json.loads(raw)
        if data.get("lock_version") != LOCK_VERSION:
            raise ValueError(f"lock_version {data.get('lock_version')!r}, this infc reads {LOCK_VERSION}")
        return Lock.from_dict(data)
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as e:
        detail = f"missing key {e}" if isinstance(e, KeyError) else str(e).splitlines()[0]
        raise LockError(f"{shown(path)}: not a valid infc lock ({detail}); rebuild with --relock") from None


def write_lock(path: Path, lock: Lock) -> None:
    """Write atomically (a reader never sees half a lock), sorted keys, one trailing newline."""
    write_atomic(path, (json.dumps(lock.to_dict(), indent=2, sort_keys=True) + "\n").encode())


def write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` atomically, mode 0644: a reader sees the old file or the whole new one."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _named_files(spec: Spec) -> dict[str, Path]:
    """Every file the spec names, by the key that names it."""
    out: dict[str, Path] = {"model": spec.model}
    if spec.optimize.calibration:
        out["optimize.calibration"] = spec.optimize.calibration
    if spec.optimize.validation:
        out["optimize.validation"] = spec.optimize.validation
    for step in (*spec.preprocess, *spec.postprocess):
        for key in registry.get(step.name).files:
            if step.params.get(key):
                section, index = step.path
                out[f"{section}[{index}].{step.name}.{key}"] = Path(str(step.params[key]))
    return out


def current_inputs(spec: Spec, target: dict[str, Any]) -> LockInputs:
    """The inputs of a build of `spec` for `target` (hardware and resolved isa), as they are now."""
    data = json.loads(_canonical_json({k: v for k, v in spec.data.items() if k not in _IDENTITY}))
    if isinstance(data.get("serving"), dict):
        data["serving"] = {k: v for k, v in data["serving"].items() if k not in _SERVING_IDENTITY}
    files = {key: file_sha256(path) for key, path in sorted(_named_files(spec).items())}
    versions = {"infc": __version__, "onnxruntime": metadata.version("onnxruntime")}
    return LockInputs(data, files, dict(target), versions)


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """`{"a": {"b": [1, 2]}}` -> `{"a.b[0]": 1, "a.b[1]": 2}` (leaves only)."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out or {prefix: {}}
    if isinstance(value, list):
        out = {}
        for i, v in enumerate(value):
            out.update(flatten(v, f"{prefix}[{i}]"))
        return out or {prefix: []}
    return {prefix: value}


def spec_changes(old: dict[str, Any], new: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """The spec keys whose values differ: (key path, old, new); a missing side is None."""
    a, b = flatten(old), flatten(new)
    return [(k, a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def changes(old: LockInputs, new: LockInputs) -> list[str]:
    """What differs between the inputs a lock was made from and today's, one phrase each."""
    out = []
    spec = spec_changes(old.spec, new.spec)
    if spec:
        keys = ", ".join(k for k, _, _ in spec[:5]) + (f" and {len(spec) - 5} more" if len(spec) > 5 else "")
        out.append(f"spec changed ({keys})")
    for key in sorted(set(old.files) | set(new.files)):
        before, after = old.files.get(key), new.files.get(key)
        if before != after:
            what = "added" if before is None else "removed" if after is None else "changed"
            out.append(f"{key} file {what}" + (f" (sha256 {before[:12]} -> {after[:12]})"
                                               if before and after else ""))
    if old.target != new.target:
        out.append(f"target changed ({_canonical_json(old.target)} -> {_canonical_json(new.target)})")
    for name in sorted(set(old.versions) | set(new.versions)):
        if old.versions.get(name) != new.versions.get(name):
            out.append(f"{name} {old.versions.get(name)} -> {new.versions.get(name)}")
    return out
