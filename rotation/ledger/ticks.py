"""The dispatcher's last tick: one row, rewritten by every tick in database time, so that
monitoring can tell "no dispatcher tick for N minutes" from the ledger alone."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from rotation.ledger.db import Ledger
from rotation.ledger.models import DispatcherTick

__all__ = ["LastTick", "last_tick", "record_tick"]

_ROW = 1


@dataclass(frozen=True)
class LastTick:
    """When the last tick ran (database time) and which worker ran it."""

    at: datetime
    by: str


def record_tick(session: Session, at: datetime, by: str) -> None:
    """Record a tick at ``at`` (database time) in ``session``'s transaction; one upsert, so
    dispatchers ticking at once never collide."""
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    values = {"id": _ROW, "at": at, "by": by[:200]}
    statement = insert(DispatcherTick).values(**values)
    session.execute(
        statement.on_conflict_do_update(index_elements=["id"], set_={"at": at, "by": by[:200]})
    )


def last_tick(ledger: Ledger) -> LastTick | None:
    """The last tick, or None when no dispatcher ever ticked on this ledger."""
    with ledger.sessions() as session:
        row = session.get(DispatcherTick, _ROW)
        return LastTick(row.at, row.by) if row is not None else None
