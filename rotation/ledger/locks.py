"""The advisory locks the ledger's writers take, in one place: no two uses share a number.

Each is a Postgres transaction-level advisory lock (released at commit or rollback). SQLite
(the embedded ledger) has one writer at a time anyway, so :func:`xact_lock` does nothing there.
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.orm import Session

__all__ = ["POLICY_SYNC", "RESTART_SLOTS", "xact_lock"]

#: One dispatcher syncs policy files at a time; the others then find nothing to do.
POLICY_SYNC = 7450001
#: Counting and claiming a policy's restart slots (scoped by the policy name).
RESTART_SLOTS = 7450002
# 7450003 was the audit chain's lock; appends now order themselves on the ``audit_head`` row.


def xact_lock(session: Session, key: int, scope: str | None = None) -> None:
    """Take lock ``key`` (per ``scope`` when given) until ``session``'s transaction ends."""
    if session.get_bind().dialect.name != "postgresql":
        return
    if scope is None:
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})
    else:
        session.execute(
            text("SELECT pg_advisory_xact_lock(:key, hashtext(:scope))"),
            {"key": key, "scope": scope},
        )
