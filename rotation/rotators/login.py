"""A login read from a secret value (``{"username", "password", "host", "port", ...}``), shared
by the kinds whose value is a network login (mysql, redis)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from rotation.errors import RotationError
from rotation.generator import GeneratorPolicy, generate
from rotation.values import SecretValue

__all__ = ["Login", "with_new_password"]


@dataclass(frozen=True)
class Login:
    """Who logs in where; the password is kept out of ``repr``."""

    username: str
    password: str = field(repr=False)
    host: str
    port: int
    database: str | None = None

    @classmethod
    def from_value(
        cls,
        value: SecretValue,
        what: str,
        *,
        default_port: int,
        default_username: str | None = None,
    ) -> Login:
        """``value`` as a login; ``what`` names it in errors (never the value itself)."""
        if not isinstance(value, Mapping):
            raise RotationError(
                f"{what} must be a JSON object with username, password, host and port.",
                retryable=False,
            )
        username = value.get("username") or default_username
        missing = [
            name
            for name, present in (
                ("username", username),
                ("password", value.get("password")),
                ("host", value.get("host")),
            )
            if not present
        ]
        if missing:
            raise RotationError(f"{what} lacks {', '.join(missing)}.", retryable=False)
        try:
            port = int(value.get("port") or default_port)
        except (TypeError, ValueError):
            raise RotationError(
                f"{what} has a port that is not a number.", retryable=False
            ) from None
        database = value.get("dbname") or value.get("database")
        return cls(
            str(username),
            str(value["password"]),
            str(value["host"]),
            port,
            str(database) if database else None,
        )

    def where(self) -> str:
        """``host:port as 'user'`` for messages."""
        return f"{self.host}:{self.port} as {self.username!r}"

    def using(self, **changes: object) -> Login:
        return replace(self, **changes)  # type: ignore[arg-type]


def with_new_password(
    current: SecretValue, generator: GeneratorPolicy, username: str | None = None
) -> dict[str, object]:
    """A copy of the JSON value ``current`` with a fresh password (and ``username`` if given);
    other fields are carried over."""
    assert isinstance(current, Mapping)
    value = dict(current)
    value["password"] = generate(generator)
    if username is not None:
        value["username"] = username
    return value
