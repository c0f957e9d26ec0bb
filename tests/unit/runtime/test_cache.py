"""The response cache: keys, LRU, time to live, and the byte bounds (a hostile client cannot fill memory)."""

from __future__ import annotations

import numpy as np
import pytest

from infc_runtime.cache import ResponseCache, result_bytes
from infc_runtime.types import CacheConfig, ServingConfig


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def result(n: int = 4, fill: float = 1.0) -> dict[str, np.ndarray]:
    return {"scores": np.full((1, n), fill, np.float32)}


def test_the_key_covers_names_datatypes_shapes_bytes_and_the_loaded_version() -> None:
    cache = ResponseCache(CacheConfig(), "abc")
    base = {"x": np.arange(6, dtype=np.float32).reshape(2, 3)}
    key = cache.key(base)
    assert key == cache.key({"x": np.arange(6, dtype=np.float32).reshape(2, 3)})
    assert key == cache.key({"x": np.asfortranarray(base["x"])})  # the same values, laid out otherwise
    others = [{"y": base["x"]}, {"x": base["x"].astype(np.float64)}, {"x": base["x"].reshape(3, 2)},
              {"x": base["x"] + 1}, {**base, "z": np.zeros(1, np.uint8)}]
    assert len({key, *(cache.key(o) for o in others)}) == 1 + len(others)
    # the same identity loaded again, or another version: never the same key
    assert ResponseCache(CacheConfig(), "abc").key(base) != key
    assert ResponseCache(CacheConfig(), "abd").key(base) != key
    texts = np.array([b"ab", b"c"], dtype=object), np.array([b"a", b"bc"], dtype=object)
    assert cache.key({"t": texts[0]}) != cache.key({"t": texts[1]})  # lengths are part of it


def test_hits_are_counted_and_the_least_recently_used_entry_goes_first() -> None:
    cache = ResponseCache(CacheConfig(max_entries=2), "v")
    a, b, c = (cache.key({"x": np.array([i])}) for i in range(3))
    assert cache.get(a, 0.0) is None and cache.misses == 1
    cache.put(a, result(fill=1))
    cache.put(b, result(fill=2))
    hit = cache.get(a, 0.0)
    assert hit is not None and hit["scores"][0, 0] == 1 and cache.hits == 1
    assert not hit["scores"].flags.writeable  # shared between requests: read-only
    cache.put(c, result(fill=3))  # b is the least recently used now
    assert cache.get(b, 0.0) is None and cache.get(a, 0.0) is not None and cache.get(c, 0.0) is not None
    assert len(cache) == 2 and cache.evictions == 1


def test_an_entry_past_its_ttl_is_a_miss_and_is_dropped() -> None:
    clock = Clock()
    cache = ResponseCache(CacheConfig(ttl_s=5), "v", clock=clock)
    key = cache.key({"x": np.array([1])})
    cache.put(key, result())
    clock.now += 4.9
    assert cache.get(key, 0.0) is not None
    clock.now += 0.2
    assert cache.get(key, 0.0) is None and len(cache) == 0 and cache.bytes == 0


def test_bytes_are_bounded_per_entry_and_in_all() -> None:
    one = result_bytes(result(1000))
    cache = ResponseCache(CacheConfig(max_entries=100, max_bytes=3 * one, max_entry_bytes=one), "v")
    assert not cache.put(b"big", result(1001)) and len(cache) == 0  # one larger than an entry may be: not kept
    for i in range(10):
        assert cache.put(bytes([i]), result(1000))
        assert cache.bytes <= 3 * one
    assert len(cache) == 3 and cache.bytes == 3 * one
    texts = {"label": np.array([b"x" * 5000], dtype=object)}
    assert result_bytes(texts) > 5000  # a BYTES element counts its own size, not a pointer's
    cache.clear()
    assert len(cache) == 0 and cache.bytes == 0


def test_a_kept_result_does_not_hold_the_batch_it_was_cut_from() -> None:
    batch = np.zeros((1000, 100), np.float32)
    cache = ResponseCache(CacheConfig(), "v")
    cache.put(b"k", {"y": batch[:1]})
    kept = cache.get(b"k", 0.0)
    assert kept is not None and kept["y"].base is None and kept["y"].shape == (1, 100)


def test_serving_config_carries_the_cache_only_when_it_is_on() -> None:
    assert "cache" not in ServingConfig().to_dict()
    on = ServingConfig(cache=CacheConfig(max_entries=7, ttl_s=2.5))
    assert on.to_dict()["cache"] == {"max_entries": 7, "ttl_s": 2.5, "max_bytes": 64 << 20,
                                     "max_entry_bytes": 1 << 20}
    assert ServingConfig.from_dict(on.to_dict()) == on
    assert ServingConfig.from_dict(ServingConfig().to_dict()).cache is None


@pytest.mark.parametrize("ttl", [0.5, 60.0])
def test_cache_config_reads_json_numbers(ttl: float) -> None:
    assert CacheConfig.from_dict({"max_entries": 3.0, "ttl_s": ttl}) == CacheConfig(max_entries=3, ttl_s=ttl)
