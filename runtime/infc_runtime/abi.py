"""The contract between a generated kernel module and the runtime that loads it.

Imports nothing heavy (no onnxruntime, no numba): every generated kernel module
imports this file, and so may a bundle's tools that only read it.

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

if TYPE_CHECKING:
    from .types import ServingConfig, Tensors

__all__ = ["RequestError", "RequestTooLarge", "limits_for", "request_limits", "KernelModule", "KernelInfo",
           "kernel_module", "RUN", "EXAMPLES", "COLUMNS", "THREADS", "THREADS_ENV"]


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


class KernelModule(Protocol):
    """A generated kernel module: `run` is required, the rest optional (see `kernel_module`)."""

    def run(self, tensors: Tensors) -> Tensors: ...


@dataclass(frozen=True)
class KernelInfo:
    """A kernel module's interface, read once at load: `run` and the optional tables."""

    run: Any
    examples: Mapping[str, Any] = field(default_factory=dict)
    columns: Mapping[str, Sequence[str]] = field(default_factory=dict)


def kernel_module(module: ModuleType) -> KernelInfo:
    """The interface of a loaded kernel module; a TypeError naming what is missing or wrong."""
    run = getattr(module, RUN, None)
    if not callable(run):
        raise TypeError(f"kernel module {module.__name__!r} defines no callable {RUN}()")
    examples = getattr(module, EXAMPLES, {})
    columns = getattr(module, COLUMNS, {})
    if not isinstance(examples, Mapping) or not isinstance(columns, Mapping):
        raise TypeError(f"kernel module {module.__name__!r}: {EXAMPLES} and {COLUMNS} must be dicts")
    return KernelInfo(run=run, examples=examples, columns=columns)
