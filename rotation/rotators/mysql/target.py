"""The ``mysql`` kind's ``target`` block: one account's password, or two alternating accounts."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, ValidationInfo, field_validator

from rotation.errors import RotationError
from rotation.schema import Spec, check_secret_name, short_repr

__all__ = ["MySqlTarget"]

#: MariaDB allows 80 characters (MySQL 8: 32; the server refuses longer names itself).
MAX_USER = 80


def _check_name(value: str, what: str) -> str:
    if not value or len(value) > MAX_USER or any(ord(c) < 32 for c in value):
        raise ValueError(f"invalid MySQL {what} {short_repr(value)}: 1-{MAX_USER} printable chars")
    return value


class MySqlTarget(Spec):
    """``mysql``: rotate one account's password, or alternate between two accounts."""

    mode: Literal["single", "alternating"] = "alternating"
    #: The login that creates the second account, mirrors privileges and sets passwords.
    admin_secret: str | None = Field(default=None, validate_default=True)
    #: The two accounts to alternate; default: the secret's username and username + "_clone".
    users: tuple[str, str] | None = None
    #: The host part of the rotated accounts (``'app'@'%'``).
    account_host: str = "%"
    connect_timeout: float = Field(default=5, gt=0, le=300)

    @field_validator("admin_secret")
    @classmethod
    def _admin(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None and info.data.get("mode") == "alternating":
            raise ValueError("required for mode 'alternating' (the login that manages the users)")
        return None if value is None else check_secret_name(value)

    @field_validator("users")
    @classmethod
    def _users(cls, value: tuple[str, str] | None, info: ValidationInfo) -> tuple[str, str] | None:
        if value is None:
            return None
        if info.data.get("mode") == "single":
            raise ValueError("only mode 'alternating' uses two users")
        for user in value:
            _check_name(user, "user name")
        if value[0] == value[1]:
            raise ValueError("the two users must differ")
        return value

    @field_validator("account_host")
    @classmethod
    def _host(cls, value: str) -> str:
        return _check_name(value, "account host")

    def pair(self, username: str) -> tuple[str, str]:
        """The two alternating accounts for a secret whose current user is ``username``."""
        if self.users is not None:
            return self.users
        base = username.removesuffix("_clone") or username
        return (base, base + "_clone")

    def other(self, username: str) -> str:
        """The account that is not ``username``."""
        first, second = self.pair(username)
        if username not in (first, second):
            raise RotationError(
                f"User {username!r} is not one of the alternating users {first!r}, {second!r}: "
                "fix the policy's target.users or the secret's username.",
                retryable=False,
            )
        return second if username == first else first
