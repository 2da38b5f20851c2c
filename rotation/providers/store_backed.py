"""A provider over a :class:`VersionedStore`; subclasses decide where the state lives."""

from __future__ import annotations

import abc
import builtins
from collections.abc import Callable
from typing import TypeVar

from rotation.names import validate_name, validate_prefix
from rotation.providers.base import Capability
from rotation.providers.store import VersionedStore
from rotation.values import SecretValue, SecretVersion, Stage, VersionInfo, freeze_value

__all__ = ["StoreBackedProvider"]

T = TypeVar("T")


class StoreBackedProvider(abc.ABC):
    """Implements :class:`~rotation.providers.base.Provider` over ``_view`` and ``_mutate``."""

    name: str
    capabilities = frozenset({Capability.CHECK_AND_SET})

    @abc.abstractmethod
    def _view(self, read: Callable[[VersionedStore], T], name: str | None = None) -> T:
        """Run ``read`` against a consistent state (holding at least secret ``name``; every
        secret when ``name`` is None)."""

    @abc.abstractmethod
    def _mutate(self, change: Callable[[VersionedStore], T], name: str | None = None) -> T:
        """Run ``change`` against the latest state (of secret ``name``), exclusively, and keep
        its effect."""

    def read(self, name: str, *, stage: Stage = Stage.CURRENT) -> SecretVersion:
        validate_name(name)
        return self._view(lambda store: store.read(name, stage), name)

    def write(self, name: str, value: SecretValue, *, expected_version: str | None = None) -> str:
        validate_name(name)
        frozen = freeze_value(value)
        return self._mutate(lambda store: store.write(name, frozen, expected_version), name)

    def stage_pending(self, name: str, value: SecretValue, *, token: str) -> str:
        validate_name(name)
        frozen = freeze_value(value)
        return self._mutate(lambda store: store.stage_pending(name, frozen, token), name)

    def promote(self, name: str, *, token: str) -> str:
        validate_name(name)
        return self._mutate(lambda store: store.promote(name, token), name)

    def discard_pending(self, name: str, *, token: str) -> None:
        validate_name(name)
        self._mutate(lambda store: store.discard_pending(name, token), name)

    def rollback(self, name: str, *, token: str) -> str:
        validate_name(name)
        return self._mutate(lambda store: store.rollback(name, token), name)

    def list(self, prefix: str = "") -> list[str]:
        validate_prefix(prefix)
        return self._view(lambda store: store.list(prefix))

    def delete(self, name: str, *, force: bool = False) -> None:
        validate_name(name)
        self._mutate(lambda store: store.delete(name), name)

    def versions(self, name: str) -> builtins.list[VersionInfo]:
        validate_name(name)
        return self._view(lambda store: store.versions(name), name)

    def close(self) -> None:  # noqa: B027 - optional hook, nothing to release by default
        """Release resources; nothing by default."""
