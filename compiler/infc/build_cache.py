"""A build cache keyed by content: `infc diff` builds a spec once per set of inputs, and CI jobs may share it.

The key is a sha256 over everything a build's result depends on: the lock's
inputs (resolved spec, the files it names, target, versions), the locked
choices when the spec has a valid lock, the latency gate mode, and the build
host (CPU model and count: latency measured on one machine is not another's).
An entry is the bundle (written even when a budget was missed: the diff
still shows why) and `outcome.json`. Entries are made in a scratch folder and
renamed into place (atomic; when two jobs race, the first one's entry stays)
and every file is checked against the manifest's hashes before an entry is
used: a corrupt or tampered entry is rebuilt, never trusted.

Location: `--cache-dir`, else `$INFC_CACHE_DIR`, else `~/.cache/infc`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from infc_runtime.abi import Manifest

from . import __version__
from .bundle import content_hash, write_bundle
from .errors import BudgetError
from .isa import host_cpu
from .lock import LockError, changes, current_inputs, find_lock, read_lock
from .plan import make_plan
from .spec import load_spec

__all__ = ["default_cache_dir", "build_key", "cached_build", "verify_bundle"]


def default_cache_dir() -> Path:
    env = os.environ.get("INFC_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "infc"


def build_key(spec_path: Path, latency_gate: str) -> str:
    """The cache key of building `spec_path` now, on this host."""
    spec = load_spec(spec_path).spec
    plan = make_plan(spec)
    inputs = current_inputs(spec, {"hardware": plan.target, "isa": plan.isa})
    choices = None
    path = find_lock(spec.file)
    if path.is_file():
        try:
            lock = read_lock(path)
            choices = lock.choices.to_dict() if not changes(lock.inputs, inputs) else None
        except LockError:
            choices = None
    material = {"inputs": inputs.to_dict(), "choices": choices, "gate": latency_gate, "infc": __version__,
                "host": {"cpu": host_cpu(), "cpus": os.cpu_count()}, "name": spec.name, "version": spec.version}
    return hashlib.sha256(json.dumps(material, sort_keys=True, default=str).encode()).hexdigest()


def verify_bundle(root: Path) -> Manifest | None:
    """The manifest of the bundle in `root` when every file matches its hash and the content hash holds."""
    try:
        raw = json.loads((root / "manifest.json").read_text())
        manifest = Manifest.from_dict(raw)  # ManifestError is a ValueError
        listed = {**manifest.files, **manifest.measurements.get("files", {})}
        for rel, digest in listed.items():
            path = (root / rel).resolve()
            if root.resolve() not in path.parents:
                return None
            if hashlib.sha256(path.read_bytes()).hexdigest() != digest:
                return None
        if content_hash(raw) != manifest.content_hash:  # over the manifest as written, keys this infc ignores too
            return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return manifest


def cached_build(spec_path: Path, cache_dir: Path, *, latency_gate: str = "lenient",
                 progress: Callable[[str], None] | None = None) -> tuple[Path, dict[str, Any]]:
    """The bundle directory for `spec_path` (built now, or found in the cache) and its outcome
    (`passed`, `exit_code`, `message`)."""
    from .build import build

    key = build_key(spec_path, latency_gate)
    entry = cache_dir / "builds" / key
    outcome_file = entry / "outcome.json"
    if outcome_file.is_file():
        try:
            outcome = json.loads(outcome_file.read_text())
            bundle = entry / str(outcome["bundle"])
            if verify_bundle(bundle) is not None:
                return bundle, outcome
        except (OSError, ValueError, KeyError, TypeError):
            pass
        shutil.rmtree(entry, ignore_errors=True)  # corrupt or tampered: build again
    try:
        result = build(spec_path, write=False, latency_gate=latency_gate, progress=progress)
        outcome = {"passed": True, "exit_code": 0, "message": ""}
    except BudgetError as exc:
        result = exc.result  # type: ignore[assignment]
        outcome = {"passed": False, "exit_code": exc.exit_code, "message": str(exc)}
    (cache_dir / "builds").mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{key[:16]}.", dir=cache_dir / "builds"))
    try:
        written = write_bundle(result.bundle, scratch)
        outcome["bundle"] = written.name
        (scratch / "outcome.json").write_text(json.dumps(outcome, indent=2, sort_keys=True) + "\n")
        try:
            scratch.rename(entry)
        except OSError:  # another job made the entry first: use it
            shutil.rmtree(scratch, ignore_errors=True)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    return entry / str(outcome["bundle"]), outcome
