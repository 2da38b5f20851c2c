"""Rotator aliases, imported lazily (kombu's ``TRANSPORT_ALIASES``)."""

from __future__ import annotations

import difflib
import importlib
import threading

from rotation.errors import ConfigurationError
from rotation.rotators.base import Rotator

__all__ = ["ROTATOR_ALIASES", "get_rotator", "register_rotator", "resolve_rotator"]

ROTATOR_ALIASES: dict[str, str] = {
    "random": "rotation.rotators.random:RandomRotator",
    "postgres": "rotation.rotators.postgres:PostgresRotator",
}

_instances: dict[str, Rotator] = {}
_lock = threading.Lock()


def register_rotator(kind: str, target: str) -> None:
    """Register ``kind`` for ``"package.module:Class"``; registering a kind twice raises."""
    if kind in ROTATOR_ALIASES:
        raise ConfigurationError(
            f"Rotator {kind!r} is already registered ({ROTATOR_ALIASES[kind]})."
        )
    if ":" not in target:
        raise ConfigurationError(f"Rotator target must look like 'module:Class', not {target!r}.")
    ROTATOR_ALIASES[kind] = target


def resolve_rotator(kind: str) -> type[Rotator]:
    """The rotator class behind ``kind``, imported on first use."""
    target = ROTATOR_ALIASES.get(kind)
    if target is None:
        close = difflib.get_close_matches(kind, ROTATOR_ALIASES, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ConfigurationError(
            f"No such rotator kind: {kind!r}.{hint} "
            f"Known kinds: {', '.join(sorted(ROTATOR_ALIASES))}."
        )
    module_name, _, attribute = target.partition(":")
    cls: type[Rotator] = getattr(importlib.import_module(module_name), attribute)
    return cls


def get_rotator(kind: str) -> Rotator:
    """The (shared, cached) rotator instance for ``kind``."""
    with _lock:
        rotator = _instances.get(kind)
        if rotator is None:
            rotator = _instances[kind] = resolve_rotator(kind)()
        return rotator
