"""The ``postgres`` kind's ``target`` block: one role's password, or two alternating roles."""

from __future__ import annotations

import re

from pydantic import Field, field_validator

from rotation.rotators.alternating import AlternatingTarget
from rotation.schema import short_repr

__all__ = ["PostgresTarget"]

_PG_ROLE = re.compile(r"[A-Za-z_][A-Za-z0-9_$]{0,62}")


class PostgresTarget(AlternatingTarget):
    """``postgres``: rotate one role's password, or alternate between two roles."""

    login_word = "role"

    connect_timeout: float = Field(default=5, gt=0, le=300)
    #: One statement the test step runs as the new user, read-only (e.g. ``SELECT 1 FROM
    #: orders LIMIT 1``): proves the new login can do what the application does.
    probe: str = Field(default="SELECT 1", min_length=1, max_length=2000)

    @classmethod
    def check_login(cls, name: str) -> str:
        if not _PG_ROLE.fullmatch(name):
            raise ValueError(f"invalid Postgres role name {short_repr(name)}")
        return name

    @field_validator("probe")
    @classmethod
    def _probe(cls, value: str) -> str:
        statement = value.strip().rstrip(";").strip()
        if not statement:
            raise ValueError("give one SQL statement, e.g. 'SELECT 1 FROM orders LIMIT 1'")
        if "\x00" in statement or ";" in statement:
            raise ValueError("give exactly one SQL statement (no ';' inside, no NUL)")
        return statement
