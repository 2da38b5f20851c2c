"""Rotator kinds: one registration per kind, the class carrying its ``Target`` schema.

``register_rotator(kind, "package.module:Class")`` (or the class) is all a new kind needs: the
policy loader validates ``target`` blocks with ``Class.Target`` and the engine runs ``Class()``.
"""

from __future__ import annotations

import threading

from pydantic import BaseModel

from rotation.errors import ConfigurationError
from rotation.registry import AliasRegistry
from rotation.rotators.base import Rotator

__all__ = [
    "ROTATORS",
    "get_rotator",
    "known_kinds",
    "register_rotator",
    "resolve_rotator",
    "target_schema",
]

#: kind -> the rotator class (or its import path).
ROTATORS = AliasRegistry(
    "rotator kind",
    {
        "random": "rotation.rotators.random:RandomRotator",
        "postgres": "rotation.rotators.postgres.rotator:PostgresRotator",
    },
)

_instances: dict[str, Rotator] = {}
_lock = threading.Lock()


def register_rotator(kind: str, target: str | type[Rotator]) -> None:
    """Register ``kind`` for ``"package.module:Class"`` (or the class); a second time raises."""
    ROTATORS.register(kind, target)


def known_kinds() -> list[str]:
    return sorted(ROTATORS)


def resolve_rotator(kind: str) -> type[Rotator]:
    """The rotator class behind ``kind``, imported on first use; it must declare ``Target``."""
    cls: type[Rotator] = ROTATORS.resolve(kind)
    schema = getattr(cls, "Target", None)
    if not (isinstance(schema, type) and issubclass(schema, BaseModel)):
        raise ConfigurationError(
            f"Rotator kind {kind!r} ({cls.__module__}.{cls.__qualname__}) declares no Target "
            "schema: give the class a `Target` pydantic model (rotation.schema.Spec)."
        )
    return cls


def target_schema(kind: str) -> type[BaseModel]:
    """The model of ``kind``'s ``target`` block."""
    schema: type[BaseModel] = resolve_rotator(kind).Target
    return schema


def get_rotator(kind: str) -> Rotator:
    """The (shared, cached) rotator instance for ``kind``."""
    with _lock:
        rotator = _instances.get(kind)
        if rotator is None:
            rotator = _instances[kind] = resolve_rotator(kind)()
        return rotator
