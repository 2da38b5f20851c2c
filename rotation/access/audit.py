"""The audit trail: who did what to which secret, and how it went; never a value.

Every ``SecretsManager`` operation and every run transition appends a record to a sink. The
ledger sink writes ``audit_records`` rows, hash-chained: each row's ``hash`` is the SHA-256 of
its canonical fields including ``prev_hash`` (the previous row's hash), and ``seq`` is gapless,
assigned under a lock, so ``verify`` names any edited, inserted or deleted row but the newest:
deleting the last rows leaves a shorter, intact chain, which only an anchor of the head kept
outside the ledger reveals (:mod:`rotation.access.anchor`).

Sinks: :class:`LedgerAuditSink` (the ledger), :class:`LogAuditSink` (structured log lines,
logger ``keyturn.audit``), :class:`MemoryAuditSink` (tests). ``sink_from_env`` picks one from
``KEYTURN_AUDIT`` (auto | ledger | log | off; auto = the ledger when ``KEYTURN_DATABASE_URL``
is set, else the log). SQLAlchemy is imported lazily: ``import rotation`` stays light.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Protocol

from rotation.access import roles
from rotation.errors import AuditWriteFailed, ConfigurationError, KeyturnError, RoleDenied

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from rotation.ledger.db import Ledger
    from rotation.ledger.models import AuditRecord, Run

__all__ = [
    "GENESIS_HASH",
    "AuditEvent",
    "AuditSink",
    "Auditor",
    "LedgerAuditSink",
    "LogAuditSink",
    "MemoryAuditSink",
    "Problem",
    "VerifyReport",
    "append",
    "default_sink",
    "head",
    "record_denial",
    "record_hash",
    "reset_default_sink",
    "sink_from_env",
    "tail",
    "transition_event",
    "verify",
]

log = logging.getLogger("keyturn.audit")

#: The ``prev_hash`` of the first record.
GENESIS_HASH = "0" * 64
_DETAIL_CHARS = 500


@dataclass(frozen=True)
class AuditEvent:
    """One thing that happened. ``outcome``: ok | started | denied | error:<ErrorClass>."""

    action: str
    actor: str
    outcome: str = "ok"
    secret: str | None = None
    version_id: str | None = None
    run_id: int | None = None
    detail: str | None = None
    at: datetime | None = None


def error_outcome(exc: BaseException) -> str:
    return f"error:{type(exc).__name__}"


class AuditSink(Protocol):
    def write(self, event: AuditEvent) -> None: ...

    def close(self) -> None: ...


class MemoryAuditSink:
    """Keeps events in a list (tests, demos)."""

    def __init__(self) -> None:
        self.events: list[AuditEvent] = []
        self._lock = threading.Lock()

    def write(self, event: AuditEvent) -> None:
        with self._lock:
            self.events.append(event)

    def close(self) -> None:
        pass


class LogAuditSink:
    """One structured log line per event (logger ``keyturn.audit``, action key = the event's)."""

    def write(self, event: AuditEvent) -> None:
        log.info(
            "audit %s %s by %s: %s",
            event.action,
            event.secret or "-",
            event.actor,
            event.outcome,
            extra={
                "action": event.action,
                "actor": event.actor,
                "secret": event.secret,
                "version_id": event.version_id,
                "run_id": event.run_id,
                "outcome": event.outcome,
            },
        )

    def close(self) -> None:
        pass


class LedgerAuditSink:
    """Appends each event to ``audit_records`` in its own transaction."""

    def __init__(self, ledger: Ledger, *, owns_ledger: bool = False) -> None:
        self.ledger = ledger
        self._owns = owns_ledger

    def write(self, event: AuditEvent) -> None:
        from sqlalchemy.exc import SQLAlchemyError

        try:
            with self.ledger.transaction() as session:
                append(session, event)
        except SQLAlchemyError as exc:
            cause = getattr(exc, "orig", None) or exc
            first_line = (str(cause).splitlines() or [""])[0][:200]
            raise AuditWriteFailed(
                f"Could not write the audit record of {event.action} "
                f"{event.secret or ''} to the ledger ({type(cause).__name__}: {first_line}). "
                "Check KEYTURN_DATABASE_URL and run `keyturn db upgrade`."
            ) from None

    def close(self) -> None:
        if self._owns:
            self.ledger.dispose()


def sink_from_env(environ: Mapping[str, str] | None = None) -> AuditSink | None:
    """``KEYTURN_AUDIT``: auto (ledger if ``KEYTURN_DATABASE_URL`` is set, else log) | ledger |
    log | off."""
    env = os.environ if environ is None else environ
    mode = (env.get("KEYTURN_AUDIT") or "auto").strip().lower()
    if mode not in ("auto", "ledger", "log", "off"):
        raise ConfigurationError(f"KEYTURN_AUDIT must be auto, ledger, log or off, not {mode!r}.")
    if mode == "off":
        return None
    if mode == "ledger" or (mode == "auto" and (env.get("KEYTURN_DATABASE_URL") or "").strip()):
        from rotation.ledger.db import Ledger, database_url

        return LedgerAuditSink(Ledger(database_url(env)), owns_ledger=True)
    return LogAuditSink()


_default: tuple[int, AuditSink | None] | None = None
_default_lock = threading.Lock()


def default_sink() -> AuditSink | None:
    """The process's sink from the environment (``require_role`` denials go here)."""
    global _default
    with _default_lock:
        if _default is None or _default[0] != os.getpid():
            _default = (os.getpid(), sink_from_env())
        return _default[1]


def reset_default_sink() -> None:
    global _default
    with _default_lock:
        if _default is not None and _default[0] == os.getpid() and _default[1] is not None:
            _default[1].close()
        _default = None


def record_denial(
    sink: AuditSink | None, exc: RoleDenied, action: str, secret: str | None = None
) -> None:
    """Audit a denial; a failure to do so is logged (the operation is refused either way)."""
    event = AuditEvent(
        action="permission.denied",
        actor=exc.principal,
        outcome="denied",
        secret=secret[:200] if secret else None,
        detail=f"{action}; needs {exc.needed}"[:_DETAIL_CHARS],
    )
    if sink is None:
        log.warning(
            "permission denied: %s may not %s",
            event.actor,
            action,
            extra={"action": "permission.denied", "actor": event.actor, "secret": event.secret},
        )
        return
    try:
        sink.write(event)
    except KeyturnError as failure:
        log.error("denial not audited: %s", failure.message)


@dataclass
class _Note:
    """What an audited block learns on the way (the version id it wrote or read)."""

    version_id: str | None = None
    detail: str | None = None


class Auditor:
    """The SecretsManager's audit helper: reads (fail open) and writes (fail closed: a
    ``started`` record must be written before the backend is touched)."""

    def __init__(self, sink: AuditSink | None) -> None:
        self.sink = sink

    def _event(self, action: str, secret: str | None, outcome: str, note: _Note) -> AuditEvent:
        return AuditEvent(
            action=action,
            actor=roles.current_principal().name,
            outcome=outcome,
            secret=secret,
            version_id=note.version_id,
            detail=note.detail[:_DETAIL_CHARS] if note.detail else None,
            at=datetime.now(UTC),
        )

    def _finish(self, action: str, secret: str | None, outcome: str, note: _Note) -> None:
        assert self.sink is not None
        try:
            self.sink.write(self._event(action, secret, outcome, note))
        except KeyturnError as failure:
            log.error(
                "audit record not written: %s",
                failure.message,
                extra={"action": "audit.write_failed", "secret": secret},
            )

    @contextmanager
    def read(
        self, action: str, secret: str | None = None, detail: str | None = None
    ) -> Iterator[_Note]:
        """Record the outcome after the block; a failure to record is logged, not raised."""
        note = _Note(detail=detail)
        if self.sink is None:
            yield note
            return
        try:
            yield note
        except BaseException as exc:
            self._finish(action, secret, error_outcome(exc), note)
            raise
        self._finish(action, secret, "ok", note)

    @contextmanager
    def write(
        self, action: str, secret: str | None = None, detail: str | None = None
    ) -> Iterator[_Note]:
        """Record ``started`` before the block (raising :class:`AuditWriteFailed` if that fails,
        so nothing is done unaudited), then the outcome after it."""
        note = _Note(detail=detail)
        if self.sink is None:
            yield note
            return
        self.sink.write(self._event(action, secret, "started", note))
        try:
            yield note
        except BaseException as exc:
            self._finish(action, secret, error_outcome(exc), note)
            raise
        self._finish(action, secret, "ok", note)


_ERROR_CLASS = re.compile(r"^([A-Z][A-Za-z0-9_]*)(?::|$)")


def transition_event(
    run: Run,
    to_state: str,
    step: str,
    outcome: str,
    message: str | None,
    at: datetime,
    values: Mapping[str, object] | None = None,
) -> AuditEvent:
    """The ``run.transition`` record of a run moving to ``to_state`` (engine ``_commit``);
    ``values`` are the run columns the transition sets (its new ``to_version``, if any)."""
    version = (values or {}).get("to_version") or run.to_version
    failed = outcome != "ok"
    detail = f"{run.state} -> {to_state} (step {step})"
    if failed and message:
        detail += f": {message}"
    match = _ERROR_CLASS.match(message or "") if failed else None
    return AuditEvent(
        action="run.transition",
        actor=run.actor,
        outcome=f"error:{match.group(1) if match else 'RotationError'}" if failed else "ok",
        secret=run.secret,
        version_id=version if isinstance(version, str) else None,
        run_id=run.id,
        detail=detail[:_DETAIL_CHARS],
        at=at,
    )


# --- the chain --------------------------------------------------------------------------------


def record_hash(record: AuditRecord) -> str:
    """SHA-256 of the record's canonical JSON: every field but ``id`` and ``hash``."""
    fields = {
        "v": 1,
        "seq": record.seq,
        "at": record.at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "actor": record.actor,
        "action": record.action,
        "secret": record.secret,
        "version_id": record.version_id,
        "run_id": record.run_id,
        "outcome": record.outcome,
        "detail": record.detail,
        "prev_hash": record.prev_hash,
    }
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def append(session: Session, event: AuditEvent) -> None:
    """Append ``event`` as the next record, in ``session``'s transaction.

    Postgres: one statement (:func:`append_sql`) moves the chain's head row and inserts the
    record; the head's row lock orders appenders. SQLite: the database write lock is taken
    first, then the last record is read, so two writers never fork the chain."""
    from sqlalchemy import text

    if session.get_bind().dialect.name == "postgresql":
        session.execute(text(f"WITH {append_sql()} SELECT 1"), append_params(event))
        return
    _append_locked(session, event)


#: The canonical JSON of :func:`record_hash`, built by Postgres from the head row (``seq``,
#: ``hash``: the previous record) and the ``a_*`` parameters; to_json escapes strings as
#: Python's ``json.dumps(ensure_ascii=False)`` does (tests/integration/test_audit.py checks).
_CANONICAL_SQL = """'{"action":' || to_json(CAST(:a_action AS text))::text
 || ',"actor":' || to_json(CAST(:a_actor AS text))::text
 || ',"at":"' || to_char(CAST(:a_at AS timestamptz) AT TIME ZONE 'UTC',
                         'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') || '"'
 || ',"detail":' || COALESCE(to_json(CAST(:a_detail AS text))::text, 'null')
 || ',"outcome":' || to_json(CAST(:a_outcome AS text))::text
 || ',"prev_hash":' || to_json(hash)::text
 || ',"run_id":' || COALESCE(CAST(CAST(:a_run_id AS bigint) AS text), 'null')
 || ',"secret":' || COALESCE(to_json(CAST(:a_secret AS text))::text, 'null')
 || ',"seq":' || CAST(seq + 1 AS text)
 || ',"v"\\:1,"version_id":' || COALESCE(to_json(CAST(:a_version_id AS text))::text, 'null')
 || '}'"""


def append_sql(when: str = "") -> str:
    """Postgres: the CTEs ``audit_h`` and ``audit_a`` of a ``WITH`` that appends one record
    (parameters from :func:`append_params`), only if the SQL condition ``when`` holds.

    The head row's ``UPDATE`` waits for a concurrent append to commit and then reads its new
    head, so each record links to the one before it; the hash is the same SHA-256 of the same
    canonical JSON that :func:`record_hash` (and so :func:`verify`) computes."""
    condition = f" AND {when}" if when else ""
    return f"""audit_h AS (
  UPDATE audit_head SET seq = seq + 1, prev_hash = hash,
    hash = encode(sha256(convert_to({_CANONICAL_SQL}, 'UTF8')), 'hex')
  WHERE id = 1{condition}
  RETURNING seq, prev_hash, hash
), audit_a AS (
  INSERT INTO audit_records
    (seq, at, actor, action, secret, version_id, run_id, outcome, detail, prev_hash, hash)
  SELECT seq, CAST(:a_at AS timestamptz), :a_actor, :a_action, :a_secret, :a_version_id,
    CAST(:a_run_id AS bigint), :a_outcome, :a_detail, prev_hash, hash
  FROM audit_h
)"""


def append_params(event: AuditEvent) -> dict[str, object]:
    """The ``a_*`` parameters of :func:`append_sql` for ``event`` (fields cut to their size)."""
    return {
        "a_at": (event.at or datetime.now(UTC)).astimezone(UTC),
        "a_actor": event.actor[:200],
        "a_action": event.action[:40],
        "a_secret": event.secret[:200] if event.secret else None,
        "a_version_id": event.version_id[:200] if event.version_id else None,
        "a_run_id": event.run_id,
        "a_outcome": event.outcome[:80],
        "a_detail": event.detail[:_DETAIL_CHARS] if event.detail else None,
    }


def _append_locked(session: Session, event: AuditEvent) -> None:
    """SQLite: take the write lock, read the last record, insert the next one."""
    from sqlalchemy import select, text

    from rotation.ledger.models import AuditRecord

    session.execute(text("UPDATE audit_records SET seq = seq WHERE 1 = 0"))
    last = session.execute(
        select(AuditRecord.seq, AuditRecord.hash).order_by(AuditRecord.seq.desc()).limit(1)
    ).first()
    params = append_params(event)
    record = AuditRecord(
        seq=last[0] + 1 if last else 1,
        at=params["a_at"],
        actor=params["a_actor"],
        action=params["a_action"],
        secret=params["a_secret"],
        version_id=params["a_version_id"],
        run_id=event.run_id,
        outcome=params["a_outcome"],
        detail=params["a_detail"],
        prev_hash=last[1] if last else GENESIS_HASH,
    )
    record.hash = record_hash(record)
    session.add(record)
    session.flush()


@dataclass(frozen=True)
class Problem:
    """A broken link: ``kind`` is edited | deleted | inserted."""

    id: int
    seq: int
    kind: str
    message: str

    def __str__(self) -> str:
        return f"record id={self.id} seq={self.seq}: {self.kind}: {self.message}"


@dataclass
class VerifyReport:
    records: int = 0
    head_seq: int = 0
    head_hash: str = GENESIS_HASH
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify(session: Session) -> VerifyReport:
    """Walk the chain in ``seq`` order and report every broken link, naming the record."""
    from sqlalchemy import select

    from rotation.ledger.models import AuditRecord

    report = VerifyReport()
    prev: AuditRecord | None = None
    linked_from: dict[str, int] = {}  # prev_hash -> seq of the record that links to it
    seen: dict[str, int] = {GENESIS_HASH: 0}  # hash -> seq
    rows = session.scalars(
        select(AuditRecord)
        .order_by(AuditRecord.seq, AuditRecord.id)
        .execution_options(yield_per=1000)
    )
    for record in rows:
        problem = _check(record, prev, linked_from, seen)
        if problem is not None:
            report.problems.append(Problem(record.id, record.seq, *problem))
        linked_from.setdefault(record.prev_hash, record.seq)
        seen.setdefault(record.hash, record.seq)
        report.records += 1
        report.head_seq, report.head_hash = record.seq, record.hash
        prev = record
        session.expunge(record)
    return report


def _check(
    record: AuditRecord,
    prev: AuditRecord | None,
    linked_from: dict[str, int],
    seen: dict[str, int],
) -> tuple[str, str] | None:
    expected_seq = prev.seq + 1 if prev else 1
    expected_prev = prev.hash if prev else GENESIS_HASH
    if record.seq < expected_seq:
        return "inserted", f"a second record with seq {record.seq}"
    if record.prev_hash in linked_from:
        other = linked_from[record.prev_hash]
        return "inserted", f"links to the same predecessor as seq {other} (a fork)"
    if record.seq > expected_seq:
        missing = (
            f"seq {expected_seq}"
            if record.seq == expected_seq + 1
            else f"seq {expected_seq}..{record.seq - 1}"
        )
        return "deleted", f"{missing} missing before this record"
    if record_hash(record) != record.hash:
        return "edited", "its contents do not match its hash (edited, or forged)"
    if record.prev_hash != expected_prev:
        target = seen.get(record.prev_hash)
        if target is not None:
            return "inserted", f"links back to seq {target}, not to seq {expected_seq - 1}"
        return "inserted", (
            f"its prev_hash matches no record: it was inserted, or seq {expected_seq - 1} "
            "was edited and re-hashed"
        )
    return None


def head(session: Session) -> tuple[int, str]:
    """The newest record's ``seq`` and ``hash`` (0 and the genesis hash: no record yet)."""
    from sqlalchemy import select

    from rotation.ledger.models import AuditRecord

    last = session.execute(
        select(AuditRecord.seq, AuditRecord.hash).order_by(AuditRecord.seq.desc()).limit(1)
    ).first()
    return (last[0], last[1]) if last else (0, GENESIS_HASH)


def tail(
    session: Session, limit: int = 20, secret: str | None = None, after_seq: int | None = None
) -> list[AuditRecord]:
    """The last ``limit`` records (or those after ``after_seq``), oldest first."""
    from sqlalchemy import select

    from rotation.ledger.models import AuditRecord

    query = select(AuditRecord)
    if secret is not None:
        query = query.where(AuditRecord.secret == secret)
    if after_seq is not None:
        query = query.where(AuditRecord.seq > after_seq)
    rows = session.scalars(query.order_by(AuditRecord.seq.desc()).limit(limit)).all()
    return list(reversed(rows))
