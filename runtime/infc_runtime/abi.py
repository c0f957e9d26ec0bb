"""The bundle's interface between the compiler and the runtime: the manifest and the kernel modules.

Imports nothing heavy (no onnxruntime, no numba): every generated kernel module
imports this file, and so may a bundle's tools that only read it.

- `Manifest`: `manifest.json`, typed. The compiler builds one and writes
  `to_dict()`; the runtime reads `Manifest.from_dict()`, which refuses another
  major `schema_version` (`ManifestError`, one line).

- `RequestError` / `RequestTooLarge`: a request's own data is wrong or over a
  limit; raised by kernels, answered 400 / 413 for that request only.
- `request_limits()`: the serving limits of the request being pre-processed on
  this thread (`Pipeline.preprocess` sets them with `limits_for`).
- `KernelModule`: what a generated kernel module (kernels/pre.py, kernels/post.py)
  defines. The compiler writes these names from the constants here; the runtime
  reads them through `kernel_module()`, never by string.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING, Any, Protocol

from . import verify
from .types import ServingConfig, TensorSpec

if TYPE_CHECKING:
    from .types import Tensors

__all__ = ["RequestError", "RequestTooLarge", "limits_for", "request_limits", "KernelModule", "KernelInfo",
           "kernel_module", "RUN", "EXAMPLES", "COLUMNS", "PADDING", "THREADS", "THREADS_ENV", "SCHEMA_VERSION",
           "SCHEMA_MAJOR", "SIGNED_SINCE", "schema_version", "ManifestError", "Manifest", "ModelFile", "KernelFiles",
           "ChoiceRecord"]


class RequestError(ValueError):
    """A request's own data is wrong; it fails that request only (HTTP 400)."""


class RequestTooLarge(RequestError):
    """A request's data is over a limit (e.g. decoded pixels); it fails that request only (HTTP 413)."""


_limits: ContextVar[ServingConfig | None] = ContextVar("infc_request_limits", default=None)


def request_limits() -> ServingConfig | None:
    """The serving limits of the request being pre-processed on this thread; None outside `Pipeline.preprocess`.

    How a per-request limit reaches generated kernels: the decode step checks the
    decoded pixels of all images of a request against `max_pixels` here, from
    the image headers, before decoding any.
    """
    return _limits.get()


@contextmanager
def limits_for(serving: ServingConfig | None) -> Iterator[None]:
    """Make `serving` what `request_limits()` returns inside the block, on this thread."""
    token = _limits.set(serving)
    try:
        yield
    finally:
        _limits.reset(token)


# -- the kernel module interface -------------------------------------------------

RUN = "run"
"""`run(tensors) -> tensors`: named arrays in and out, the batch on axis 0."""
EXAMPLES = "EXAMPLES"
"""`{input: element}`: one valid element per BYTES request input (warm-up uses it); optional."""
COLUMNS = "COLUMNS"
"""`{model input: (field, ...)}`: the field behind each column (errors name it); optional."""
THREADS = "THREADS"
"""`int`: threads a parallel fused loop uses (from `THREADS_ENV`, default 1); optional."""
THREADS_ENV = "INFC_KERNEL_THREADS"
PADDING = "PADDING"
"""`{model input: pad value}`: inputs whose axis 1 varies per request (token sequences); the server pads a
batch of them to its longest request with that value; optional."""


class KernelModule(Protocol):
    """A generated kernel module: `run` is required, the rest optional (see `kernel_module`)."""

    def run(self, tensors: Tensors) -> Tensors: ...


@dataclass(frozen=True)
class KernelInfo:
    """A kernel module's interface, read once at load: `run` and the optional tables."""

    run: Any
    examples: Mapping[str, Any] = field(default_factory=dict)
    columns: Mapping[str, Sequence[str]] = field(default_factory=dict)
    padding: Mapping[str, int] = field(default_factory=dict)


def kernel_module(module: ModuleType) -> KernelInfo:
    """The interface of a loaded kernel module; a TypeError naming what is missing or wrong."""
    run = getattr(module, RUN, None)
    if not callable(run):
        raise TypeError(f"kernel module {module.__name__!r} defines no callable {RUN}()")
    examples = getattr(module, EXAMPLES, {})
    columns = getattr(module, COLUMNS, {})
    padding = getattr(module, PADDING, {})
    if not all(isinstance(table, Mapping) for table in (examples, columns, padding)):
        raise TypeError(f"kernel module {module.__name__!r}: {EXAMPLES}, {COLUMNS} and {PADDING} must be dicts")
    return KernelInfo(run=run, examples=examples, columns=columns, padding=padding)


# -- the manifest ----------------------------------------------------------------

SCHEMA_VERSION = "1.4"
"""MAJOR.MINOR of `manifest.json`. A reader refuses another major; a newer minor only adds keys,
which an older reader ignores. 1.0: the manifests of `"format": 1` written before the version
was (they have no `schema_version`); 1.1: `schema_version` added; 1.2: `provenance` added, and the
bundle's verifier accepts `manifest.sig` (so `infc sign` signs only bundles of 1.2 or later); 1.3: `platform`
(the Python and platform the pins are for) and `wheels` (the wheelhouse's sizes) added, and the verifier accepts
the bundle's `.venv/` (`install.sh`'s default); 1.4: `cost` (the price the spec's `deploy` gives) added."""
SIGNED_SINCE = (1, 2)
"""The first schema version whose bundles' own verifier accepts a `manifest.sig` beside the manifest."""
SCHEMA_MAJOR = verify.SCHEMA_MAJOR


class ManifestError(ValueError):
    """A manifest this runtime cannot read: another major schema version, or a key missing or mistyped."""


@dataclass(frozen=True)
class ModelFile:
    """The optimized graph in the bundle, and the file name of the model it was built from."""

    path: str
    source: str | None = None


@dataclass(frozen=True)
class KernelFiles:
    """The generated kernel modules, as bundle paths."""

    pre: str
    post: str


@dataclass(frozen=True)
class ChoiceRecord:
    """The candidate the build shipped: its name, the plan candidate it derives from, the nodes kept in fp32."""

    candidate: str
    base: str
    exclude: tuple[str, ...] = ()


@dataclass(frozen=True)
class Manifest:
    """`manifest.json`, as the compiler writes it and the runtime reads it.

    The runtime needs `name` to `serving`; the rest records the build for
    people and tools (`infc diff`, the report): the plan, the pass records, the
    prepared step parameters and the tool versions stay plain JSON. `files` and
    `content_hash` are set when the bundle's files are known (`infc.bundle`);
    `measurements` (measured figures, measured files' hashes) is outside the
    content hash. `provenance` (1.2): what the bundle was built from and by,
    `{spec_sha256, model_sha256, lock_sha256 (null without a lock), infc_version,
    build_host: {system, machine, isa}}`; None in older manifests. `platform` (1.3):
    what requirements.txt (and `wheels/`) is for, `{python: "3.11", implementation: "cp",
    system: "Linux", machine: "x86_64" | "aarch64", tags: [pip's platform tags],
    glibc: the newest glibc a wheel needs (null without wheels), wheelhouse: bool}`
    (install.sh checks it); None in older manifests. `wheels` (1.3): `wheels/FILE`
    -> size in bytes, for the wheelhouse's files (also among `files`, with their
    sha256: the serve-time check reads their size only, see `verify`). `cost` (1.4): the price of the host
    the spec's `deploy` gives, `{usd_per_hour, vcpus (null: the vCPUs the server uses), instance (null, or the
    table's name), source}`, for the server's live cost gauge; None without a price.
    """

    name: str
    version: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    model: ModelFile
    kernels: KernelFiles
    session: Mapping[str, Any] = field(default_factory=dict)
    serving: ServingConfig = field(default_factory=ServingConfig)
    plan: Mapping[str, Any] | None = None
    choice: ChoiceRecord | None = None
    passes: tuple[Mapping[str, Any], ...] = ()
    prepared: tuple[Mapping[str, Any], ...] = ()
    versions: Mapping[str, Any] = field(default_factory=dict)
    files: Mapping[str, str] = field(default_factory=dict)
    content_hash: str = ""
    measurements: Mapping[str, Any] = field(default_factory=dict)
    schema_version: str = SCHEMA_VERSION
    provenance: Mapping[str, Any] | None = None
    platform: Mapping[str, Any] | None = None
    wheels: Mapping[str, int] = field(default_factory=dict)
    cost: Mapping[str, Any] | None = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Manifest:
        """Read a parsed manifest.json; ManifestError (one line) for another major version or a bad key."""
        if not isinstance(d, Mapping):
            raise ManifestError("expected a JSON object")
        schema = schema_version(d)
        try:
            model, kernels, choice = d["model"], d["kernels"], d.get("choice")
            return cls(
                name=_text(d["name"], "name"), version=_text(d["version"], "version"),
                inputs=tuple(TensorSpec.from_dict(t) for t in d["inputs"]),
                outputs=tuple(TensorSpec.from_dict(t) for t in d["outputs"]),
                model=ModelFile(_text(model["path"], "model.path"), model.get("source")),
                kernels=KernelFiles(_text(kernels["pre"], "kernels.pre"), _text(kernels["post"], "kernels.post")),
                session=dict(d.get("session") or {}),
                serving=ServingConfig.from_dict(d.get("serving") or {}),
                plan=d.get("plan"),
                choice=None if choice is None else ChoiceRecord(_text(choice["candidate"], "choice.candidate"),
                                                                _text(choice["base"], "choice.base"),
                                                                tuple(choice.get("exclude", ()))),
                passes=tuple(d.get("passes", ())), prepared=tuple(d.get("prepared", ())),
                versions=dict(d.get("versions", {})), files=dict(d.get("files", {})),
                content_hash=str(d.get("content_hash", "")), measurements=dict(d.get("measurements", {})),
                schema_version=schema,
                provenance=None if d.get("provenance") is None else dict(d["provenance"]),
                platform=None if d.get("platform") is None else dict(d["platform"]),
                wheels={_text(p, "wheels"): int(n) for p, n in dict(d.get("wheels") or {}).items()},
                cost=None if d.get("cost") is None else dict(d["cost"]),
            )
        except KeyError as exc:
            raise ManifestError(f"missing key {exc}") from None
        except (TypeError, ValueError, AttributeError) as exc:
            raise ManifestError(f"unexpected value ({type(exc).__name__}: {exc})") from None

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of manifest.json (what `content_hash` is computed over, less `measurements`)."""
        d: dict[str, Any] = {
            "format": SCHEMA_MAJOR,
            "schema_version": self.schema_version,
            "name": self.name,
            "version": self.version,
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
            "model": {"path": self.model.path, "source": self.model.source},
            "kernels": {"pre": self.kernels.pre, "post": self.kernels.post},
            "session": dict(self.session),
            "serving": self.serving.to_dict(),
            "passes": [dict(r) for r in self.passes],
            "prepared": [dict(p) for p in self.prepared],
            "versions": dict(self.versions),
        }
        if self.plan is not None:
            d["plan"] = dict(self.plan)
        if self.provenance is not None:
            d["provenance"] = dict(self.provenance)
        if self.platform is not None:
            d["platform"] = dict(self.platform)
        if self.wheels:
            d["wheels"] = dict(self.wheels)
        if self.cost is not None:
            d["cost"] = dict(self.cost)
        if self.choice is not None:
            d["choice"] = {"candidate": self.choice.candidate, "base": self.choice.base,
                           "exclude": list(self.choice.exclude)}
        if self.files:
            d["files"] = dict(self.files)
        if self.content_hash:
            d["content_hash"] = self.content_hash
        d["measurements"] = dict(self.measurements)
        return d


def schema_version(manifest: Mapping[str, Any]) -> str:
    """The manifest's `schema_version` ("1.0" for one written before it was), or ManifestError for another major."""
    try:
        return verify.schema_version(manifest)
    except ValueError as exc:
        raise ManifestError(str(exc)) from None


def _text(value: Any, key: str) -> str:
    if not isinstance(value, str) or not value:
        raise ManifestError(f"{key}: expected a non-empty string, got {value!r}")
    return value
