"""Alembic, driven from code: ``keyturn db upgrade`` and the tests."""

from __future__ import annotations

import os
from pathlib import Path

from alembic import command
from alembic.config import Config

from rotation.errors import ConfigurationError
from rotation.ledger.db import database_url

__all__ = ["alembic_config", "downgrade", "upgrade"]


def _migrations_dir() -> Path:
    configured = os.environ.get("KEYTURN_MIGRATIONS_DIR")
    candidates = [Path(configured)] if configured else []
    candidates.append(Path(__file__).resolve().parents[2] / "migrations")
    for candidate in candidates:
        if (candidate / "env.py").is_file():
            return candidate
    raise ConfigurationError(
        "Cannot find the migrations/ directory; set KEYTURN_MIGRATIONS_DIR to its path."
    )


def alembic_config(url: str | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(_migrations_dir()))
    config.set_main_option("sqlalchemy.url", (url or database_url()).replace("%", "%%"))
    config.attributes["configure_logging"] = False
    return config


def upgrade(url: str | None = None, revision: str = "head") -> None:
    """Bring the ledger at ``url`` (default KEYTURN_DATABASE_URL) up to ``revision``."""
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str | None = None, revision: str = "base") -> None:
    command.downgrade(alembic_config(url), revision)
