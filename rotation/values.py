"""What a secret is: its value type, its stages and the description of a version."""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NoReturn, TypeAlias

from rotation.errors import InvalidSecretValue, UnsupportedOperation

__all__ = [
    "SECRET_FIELDS",
    "FrozenDict",
    "SecretValue",
    "SecretVersion",
    "Stage",
    "VersionInfo",
    "decode_value",
    "encode_value",
    "freeze_value",
    "with_new_secret",
]


class FrozenDict(dict[str, Any]):
    """A read-only ``dict``: cached JSON secrets are shared, so nobody may mutate them."""

    def _readonly(self, *args: object, **kwargs: object) -> NoReturn:
        raise TypeError("secret values are read-only; copy with dict(value) to change one")

    __setitem__ = __delitem__ = _readonly
    clear = pop = popitem = setdefault = update = _readonly
    __ior__ = _readonly

    def __reduce__(self) -> tuple[type[dict[str, Any]], tuple[dict[str, Any]]]:
        return (dict, (dict(self),))


SecretValue: TypeAlias = str | Mapping[str, Any]


class Stage(enum.StrEnum):
    """The label a version carries in its secret's life."""

    #: What every plain reader gets.
    CURRENT = "current"
    #: Written by a rotation, not yet promoted; never returned to plain readers.
    PENDING = "pending"
    #: The version that was current before the last promotion; still valid during grace.
    PREVIOUS = "previous"


@dataclass(frozen=True)
class VersionInfo:
    """One version of a secret, described without its value."""

    version_id: str
    created: datetime | None
    stages: frozenset[Stage] = field(default_factory=frozenset)
    token: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "version_id": self.version_id,
            "created": self.created.isoformat() if self.created else None,
            "stages": sorted(s.value for s in self.stages),
            "token": self.token,
        }


@dataclass(frozen=True)
class SecretVersion:
    """A value read from a backend together with the version it came from."""

    name: str
    value: SecretValue
    version_id: str
    token: str | None = None

    def __repr__(self) -> str:  # never show the value
        return f"SecretVersion(name={self.name!r}, version_id={self.version_id!r})"


def freeze_value(value: object) -> SecretValue:
    """Check that ``value`` is a string or a JSON object and return an immutable copy."""
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        try:
            frozen: SecretValue = _freeze(json.loads(json.dumps(dict(value))))
            return frozen
        except (TypeError, ValueError) as exc:
            raise InvalidSecretValue(
                f"A secret value must be a string or a JSON object; this mapping is not "
                f"JSON-serializable ({type(exc).__name__})."
            ) from None
    raise InvalidSecretValue(
        f"A secret value must be a string or a JSON object, not {type(value).__name__}."
    )


def _freeze(obj: Any) -> Any:
    if isinstance(obj, dict):
        return FrozenDict({k: _freeze(v) for k, v in obj.items()})
    if isinstance(obj, list):
        return tuple(_freeze(v) for v in obj)
    return obj


def encode_value(value: SecretValue) -> str:
    """Serialize for a backend that stores text: strings as-is, objects as JSON."""
    if isinstance(value, str):
        return value
    return json.dumps(_thaw(value), separators=(",", ":"), sort_keys=True)


def _thaw(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {k: _thaw(v) for k, v in obj.items()}
    if isinstance(obj, tuple | list):
        return [_thaw(v) for v in obj]
    return obj


def decode_value(text: str, is_json: bool) -> SecretValue:
    """Inverse of :func:`encode_value`, given whether the stored value was an object."""
    if not is_json:
        return text
    frozen: SecretValue = _freeze(json.loads(text))
    return frozen


#: The fields of a JSON value that hold its secret part; the first one present is the one a
#: rotation changes (``manager.rotate`` and the ``random`` kind follow this one rule).
SECRET_FIELDS = ("password", "api_key", "token")


def with_new_secret(name: str, current: SecretValue, fresh: str) -> SecretValue:
    """``current`` with its secret part replaced by ``fresh``: the whole value when it is a
    string, else the first of :data:`SECRET_FIELDS` it has (the other fields are kept)."""
    if isinstance(current, str):
        return fresh
    for field_name in SECRET_FIELDS:
        if field_name in current:
            return freeze_value({**current, field_name: fresh})
    raise UnsupportedOperation(
        f"Cannot rotate {name!r}: it is a JSON secret with none of the fields "
        f"{', '.join(SECRET_FIELDS)}. Give it a rotation policy whose kind knows its shape."
    )
