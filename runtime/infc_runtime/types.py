"""Types shared by every runtime module: tensor signatures and serving settings."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["Tensors", "TensorSpec", "CacheConfig", "ServingConfig", "numpy_dtype"]

Tensors = dict[str, npt.NDArray[Any]]
"""Named tensors; every array carries the batch as its leading dimension."""


def numpy_dtype(name: str) -> np.dtype[Any]:
    """The numpy dtype for a signature dtype name (`bytes` means Python objects)."""
    return np.dtype(object) if name == "bytes" else np.dtype(name)


@dataclass(frozen=True)
class TensorSpec:
    """A named tensor without its batch dimension.

    `dtype` is a numpy dtype name (`uint8`, `float32`, ...) or `bytes` for
    variable-length byte strings; `-1` in `shape` marks a dimension of any size.
    """

    name: str
    dtype: str
    shape: tuple[int, ...]

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TensorSpec:
        return cls(name=str(d["name"]), dtype=str(d["dtype"]), shape=tuple(int(s) for s in d["shape"]))

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}


@dataclass(frozen=True)
class CacheConfig:
    """The response cache (the spec's `serving.cache`; `cache.ResponseCache`): at most `max_entries` answers,
    each kept `ttl_s` seconds, none larger than `max_entry_bytes`, all of them together at most `max_bytes`."""

    max_entries: int = 1024
    ttl_s: float = 60.0
    max_bytes: int = 64 << 20
    max_entry_bytes: int = 1 << 20

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CacheConfig:
        kinds: dict[str, Any] = {"max_entries": int, "ttl_s": float, "max_bytes": int, "max_entry_bytes": int}
        return cls(**{k: kind(d[k]) for k, kind in kinds.items() if k in d})


@dataclass(frozen=True)
class ServingConfig:
    """How the server batches and bounds work (the spec's `serving` section).

    The limits bound what one request may make the server hold, checked before
    anything proportional to it is allocated: `max_body_bytes` (the body as
    received; 413), `max_decompressed_bytes` (after Content-Encoding; 413),
    `max_rows` (rows of one request; 413), `max_elements` (tensor elements of one
    request, all inputs; 413), `max_pixels` (decoded image pixels of one request,
    all images; 413). `allow_non_finite`: whether NaN and infinities may reach the
    model (otherwise a 400 naming the row and the input). The build derives the
    limits the spec does not set from the model's input sizes and `max_batch_size`.
    `instances`: batches that run at once, each on its own ONNX Runtime session
    and worker thread, the compute threads split between them. `cache`: the
    response cache, None (the default) when off.
    """

    max_batch_size: int = 32
    max_queue_delay_ms: float = 2.0
    max_queue: int = 512
    timeout_ms: float = 1000.0
    max_body_bytes: int = 32 << 20
    max_decompressed_bytes: int = 32 << 20
    max_rows: int = 4096
    max_elements: int = 1 << 24
    max_pixels: int = 1 << 26
    allow_non_finite: bool = False
    instances: int = 1
    cache: CacheConfig | None = None

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ServingConfig:
        values = {f.name: d[f.name] for f in fields(cls) if f.name in d}
        if isinstance(values.get("cache"), dict):
            values["cache"] = CacheConfig.from_dict(values["cache"])
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """Plain data; `cache` only when it is on (a bundle without one reads as before it existed)."""
        d = asdict(self)
        if d["cache"] is None:
            del d["cache"]
        return d
