"""The in-memory provider: a first-class backend for unit tests and the embedded demo."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

from rotation.providers.base import AccessCheck
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

    def check_access(self, names: Sequence[str]) -> list[AccessCheck]:
        """Nothing to check, and nothing shared: each process has its own memory store."""
        from rotation.providers.access_local import check_memory

        return check_memory(names)
