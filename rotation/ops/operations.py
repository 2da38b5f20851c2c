"""What the everyday CLI asks of the ledger beyond presentation: status, run queries, rollback,
resolve.

Status says, for monitoring, which secrets need a human: overdue (the dispatcher did not start a
due rotation), stalled (an open run shows no progress: no event, no wait ending), or a run in
``needs_attention``. Times are the database's (the runtime's clock).
``rollback_secret`` re-promotes the previous version of a secret whose run promoted a new one
and has not started retiring the old one, then ends the run in ``failed``. ``resolve_secret``
is the way out of ``needs_attention``: retry the run from where it stopped, or abandon it
(rolled back where safe); both go through the engine.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select

from rotation.access.guard import authorize_audited
from rotation.access.roles import Permission, acting_as
from rotation.config import EngineSettings
from rotation.errors import (
    ConfigurationError,
    NothingToResolve,
    NothingToRollBack,
    VersionConflict,
)
from rotation.ledger.models import PolicyRow, Run, RunEvent, Schedule
from rotation.names import validate_name
from rotation.run.engine import Engine
from rotation.run.runtime import Runtime
from rotation.run.states import ACTIVE_STATES, FINAL_STATES, RunState
from rotation.run.steps import FAILED_RETRY_DELAY
from rotation.scheduler.triggers import matching_secrets

__all__ = [
    "RESOLVE_ACTIONS",
    "Resolved",
    "RolledBack",
    "StatusRow",
    "Thresholds",
    "find_runs",
    "get_run",
    "matching_secrets",
    "provider_of",
    "resolve_secret",
    "rollback_secret",
    "run_events",
    "status_rows",
]

#: Added to two dispatcher ticks before a due secret counts as overdue: a slow tick, clock
#: skew between this host and the ledger, a worker busy with a long step.
OVERDUE_SLACK = timedelta(minutes=5)


@dataclass(frozen=True)
class Thresholds:
    """How late is too late: for a due secret to start, and for an open run to move."""

    tolerance: timedelta
    stall_after: timedelta

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, tolerance: timedelta | None = None
    ) -> Thresholds:
        """Two ``KEYTURN_TICK_SECONDS`` plus 5 minutes; a run stalls after its lease expired,
        the redelivery delay passed, and that tolerance again."""
        settings = EngineSettings.from_env(environ)
        if tolerance is None:
            tolerance = 2 * settings.tick + OVERDUE_SLACK
        return cls(tolerance, settings.lease + settings.redeliver + tolerance)


@dataclass(frozen=True)
class StatusRow:
    """One scheduled secret as ``keyturn status`` shows it; ``problem`` set = exit status 2."""

    secret: str
    provider: str
    policy: str
    paused: bool
    last_rotated_at: datetime | None
    next_due_at: datetime | None
    #: The latest run's state, or ``idle`` when the secret was never rotated by a run.
    state: str
    run_id: int | None
    #: now - last_rotated_at.
    age: timedelta | None
    #: ``overdue``, ``stalled`` or ``needs_attention``; None when all is well.
    problem: str | None = None
    #: How long past due (overdue) or without progress (stalled).
    late: timedelta | None = None
    #: The latest run's wait (retire grace, backoff) and error, for the note.
    waiting_until: datetime | None = None
    last_error: str | None = None
    #: When the current credential expires, for kinds whose credentials do (certificates).
    expires_at: datetime | None = None

    @property
    def active(self) -> bool:
        return self.run_id is not None and RunState(self.state) in ACTIVE_STATES


def status_rows(runtime: Runtime, now: datetime, thresholds: Thresholds) -> list[StatusRow]:
    """Every scheduled secret with its policy and latest run, assessed at ``now``."""
    latest = select(Run.secret, func.max(Run.id).label("run_id")).group_by(Run.secret).subquery()
    # progress is the run's last event (a step, a retry, a wait), not its last lease take
    last_event = select(func.max(RunEvent.at)).where(RunEvent.run_id == Run.id).scalar_subquery()
    with runtime.ledger.sessions() as session:
        found = session.execute(
            select(Schedule, PolicyRow, Run, last_event)
            .join(PolicyRow, PolicyRow.name == Schedule.policy_name)
            .outerjoin(latest, latest.c.secret == Schedule.secret)
            .outerjoin(Run, Run.id == latest.c.run_id)
            .where(Schedule.removed_at.is_(None), PolicyRow.removed_at.is_(None))
            .order_by(Schedule.secret)
        ).all()
    rows = []
    for schedule, policy, run, event_at in found:
        last = schedule.last_rotated_at
        problem, late = _assess(schedule, policy, run, event_at, now, thresholds)
        rows.append(
            StatusRow(
                secret=schedule.secret,
                provider=policy.spec.get("provider") or runtime.default_provider,
                policy=policy.name,
                paused=policy.paused,
                last_rotated_at=last,
                next_due_at=schedule.next_due_at,
                state=run.state if run is not None else "idle",
                run_id=run.id if run is not None else None,
                age=now - last if last is not None else None,
                problem=problem,
                late=late,
                waiting_until=run.next_attempt_at if run is not None else None,
                last_error=run.last_error if run is not None else None,
                expires_at=schedule.expires_at,
            )
        )
    return rows


def _assess(
    schedule: Schedule,
    policy: PolicyRow,
    run: Run | None,
    event_at: datetime | None,
    now: datetime,
    limits: Thresholds,
) -> tuple[str | None, timedelta | None]:
    state = RunState(run.state) if run is not None else None
    if state is RunState.NEEDS_ATTENTION:
        return "needs_attention", None
    if run is not None and state not in FINAL_STATES:
        progress = event_at or run.created_at
        if event_at is not None and event_at.tzinfo is None:  # a raw aggregate on SQLite
            progress = event_at.replace(tzinfo=now.tzinfo)
        moved = max(progress, run.next_attempt_at or progress)
        stalled = now - moved > limits.stall_after
        return ("stalled", now - moved) if stalled else (None, None)
    if policy.paused:
        return None, None
    if schedule.next_due_at is None:  # no run holds it, yet nothing will start one
        return "overdue", None
    late = now - schedule.next_due_at
    return ("overdue", late) if late > limits.tolerance else (None, None)


# --- run queries -----------------------------------------------------------------------------


def find_runs(
    runtime: Runtime, *, secret: str | None = None, state: str | None = None, limit: int = 50
) -> list[Run]:
    """The newest runs first, optionally of one secret and/or in one state."""
    query = select(Run).order_by(Run.id.desc()).limit(limit)
    if secret is not None:
        query = query.where(Run.secret == secret)
    if state is not None:
        query = query.where(Run.state == state)
    with runtime.ledger.sessions() as session:
        return list(session.scalars(query))


def get_run(runtime: Runtime, run_id: int) -> Run | None:
    with runtime.ledger.sessions() as session:
        return session.get(Run, run_id)


def run_events(runtime: Runtime, run_ids: Sequence[int], after: int = 0) -> list[RunEvent]:
    """The events of ``run_ids`` with an id above ``after``, oldest first."""
    if not run_ids:
        return []
    with runtime.ledger.sessions() as session:
        return list(
            session.scalars(
                select(RunEvent)
                .where(RunEvent.run_id.in_(run_ids), RunEvent.id > after)
                .order_by(RunEvent.id)
            )
        )


def provider_of(runtime: Runtime, secret: str) -> str:
    """The backend alias of ``secret``: its policy's provider, else SECRETS_PROVIDER."""
    with runtime.ledger.sessions() as session:
        spec = session.scalar(
            select(PolicyRow.spec)
            .join(Schedule, Schedule.policy_name == PolicyRow.name)
            .where(Schedule.secret == secret)
        )
    alias = spec.get("provider") if isinstance(spec, dict) else None
    return alias or runtime.default_provider


# --- rollback --------------------------------------------------------------------------------


@dataclass(frozen=True)
class RolledBack:
    """The run being rolled back, from which state, and where it is now (``rolling_back``: the
    caller enqueues its step, which tells consumers before the new credential is revoked)."""

    secret: str
    run_id: int
    from_state: str
    state: str
    note: str
    enqueue: bool


_ROLLBACK_STATES = (RunState.PROMOTED.value, RunState.RESTARTED.value)


def rollback_secret(
    runtime: Runtime,
    secret: str,
    actor: str,
    *,
    retry_after: timedelta = FAILED_RETRY_DELAY,
    lease: timedelta = timedelta(minutes=5),
) -> RolledBack:
    """Start rolling ``secret`` back to its previous version while that is still valid, as
    ``actor`` (who needs the ``rotate`` permission; a denial is audited).

    Possible while the secret's active run is ``promoted``, or ``restarted`` before its retire
    step tried anything (``attempt`` 0: the old credential is untouched). The engine moves the
    run to ``rolling_back`` (its lease's compare-and-set, so no step runs meanwhile); the
    workers then make the previous version current, announce it through the policy's restart
    strategy and revoke the new credential once consumers moved back; the run ends ``failed``
    and the schedule tries the secret again after ``retry_after``.
    """
    validate_name(secret)
    with acting_as(actor):
        authorize_audited(Permission.ROTATE, "rollback", secret)
    run = _active_run(runtime, secret)
    if run is None or run.state not in _ROLLBACK_STATES or _retire_started(run):
        raise NothingToRollBack(_refusal(runtime, secret, run))
    row = _policy_row(runtime, run)
    provider = runtime.provider(run.provider)
    if provider.read(secret).token != run.token:
        raise NothingToRollBack(
            f"nothing to roll back: the current version of {secret!r} is no longer the one "
            f"run {run.id} promoted (it was written since); nothing was changed"
        )
    engine = Engine(runtime, lease=lease)
    try:
        advanced = engine.roll_back(run.id, actor, retry_after, expected=RunState(run.state))
    except NothingToResolve:
        with runtime.ledger.sessions() as session:
            fresh = session.get(Run, run.id)
        if fresh is not None and fresh.state == run.state:
            raise VersionConflict(
                f"run {run.id} of {secret!r} is being advanced by "
                f"{fresh.lease_owner or 'a worker'} right now; try again in a few seconds"
            ) from None
        still_active = fresh if fresh is not None and fresh.state not in FINAL_STATES else None
        raise NothingToRollBack(_refusal(runtime, secret, still_active)) from None
    note = (
        "rolling back: the previous version is made current again and announced through "
        f"restart {runtime.policy(row).restart.strategy!r}; the new credential is revoked once "
        "consumers moved back"
    )
    state = advanced.state.value if advanced.state is not None else run.state
    return RolledBack(secret, run.id, run.state, state, note, advanced.enqueue)


def _policy_row(runtime: Runtime, run: Run) -> PolicyRow:
    with runtime.ledger.sessions() as session:
        row = session.get(PolicyRow, run.policy_name)
    if row is None:
        raise ConfigurationError(
            f"policy {run.policy_name!r} of run {run.id} no longer exists; nothing was changed"
        )
    return row


def _active_run(runtime: Runtime, secret: str) -> Run | None:
    with runtime.ledger.sessions() as session:
        return session.scalars(
            select(Run).where(Run.secret == secret, Run.state.in_([s.value for s in ACTIVE_STATES]))
        ).first()


def _retire_started(run: Run) -> bool:
    # a retire try counts in ``attempt``; the grace wait gives its attempt back
    return run.state == RunState.RESTARTED.value and run.attempt > 0


def _refusal(runtime: Runtime, secret: str, active: Run | None) -> str:
    if active is not None:
        if active.state == RunState.NEEDS_ATTENTION.value:
            return (
                f"nothing to roll back: run {active.id} of {secret!r} needs attention "
                f"({active.last_error or 'no error recorded'}); resolve it by hand"
            )
        if _retire_started(active) or active.state == RunState.RETIRED.value:
            return (
                f"nothing to roll back: run {active.id} of {secret!r} has started retiring the "
                "previous credential, which may be partly revoked; let it finish or resolve it "
                "by hand"
            )
        if active.state not in _ROLLBACK_STATES:
            return (
                f"nothing to roll back yet: run {active.id} of {secret!r} is in {active.state}, "
                "before promotion, so the new value is not current (a failing step rolls "
                "itself back)"
            )
        return f"run {active.id} of {secret!r} changed while we looked; try again"
    runs = find_runs(runtime, secret=secret, limit=1)
    if not runs:
        return f"nothing to roll back: {secret!r} has never been rotated by Keyturn"
    last = runs[0]
    if last.state == RunState.SUCCEEDED.value:
        retired = [e for e in run_events(runtime, [last.id]) if e.to_state == "retired"]
        at = retired[-1].at if retired else last.finished_at
        return (
            f"nothing to roll back: the last rotation of {secret!r} (run {last.id}) finished "
            f"and its previous credential was retired at {_stamp(at)}"
        )
    return (
        f"nothing to roll back: the last rotation of {secret!r} (run {last.id}) ended "
        f"{last.state} at {_stamp(last.finished_at)} ({last.last_error or 'no error recorded'})"
    )


def _stamp(at: datetime | None) -> str:
    return f"{at:%Y-%m-%d %H:%M:%S} UTC" if at is not None else "an unknown time"


# --- resolve ---------------------------------------------------------------------------------

#: What ``resolve_secret`` can do with a run that needs attention.
RESOLVE_ACTIONS = ("retry", "abandon")


@dataclass(frozen=True)
class Resolved:
    """What became of the run: ``state`` it is in now, the engine's note, and for ``retry``
    whether the caller must enqueue its next step."""

    secret: str
    run_id: int
    action: str
    from_state: str
    state: str
    note: str
    enqueue: bool


def resolve_secret(
    runtime: Runtime,
    secret: str,
    actor: str,
    *,
    action: str,
    retry_after: timedelta = FAILED_RETRY_DELAY,
) -> Resolved:
    """Retry or abandon the run of ``secret`` that needs attention, as ``actor`` (who needs the
    ``rotate`` permission; a denial is audited). ``retry`` resumes it from the step it stopped
    at (the caller enqueues ``advance``); ``abandon`` rolls it back where safe and ends it
    ``failed``, the schedule trying again after ``retry_after``. Both go through the engine,
    which records the event and an audit record (``run.retry`` / ``run.abandon``)."""
    validate_name(secret)
    if action not in RESOLVE_ACTIONS:
        raise ConfigurationError(f"Unknown action {action!r}; use {' or '.join(RESOLVE_ACTIONS)}.")
    with acting_as(actor):
        authorize_audited(Permission.ROTATE, f"resolve --{action}", secret)
    run = _active_run(runtime, secret)
    if run is None or run.state != RunState.NEEDS_ATTENTION.value:
        raise NothingToResolve(_nothing_to_resolve(runtime, secret, run))
    engine = Engine(runtime, lease=EngineSettings.from_env(runtime.environ).lease)
    stopped = engine.stopped_state(run).value
    if action == "retry":
        advanced, note = engine.retry_run(run.id, actor)
        state = advanced.state.value if advanced.state is not None else run.state
        return Resolved(secret, run.id, action, stopped, state, note, advanced.enqueue)
    note = engine.abandon_run(run.id, actor, retry_after)
    return Resolved(secret, run.id, action, stopped, RunState.FAILED.value, note, False)


def _nothing_to_resolve(runtime: Runtime, secret: str, active: Run | None) -> str:
    if active is not None:
        return (
            f"nothing to resolve: {secret!r} needs no attention; its run {active.id} is "
            f"{active.state} (see `keyturn history {secret}`)"
        )
    runs = find_runs(runtime, secret=secret, limit=1)
    if not runs:
        return f"nothing to resolve: {secret!r} needs no attention (never rotated by Keyturn)"
    return (
        f"nothing to resolve: {secret!r} needs no attention; its last run {runs[0].id} ended "
        f"{runs[0].state}"
    )
