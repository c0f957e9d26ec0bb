"""The contract between a generated kernel module and the runtime that loads it.

Imports nothing heavy (no onnxruntime, no numba): every generated kernel module
imports this file, and so may a bundle's tools that only read it.

- `RequestError` / `RequestTooLarge`: a request's own data is wrong or over a
  limit; raised by kernels, answered 400 / 413 for that request only.
- `request_limits()`: the serving limits of the request being pre-processed on
  this thread (`Pipeline.preprocess` sets them with `limits_for`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .types import ServingConfig

__all__ = ["RequestError", "RequestTooLarge", "limits_for", "request_limits"]


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
