"""Connecting to the ledger: ``KEYTURN_DATABASE_URL`` (Postgres in production, SQLite embedded)."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.orm import Session, sessionmaker

from rotation.errors import ConfigurationError

__all__ = ["DEFAULT_SQLITE_URL", "Ledger", "database_url"]

DEFAULT_SQLITE_URL = "sqlite:///.keyturn/ledger.sqlite"


def database_url(environ: Mapping[str, str] | None = None) -> str:
    """The ledger URL, with ``postgresql://`` mapped to the psycopg 3 driver."""
    env = os.environ if environ is None else environ
    url = (env.get("KEYTURN_DATABASE_URL") or DEFAULT_SQLITE_URL).strip()
    for plain in ("postgresql://", "postgres://"):
        if url.startswith(plain):
            url = "postgresql+psycopg://" + url[len(plain) :]
    if not url.startswith(("postgresql+psycopg://", "sqlite://")):
        raise ConfigurationError(
            "KEYTURN_DATABASE_URL must be a postgresql:// or sqlite:// URL "
            f"(got a {url.split(':', 1)[0]!r} URL)."
        )
    return url


_NOW_POSTGRES = text("SELECT clock_timestamp()")
_NOW_SQLITE = text("SELECT strftime('%Y-%m-%d %H:%M:%f', 'now')")


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


class Ledger:
    """An engine and a session factory for one database URL."""

    def __init__(self, url: str | None = None, **engine_options: Any) -> None:
        self.url = url or database_url()
        if self.url.startswith("sqlite:///") and not self.url.startswith("sqlite:///:memory:"):
            Path(self.url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        options: dict[str, Any] = {"pool_pre_ping": True, **engine_options}
        self.engine: Engine = create_engine(self.url, **options)
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def now(self) -> datetime:
        """The database's current time (UTC): the one clock of leases, due claims, recovery and
        stall detection. Postgres: ``clock_timestamp()``; SQLite (embedded, in this process):
        its ``'now'``."""
        query = _NOW_SQLITE if self.dialect == "sqlite" else _NOW_POSTGRES
        with self.engine.connect() as conn:
            value = conn.execute(query).scalar_one()
        if isinstance(value, str):
            value = datetime.fromisoformat(value)
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A session whose work commits on success and rolls back on error."""
        with self.sessions.begin() as session:
            yield session

    def dispose(self) -> None:
        self.engine.dispose()
