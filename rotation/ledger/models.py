"""SQLAlchemy 2 models of the ledger. Values never live here: only names, ids and states."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

__all__ = [
    "AuditRecord",
    "Base",
    "DispatcherTick",
    "PolicyRow",
    "Run",
    "RunEvent",
    "Schedule",
    "UTCDateTime",
]

#: States that still hold the secret's single active-run slot (rotation.run.states.ACTIVE_STATES).
_ACTIVE = "state NOT IN ('succeeded', 'failed')"
#: States a step may still leave (rotation.run.states.FINAL_STATES excluded).
_OPEN = "state NOT IN ('succeeded', 'failed', 'needs_attention')"

BigId = BigInteger().with_variant(Integer, "sqlite")


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC in Python on every backend (SQLite stores naive UTC)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the ledger; use timezone-aware UTC")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: UTCDateTime}


class PolicyRow(Base):
    """A policy as last synced from ``schedules/*.yaml``; kept (soft-removed) when it goes away."""

    __tablename__ = "policies"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    source: Mapped[str] = mapped_column(Text)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    spec_hash: Mapped[str] = mapped_column(String(64))
    paused: Mapped[bool] = mapped_column(Boolean, default=False)
    updated_at: Mapped[datetime]
    #: First sync that did not find the policy in the files (None: present).
    missing_since: Mapped[datetime | None]
    #: When its absence was confirmed (missing for the removal grace): no new runs, runs in
    #: flight end cleanly, its schedules keep their history in case it comes back.
    removed_at: Mapped[datetime | None]


class Schedule(Base):
    """One secret governed by one policy: when it is next due. NULL = a run holds it."""

    __tablename__ = "schedules"
    __table_args__ = (Index("ix_schedules_next_due_at", "next_due_at"),)

    secret: Mapped[str] = mapped_column(String(200), primary_key=True)
    policy_name: Mapped[str] = mapped_column(
        String(200), ForeignKey("policies.name", ondelete="CASCADE"), index=True
    )
    next_due_at: Mapped[datetime | None]
    last_rotated_at: Mapped[datetime | None]
    last_run_id: Mapped[int | None] = mapped_column(BigId)
    #: First sync whose policy no longer claimed the secret (None: claimed).
    missing_since: Mapped[datetime | None]
    #: When that was confirmed (the removal grace passed): never due, kept for its history.
    removed_at: Mapped[datetime | None]
    #: When the current credential expires, for kinds whose credentials do (a certificate's
    #: not_after), read from the backend by the dispatcher (``rotation.scheduler.expiry``).
    expires_at: Mapped[datetime | None]
    #: When the dispatcher last read it (None: never; before ``last_rotated_at``: stale).
    expiry_checked_at: Mapped[datetime | None]


class Run(Base):
    """One rotation of one secret, advanced a step at a time by whichever worker holds the lease."""

    __tablename__ = "runs"
    __table_args__ = (
        Index(
            "uq_runs_one_active_per_secret",
            "secret",
            unique=True,
            postgresql_where=text(_ACTIVE),
            sqlite_where=text(_ACTIVE),
        ),
        Index(
            "ix_runs_open_next_attempt",
            "next_attempt_at",
            postgresql_where=text(_OPEN),
            sqlite_where=text(_OPEN),
        ),
        Index("ix_runs_secret_created", "secret", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    secret: Mapped[str] = mapped_column(String(200))
    policy_name: Mapped[str] = mapped_column(String(200))
    provider: Mapped[str | None] = mapped_column(String(50))
    trigger: Mapped[str] = mapped_column(String(16))
    actor: Mapped[str] = mapped_column(String(200))
    state: Mapped[str] = mapped_column(String(32))
    #: Tries of the current step (reset on every transition), bounded by ``max_attempts``.
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer)
    #: The backend idempotency key (AWS ClientRequestToken) of this run's new version.
    token: Mapped[str] = mapped_column(String(64), unique=True)
    lease_owner: Mapped[str | None] = mapped_column(String(200))
    lease_expires_at: Mapped[datetime | None]
    #: Not before: waits (grace, backoff) end here; NULL = ready.
    next_attempt_at: Mapped[datetime | None]
    #: When a message was last sent for this run (the dispatcher's recovery uses it).
    enqueued_at: Mapped[datetime | None]
    from_version: Mapped[str | None] = mapped_column(String(200))
    to_version: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    state_entered_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    #: Progress a step keeps across its waits (restart waves); never a value.
    step_data: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class RunEvent(Base):
    """An append-only record of one step attempt or transition of a run."""

    __tablename__ = "run_events"
    __table_args__ = (Index("ix_run_events_run_id", "run_id", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    run_id: Mapped[int] = mapped_column(BigId, ForeignKey("runs.id", ondelete="CASCADE"))
    at: Mapped[datetime]
    step: Mapped[str] = mapped_column(String(32))
    from_state: Mapped[str] = mapped_column(String(32))
    to_state: Mapped[str] = mapped_column(String(32))
    #: ok | wait | retry | throttled | failed | rollback | skipped
    outcome: Mapped[str] = mapped_column(String(16))
    attempt: Mapped[int] = mapped_column(Integer)
    worker: Mapped[str | None] = mapped_column(String(200))
    message: Mapped[str | None] = mapped_column(Text)


class DispatcherTick(Base):
    """The dispatcher's last tick, one row (``id`` 1), in database time (``ledger/ticks.py``)."""

    __tablename__ = "dispatcher_ticks"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime]
    #: The worker that ran it.
    by: Mapped[str] = mapped_column(String(200))


# --- audit trail (rotation/access/audit.py) ------------------------------------------------------


class AuditRecord(Base):
    """One hash-chained audit record: who did what to which secret, and how it went; no values."""

    __tablename__ = "audit_records"
    __table_args__ = (Index("ix_audit_records_secret_seq", "secret", "seq"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    #: Position in the chain: unique and gapless, assigned under a lock (access.audit.append).
    seq: Mapped[int] = mapped_column(BigId, unique=True)
    at: Mapped[datetime]
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(40))
    secret: Mapped[str | None] = mapped_column(String(200))
    version_id: Mapped[str | None] = mapped_column(String(200))
    run_id: Mapped[int | None] = mapped_column(BigId)
    #: ok | started | denied | error:<ErrorClass>
    outcome: Mapped[str] = mapped_column(String(80))
    detail: Mapped[str | None] = mapped_column(Text)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class AuditHead(Base):
    """The chain's head, one row (``id`` 1): the last record's ``seq`` and ``hash``. Postgres
    appends move it with one ``UPDATE`` (its row lock orders the appenders), so the next
    record's position is read and claimed in the statement that inserts it."""

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(BigId)
    #: The last record's hash (GENESIS_HASH before any) and the one before it.
    hash: Mapped[str] = mapped_column(String(64))
    prev_hash: Mapped[str] = mapped_column(String(64))


# --- manual requests (rotation/access/requests.py) ----------------------------------------------


class RequestNonce(Base):
    """A signed manual request already used: a second use of its nonce is a replay."""

    __tablename__ = "request_nonces"

    nonce: Mapped[str] = mapped_column(String(64), primary_key=True)
    principal: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(40))
    used_at: Mapped[datetime]
    #: After this the request is refused as expired anyway: the row may be pruned.
    expires_at: Mapped[datetime] = mapped_column(index=True)
