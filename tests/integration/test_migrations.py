"""Migrations produce exactly the models' schema, and downgrade back to nothing."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from rotation.ledger.migrate import downgrade, upgrade
from rotation.ledger.models import Base


def test_upgrade_matches_models_and_downgrades(empty_database: str) -> None:
    upgrade(empty_database)
    engine = create_engine(empty_database)
    try:
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
            assert diff == []
            indexes = {i["name"] for i in inspect(conn).get_indexes("runs")}
            assert {"uq_runs_one_active_per_secret", "ix_runs_open_next_attempt"} <= indexes
        downgrade(empty_database, "base")
        with engine.connect() as conn:
            assert set(inspect(conn).get_table_names()) == {"alembic_version"}
    finally:
        engine.dispose()


def test_sqlite_upgrade(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    upgrade(url)
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
    finally:
        engine.dispose()
