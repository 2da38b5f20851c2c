"""The in-memory provider: a first-class backend for unit tests and the embedded demo."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import TypeVar

from rotation.providers.store import DEFAULT_MAX_VERSIONS, VersionedStore
from rotation.providers.store_backed import StoreBackedProvider

__all__ = ["MemoryProvider"]

T = TypeVar("T")


class MemoryProvider(StoreBackedProvider):
    """Secrets in a process-local dict, with the same stage rules as every other backend."""

    name = "memory"

    def __init__(self, max_versions: int = DEFAULT_MAX_VERSIONS) -> None:
        self._store = VersionedStore(max_versions=max_versions)
        self._lock = threading.Lock()

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> MemoryProvider:
        return cls()

    def _view(self, read: Callable[[VersionedStore], T], name: str | None = None) -> T:
        with self._lock:
            return read(self._store)

    def _mutate(self, change: Callable[[VersionedStore], T], name: str | None = None) -> T:
        with self._lock:
            return change(self._store)
