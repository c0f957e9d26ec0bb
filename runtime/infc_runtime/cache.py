"""The response cache (`serving.cache`): an identical request to one loaded version answered from memory.

The key is a blake2b digest of the version's identity and the request's input
tensors: each input's name, datatype, shape and bytes, in name order (a BYTES
element's length, then its bytes). The identity is the bundle's manifest
content hash and a load generation, new for every cache made: a version loaded
again, or another version, never finds an entry made before (and a swap drops
the old version's cache with it: `routing`).

What is kept is the pipeline's result (every response tensor, as read-only
copies, so a kept entry never pins a whole batch's arrays). The response is
encoded per request, so the outputs a request asks for, binary or JSON, and
its `id` are not part of the key. A hit skips the queue and the model.

Bounded four ways: `max_entries` (least recently used dropped first),
`ttl_s` (an entry older than that is a miss, and dropped), `max_entry_bytes`
(a larger result is not kept) and `max_bytes` (all entries together). Sizes
count the arrays' bytes and, for BYTES tensors, each element's object size.
Every call runs on the event loop's thread: no lock.
"""

from __future__ import annotations

import hashlib
import itertools
import sys
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import numpy as np

from .types import CacheConfig, Tensors

__all__ = ["ResponseCache", "result_bytes"]

_GENERATION = itertools.count(1)
_ARRAY_OVERHEAD = 112  # an ndarray object, about


def result_bytes(result: Tensors) -> int:
    """The memory `result` holds: its arrays' bytes, and each BYTES element's object."""
    total = 0
    for array in result.values():
        total += array.nbytes + _ARRAY_OVERHEAD
        if array.dtype == object:
            total += sum(map(sys.getsizeof, array.flat))
    return total


def _frozen(array: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """`array`, read-only: itself when it owns its memory (nothing else writes a result), else a copy (a view
    into a batch's array would keep the whole batch alive)."""
    kept = array if array.base is None and array.flags.owndata else array.copy()
    kept.setflags(write=False)
    return kept


class ResponseCache:
    """An LRU of results by request, with a time to live, bounded in entries and bytes."""

    def __init__(self, config: CacheConfig, identity: str, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.generation = next(_GENERATION)
        self._prefix = f"{identity}\0{self.generation}\0".encode()
        self._clock = clock
        self._entries: OrderedDict[bytes, tuple[float, int, Tensors]] = OrderedDict()
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self.evictions = 0
        """Entries dropped to make room (not those expired or cleared)."""
        self.lookup_seconds = [0.0, 0.0]
        """Seconds spent keying and looking up, on hits and on misses (Triton's `cache_hit` / `cache_miss`)."""

    def __len__(self) -> int:
        return len(self._entries)

    def key(self, inputs: Tensors) -> bytes:
        """The digest of this version's identity and `inputs` (names, datatypes, shapes, bytes)."""
        digest = hashlib.blake2b(self._prefix, digest_size=16)
        for name in sorted(inputs):
            array = inputs[name]
            digest.update(f"{len(name)}:{name}:{array.dtype.str}:{array.shape}:".encode())
            if array.dtype == object:
                for item in array.reshape(-1):
                    if isinstance(item, bytes):
                        data = b"b" + item
                    elif isinstance(item, str):
                        data = b"s" + item.encode("utf-8", "surrogatepass")
                    else:
                        data = b"r" + repr(item).encode()
                    digest.update(len(data).to_bytes(8, "little"))
                    digest.update(data)
            else:
                digest.update(np.ascontiguousarray(array).data)
        return digest.digest()

    def get(self, key: bytes, started: float) -> Tensors | None:
        """The result kept for `key` (counted as a hit), or None (a miss; an expired entry is dropped).
        `started`: `time.perf_counter()` when keying began, for the lookup time."""
        entry = self._entries.get(key)
        if entry is not None and self._clock() >= entry[0]:
            self._drop(key)
            entry = None
        hit = entry is not None
        if hit:
            self._entries.move_to_end(key)
            self.hits += 1
        else:
            self.misses += 1
        self.lookup_seconds[0 if hit else 1] += time.perf_counter() - started
        return entry[2] if entry is not None else None

    def put(self, key: bytes, result: Tensors) -> bool:
        """Keep `result` for `key` (read-only copies); False when it is over `max_entry_bytes`."""
        size = result_bytes(result)
        if size > self.config.max_entry_bytes:
            return False
        if key in self._entries:
            self._drop(key)
        self._entries[key] = (self._clock() + self.config.ttl_s, size, {k: _frozen(v) for k, v in result.items()})
        self.bytes += size
        while len(self._entries) > self.config.max_entries or self.bytes > self.config.max_bytes:
            self._drop(next(iter(self._entries)))
            self.evictions += 1
        return True

    def clear(self) -> None:
        """Drop every entry (the version is unloaded)."""
        self._entries.clear()
        self.bytes = 0

    def _drop(self, key: bytes) -> None:
        _, size, _ = self._entries.pop(key)
        self.bytes -= size
