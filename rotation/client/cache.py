"""A thread-safe TTL cache with an injectable clock."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

__all__ = ["TTLCache"]

Clock = Callable[[], float]


class TTLCache:
    """Entries expire ``ttl`` seconds after they were stored; a ttl of 0 stores nothing.

    Reads take no lock (a dict lookup is atomic). Writers take a lock, and every invalidation
    bumps a generation counter so that a value fetched before an invalidation is never stored
    after it (a reader racing a rotation cannot re-cache the old value).
    """

    def __init__(self, ttl: float, clock: Clock = time.monotonic) -> None:
        self.ttl = ttl
        self.clock = clock
        self._entries: dict[str, tuple[Any, float]] = {}
        self._lock = threading.Lock()
        self._generation = 0

    def get(self, key: str) -> Any | None:
        """The live value for ``key``, or None."""
        entry = self._entries.get(key)
        if entry is not None and entry[1] > self.clock():
            return entry[0]
        return None

    @property
    def generation(self) -> int:
        """Take this before fetching; pass it to :meth:`put`."""
        return self._generation

    def put(self, key: str, value: Any, generation: int) -> None:
        if self.ttl <= 0:
            return
        with self._lock:
            if generation == self._generation:
                self._entries[key] = (value, self.clock() + self.ttl)
                if len(self._entries) > 4096:
                    self._drop_expired()

    def invalidate(self, key: str | None = None) -> None:
        """Forget ``key`` (or everything)."""
        with self._lock:
            self._generation += 1
            if key is None:
                self._entries.clear()
            else:
                self._entries.pop(key, None)

    def _drop_expired(self) -> None:
        now = self.clock()
        for key in [k for k, (_, expires) in self._entries.items() if expires <= now]:
            del self._entries[key]

    def __len__(self) -> int:
        return len(self._entries)
