"""TTLCache: expiry with an injected clock, generations against stale re-caching."""

from __future__ import annotations

from rotation.client.cache import TTLCache


def test_expiry_and_generation() -> None:
    now = [0.0]
    cache = TTLCache(10, clock=lambda: now[0])
    cache.put("a", "1", cache.generation)
    assert cache.get("a") == "1"
    now[0] = 9.999
    assert cache.get("a") == "1"
    now[0] = 10.0
    assert cache.get("a") is None

    seen = cache.generation
    cache.invalidate("a")  # a write happened while a reader was fetching
    cache.put("a", "stale", seen)
    assert cache.get("a") is None


def test_invalidate_all_and_bounded_size() -> None:
    now = [0.0]
    cache = TTLCache(1, clock=lambda: now[0])
    for i in range(5000):
        cache.put(str(i), i, cache.generation)
    now[0] = 2.0
    cache.put("fresh", 1, cache.generation)
    for i in range(10):
        cache.put(f"more{i}", i, cache.generation)
    assert len(cache) <= 4097
    cache.invalidate()
    assert len(cache) == 0
