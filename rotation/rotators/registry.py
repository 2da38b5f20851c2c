"""Rotator kinds: one registration per kind, the class carrying its schema and capabilities.

``register_rotator(kind, "package.module:Class")`` (or the class) is all a new kind needs: the
policy loader validates ``target`` blocks with ``Class.Target``, the engine runs ``Class()``,
and ``Class.capabilities`` says what the kind promises. Installed distributions add kinds
through the ``keyturn.rotators`` entry-point group (``name = "package.module:Class"``), loaded
into the same table on its first use; a kind registered twice raises, naming both.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from importlib.metadata import entry_points
from typing import Any

from pydantic import BaseModel

from rotation.errors import ConfigurationError
from rotation.registry import AliasRegistry
from rotation.rotators.base import Capabilities, Rotator
from rotation.values import SecretValue

__all__ = [
    "ENTRY_POINT_GROUP",
    "ROTATORS",
    "capabilities_of",
    "expiry_reader",
    "get_rotator",
    "known_kinds",
    "register_rotator",
    "resolve_rotator",
    "target_schema",
]

#: The entry-point group third-party kinds register in.
ENTRY_POINT_GROUP = "keyturn.rotators"
_KIND = re.compile(r"[a-z][a-z0-9_-]{0,39}")


class _RotatorTable(AliasRegistry):
    """The kind table; entry points are read on its first use (``import rotation`` stays light)."""

    def __init__(self, aliases: dict[str, Any], extras: Mapping[str, str]) -> None:
        super().__init__("rotator kind", aliases, extras=extras)
        self._plugins_loaded = False
        self._loading = threading.RLock()
        #: kind -> where it came from, for the duplicate message.
        self.origins: dict[str, str] = {kind: "built in" for kind in aliases}

    def load_plugins(self) -> None:
        """Add every ``keyturn.rotators`` entry point once; a kind seen twice raises."""
        with self._loading:
            if self._plugins_loaded:
                return
            self._plugins_loaded = True
            for point in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda p: p.name):
                dist = getattr(point, "dist", None)
                origin = f"distribution {dist.name} {dist.version}" if dist else "an entry point"
                self._add(point.name, point.value, f"{origin} ({point.value})")

    def _add(self, kind: str, target: Any, origin: str) -> None:
        if not isinstance(kind, str) or not _KIND.fullmatch(kind):
            raise ConfigurationError(
                f"Invalid rotator kind {kind!r} from {origin}: use lowercase letters, digits, "
                "'-' and '_', starting with a letter (at most 40 characters)."
            )
        if kind in self.aliases:
            raise ConfigurationError(
                f"Rotator kind {kind!r} from {origin} is already registered by "
                f"{self.origins.get(kind, 'register_rotator')}: uninstall one of them or "
                "rename the kind."
            )
        super().register(kind, target)
        self.origins[kind] = origin

    def register(self, alias: str, target: Any) -> None:
        self.load_plugins()
        self._add(alias, target, f"register_rotator({target!r})")

    def __contains__(self, name: object) -> bool:
        self.load_plugins()
        return super().__contains__(name)

    def __iter__(self) -> Iterator[str]:
        self.load_plugins()
        return super().__iter__()

    def unknown_message(self, alias: str) -> str:
        self.load_plugins()
        return super().unknown_message(alias)

    def resolve(self, alias: str) -> Any:
        self.load_plugins()
        return super().resolve(alias)


#: kind -> the rotator class (or its import path).
ROTATORS = _RotatorTable(
    {
        "random": "rotation.rotators.random:RandomRotator",
        "postgres": "rotation.rotators.postgres.rotator:PostgresRotator",
        "mysql": "rotation.rotators.mysql.rotator:MySqlRotator",
        "redis": "rotation.rotators.redis_acl:RedisAclRotator",
        "external": "rotation.rotators.external.rotator:ExternalRotator",
        "aws-iam": "rotation.rotators.aws_iam.rotator:AwsIamRotator",
        "ldap": "rotation.rotators.ldap.rotator:LdapRotator",
        "certificate": "rotation.rotators.certificate.rotator:CertificateRotator",
    },
    extras={"mysql": "mysql", "aws-iam": "aws", "ldap": "ldap"},
)

_instances: dict[str, Rotator] = {}
_lock = threading.Lock()


def register_rotator(kind: str, target: str | type[Rotator]) -> None:
    """Register ``kind`` for ``"package.module:Class"`` (or the class); a second time raises."""
    ROTATORS.register(kind, target)


def known_kinds() -> list[str]:
    return sorted(ROTATORS)


def resolve_rotator(kind: str) -> type[Rotator]:
    """The rotator class behind ``kind``, imported on first use; it must declare ``Target`` and
    ``capabilities``."""
    cls: type[Rotator] = ROTATORS.resolve(kind)
    where = f"Rotator kind {kind!r} ({getattr(cls, '__module__', '?')}."
    where += f"{getattr(cls, '__qualname__', cls)})"
    schema = getattr(cls, "Target", None)
    if not (isinstance(schema, type) and issubclass(schema, BaseModel)):
        raise ConfigurationError(
            f"{where} declares no Target schema: give the class a `Target` pydantic model "
            "(rotation.schema.Spec)."
        )
    if not isinstance(getattr(cls, "capabilities", None), Capabilities):
        raise ConfigurationError(
            f"{where} declares no capabilities: give the class `capabilities = "
            "Capabilities(dual_valid=..., revokes=...)` (rotation.rotators.base)."
        )
    return cls


def target_schema(kind: str) -> type[BaseModel]:
    """The model of ``kind``'s ``target`` block."""
    schema: type[BaseModel] = resolve_rotator(kind).Target
    return schema


def capabilities_of(kind: str, target: Mapping[str, Any] | BaseModel | None = None) -> Capabilities:
    """What ``kind`` promises for this ``target`` block (its default mode when None)."""
    cls = resolve_rotator(kind)
    refine = getattr(cls, "capabilities_for", None)
    if target is None or refine is None:
        return cls.capabilities
    model = target if isinstance(target, BaseModel) else cls.Target.model_validate(dict(target))
    answer = refine(model)
    if not isinstance(answer, Capabilities):
        raise ConfigurationError(f"{kind}.capabilities_for must return Capabilities.")
    return answer


def expiry_reader(kind: str) -> Callable[[SecretValue], datetime | None] | None:
    """``kind``'s ``expires_at(value)`` (when a value stops working: a certificate's
    not_after), or None for kinds whose credentials do not expire."""
    reader = getattr(resolve_rotator(kind), "expires_at", None)
    return reader if callable(reader) else None


def get_rotator(kind: str) -> Rotator:
    """The (shared, cached) rotator instance for ``kind``."""
    with _lock:
        rotator = _instances.get(kind)
        if rotator is None:
            rotator = _instances[kind] = resolve_rotator(kind)()
        return rotator
