"""The ``mysql`` kind's ``target`` block: one account's password, or two alternating accounts."""

from __future__ import annotations

from pydantic import Field, field_validator

from rotation.rotators.alternating import AlternatingTarget
from rotation.schema import short_repr

__all__ = ["MySqlTarget"]

#: MariaDB allows 80 characters (MySQL 8: 32; the server refuses longer names itself).
MAX_USER = 80


def _check_name(value: str, what: str) -> str:
    if not value or len(value) > MAX_USER or any(ord(c) < 32 for c in value):
        raise ValueError(f"invalid MySQL {what} {short_repr(value)}: 1-{MAX_USER} printable chars")
    return value


class MySqlTarget(AlternatingTarget):
    """``mysql``: rotate one account's password, or alternate between two accounts."""

    #: The host part of the rotated accounts (``'app'@'%'``).
    account_host: str = "%"
    connect_timeout: float = Field(default=5, gt=0, le=300)

    @classmethod
    def check_login(cls, name: str) -> str:
        return _check_name(name, "user name")

    @field_validator("account_host")
    @classmethod
    def _host(cls, value: str) -> str:
        return _check_name(value, "account host")
