"""Counting SQL statements and transactions on a SQLAlchemy engine (tests and benches)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, event


class SqlCounter:
    """Counts SQL statements and transactions on one SQLAlchemy engine while ``active``.

    A transaction is a BEGIN..COMMIT/ROLLBACK block with at least one statement, or one
    statement run in autocommit (its own transaction on the server)."""

    def __init__(self, engine: Engine, *, active: bool = False) -> None:
        self.statements = 0
        self.transactions = 0
        self.active = active
        event.listen(engine, "before_cursor_execute", self._statement)
        event.listen(engine, "commit", self._end)
        event.listen(engine, "rollback", self._end)
        event.listen(engine, "checkin", self._checkin)

    def _statement(self, conn: Any, *_: Any) -> None:
        if not self.active:
            return
        self.statements += 1
        if getattr(conn.connection.dbapi_connection, "autocommit", False):
            self.transactions += 1
        elif not conn.info.get("kt_in_tx"):
            conn.info["kt_in_tx"] = True
            self.transactions += 1

    def _end(self, conn: Any) -> None:
        conn.info["kt_in_tx"] = False

    def _checkin(self, dbapi_connection: Any, record: Any) -> None:
        record.info["kt_in_tx"] = False  # the pool rolls back on return
