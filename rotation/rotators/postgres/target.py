"""The ``postgres`` kind's ``target`` block: one role's password, or two alternating roles."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, ValidationInfo, field_validator

from rotation.errors import RotationError
from rotation.schema import Spec, check_secret_name, short_repr

__all__ = ["PostgresTarget"]

_PG_ROLE = re.compile(r"[A-Za-z_][A-Za-z0-9_$]{0,62}")


class PostgresTarget(Spec):
    """``postgres``: rotate one role's password, or alternate between two roles."""

    mode: Literal["single", "alternating"] = "alternating"
    #: The login that creates and alters the two users (alternating mode).
    admin_secret: str | None = Field(default=None, validate_default=True)
    #: The two roles to alternate; default: the secret's username and username + "_clone".
    users: tuple[str, str] | None = None
    connect_timeout: float = Field(default=5, gt=0, le=300)
    #: One statement the test step runs as the new user, read-only (e.g. ``SELECT 1 FROM
    #: orders LIMIT 1``): proves the new login can do what the application does.
    probe: str = Field(default="SELECT 1", min_length=1, max_length=2000)

    @field_validator("probe")
    @classmethod
    def _probe(cls, value: str) -> str:
        statement = value.strip().rstrip(";").strip()
        if not statement:
            raise ValueError("give one SQL statement, e.g. 'SELECT 1 FROM orders LIMIT 1'")
        if "\x00" in statement or ";" in statement:
            raise ValueError("give exactly one SQL statement (no ';' inside, no NUL)")
        return statement

    @field_validator("admin_secret")
    @classmethod
    def _admin(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None and info.data.get("mode") == "alternating":
            raise ValueError("required for mode 'alternating' (the login that manages the users)")
        return None if value is None else check_secret_name(value)

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

    def pair(self, username: str) -> tuple[str, str]:
        """The two alternating roles for a secret whose current user is ``username``."""
        if self.users is not None:
            return self.users
        base = username.removesuffix("_clone") or username
        return (base, base + "_clone")

    def other(self, username: str) -> str:
        """The role that is not ``username``."""
        first, second = self.pair(username)
        if username not in (first, second):
            raise RotationError(
                f"Role {username!r} is not one of the alternating users {first!r}, {second!r}: "
                "fix the policy's target.users or the secret's username.",
                retryable=False,
            )
        return second if username == first else first
