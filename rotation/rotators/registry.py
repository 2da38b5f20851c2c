"""Rotator aliases, imported lazily (kombu's ``TRANSPORT_ALIASES``)."""

from __future__ import annotations

import threading

from rotation.registry import AliasRegistry
from rotation.rotators.base import Rotator

__all__ = ["ROTATOR_ALIASES", "get_rotator", "register_rotator", "resolve_rotator"]

ROTATOR_ALIASES: dict[str, str] = {
    "random": "rotation.rotators.random:RandomRotator",
    "postgres": "rotation.rotators.postgres.rotator:PostgresRotator",
}

_instances: dict[str, Rotator] = {}
_lock = threading.Lock()


_REGISTRY = AliasRegistry("rotator kind", ROTATOR_ALIASES)


def register_rotator(kind: str, target: str) -> None:
    """Register ``kind`` for ``"package.module:Class"``; registering a kind twice raises."""
    _REGISTRY.register(kind, target)


def resolve_rotator(kind: str) -> type[Rotator]:
    """The rotator class behind ``kind``, imported on first use."""
    cls: type[Rotator] = _REGISTRY.resolve(kind)
    return cls


def get_rotator(kind: str) -> Rotator:
    """The (shared, cached) rotator instance for ``kind``."""
    with _lock:
        rotator = _instances.get(kind)
        if rotator is None:
            rotator = _instances[kind] = resolve_rotator(kind)()
        return rotator
