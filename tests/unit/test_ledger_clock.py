"""The embedded ledger's clock: SQLite's ``'now'`` as an aware UTC datetime, the runtime's
default clock."""

from __future__ import annotations

from datetime import UTC, datetime

from rotation.ledger.db import Ledger
from rotation.run.runtime import Runtime


def test_sqlite_ledger_now_is_utc_and_the_default_clock(tmp_path) -> None:
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.sqlite'}")
    try:
        before = datetime.now(UTC)
        now = ledger.now()
        after = datetime.now(UTC)
        assert now.tzinfo is not None and now.utcoffset() is not None
        assert abs((now - before).total_seconds()) < 2 and now <= after
        assert Runtime(ledger, environ={}).clock == ledger.now
    finally:
        ledger.dispose()
