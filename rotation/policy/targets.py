"""What a policy acts on: restart strategies (``restart``) and each kind's ``target`` block.

The richer restart strategies live in :mod:`rotation.policy.restart` and register themselves in
:data:`RESTART_STRATEGIES` when :mod:`rotation.policy` is imported.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from rotation.policy.base import _check_pattern, _Spec
from rotation.policy.files import short_repr

__all__ = [
    "KIND_TARGETS",
    "RESTART_STRATEGIES",
    "NoRestart",
    "PostgresTarget",
    "RandomTarget",
    "RestartStrategy",
]


class RestartStrategy(_Spec):
    """How consumers pick the new value up before the old one is retired."""

    strategy: str

    @field_validator("strategy")
    @classmethod
    def _known(cls, value: str) -> str:
        if value not in RESTART_STRATEGIES:
            raise ValueError(
                f"unknown restart strategy {short_repr(value)}; use {', '.join(RESTART_STRATEGIES)}"
            )
        return value


class NoRestart(RestartStrategy):
    """Nothing to wait for: consumers re-read the secret themselves (cache TTL)."""

    strategy: Literal["none"] = "none"


RESTART_STRATEGIES: dict[str, type[RestartStrategy]] = {"none": NoRestart}

_ISSUER = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")
_PG_ROLE = re.compile(r"[A-Za-z_][A-Za-z0-9_$]{0,62}")


class RandomTarget(_Spec):
    """``random``: an optional issuer hook told about each new value."""

    issuer: str | None = None

    @field_validator("issuer")
    @classmethod
    def _import_path(cls, value: str | None) -> str | None:
        if value is not None and not _ISSUER.fullmatch(value):
            raise ValueError(f"invalid issuer {short_repr(value)}: use 'package.module:attr'")
        return value


class PostgresTarget(_Spec):
    """``postgres``: rotate one role's password, or alternate between two roles."""

    mode: Literal["single", "alternating"] = "alternating"
    #: The login that creates and alters the two users (alternating mode).
    admin_secret: str | None = Field(default=None, validate_default=True)
    #: The two roles to alternate; default: the secret's username and username + "_clone".
    users: tuple[str, str] | None = None
    connect_timeout: float = Field(default=5, gt=0, le=300)

    @field_validator("admin_secret")
    @classmethod
    def _admin(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None and info.data.get("mode") == "alternating":
            raise ValueError("required for mode 'alternating' (the login that manages the users)")
        if value is not None:
            _check_pattern(value, allow_glob=False)
        return value

    @field_validator("users")
    @classmethod
    def _roles(cls, value: tuple[str, str] | None, info: ValidationInfo) -> tuple[str, str] | None:
        if value is None:
            return None
        if info.data.get("mode") == "single":
            raise ValueError("only mode 'alternating' uses two users")
        for role in value:
            if not _PG_ROLE.fullmatch(role):
                raise ValueError(f"invalid Postgres role name {short_repr(role)}")
        if value[0] == value[1]:
            raise ValueError("the two users must differ")
        return value


class _NoTarget(_Spec):
    """Stands in for the target while ``kind`` itself is invalid (its error is reported)."""

    model_config = ConfigDict(extra="allow", frozen=True)


#: Rotator kind -> the model of its ``target`` block. New kinds add themselves here.
KIND_TARGETS: dict[str, type[BaseModel]] = {"random": RandomTarget, "postgres": PostgresTarget}
