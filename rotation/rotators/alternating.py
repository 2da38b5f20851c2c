"""What the SQL kinds' targets share: one login's password (``single``), or two logins taking
turns (``alternating``, zero downtime) managed by an admin login, and which of the two is next."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, ValidationInfo, field_validator

from rotation.errors import RotationError
from rotation.schema import Spec, check_secret_name

__all__ = ["AlternatingTarget"]


class AlternatingTarget(Spec):
    """``mode``, ``admin_secret`` and ``users`` of a kind with single or alternating logins."""

    #: What one login is called in messages ("role", "user").
    login_word: ClassVar[str] = "user"

    mode: Literal["single", "alternating"] = "alternating"
    #: The login that creates and alters the two users (alternating mode).
    admin_secret: str | None = Field(default=None, validate_default=True)
    #: The two logins to alternate; default: the secret's username and username + "_clone".
    users: tuple[str, str] | None = None

    @classmethod
    def check_login(cls, name: str) -> str:
        """``name`` if it is a valid login name for this kind; a ``ValueError`` if not."""
        return name

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
        for login in value:
            cls.check_login(login)
        if value[0] == value[1]:
            raise ValueError("the two users must differ")
        return value

    def pair(self, username: str) -> tuple[str, str]:
        """The two alternating logins for a secret whose current user is ``username``."""
        if self.users is not None:
            return self.users
        base = username.removesuffix("_clone") or username
        return (base, base + "_clone")

    def other(self, username: str) -> str:
        """The login that is not ``username``."""
        first, second = self.pair(username)
        if username not in (first, second):
            raise RotationError(
                f"{self.login_word.capitalize()} {username!r} is not one of the alternating users "
                f"{first!r}, {second!r}: fix the policy's target.users or the secret's username.",
                retryable=False,
            )
        return second if username == first else first
