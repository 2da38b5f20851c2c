"""Manual triggers: start a run now for one secret, or for every secret matching a pattern."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from rotation.access.guard import authorize_audited
from rotation.access.roles import Permission, acting_as
from rotation.errors import ConfigurationError, InvalidSecretName
from rotation.ledger.models import PolicyRow, Run, Schedule
from rotation.names import matches_pattern, validate_name
from rotation.run.runtime import Runtime
from rotation.run.states import ACTIVE_STATES, RunState
from rotation.scheduler.dispatcher import new_run

__all__ = ["TRIGGERS", "Triggered", "matching_secrets", "rotate_all", "rotate_now"]

#: Who asked for a run: the scheduler, a person (CLI), or a program (Celery/Flower API).
TRIGGERS = ("schedule", "manual", "api")


@dataclass(frozen=True)
class Triggered:
    """The run that now rotates ``secret``; ``created`` is False when one was already active
    (or, asked with ``since``, when one started since then and succeeded: state ``succeeded``)."""

    secret: str
    run_id: int
    created: bool
    state: str


def authorize_rotation(actor: str, permission: Permission, secret: str | None) -> None:
    """Check ``actor`` against the role bindings (when configured); audit a denial."""
    with acting_as(actor):
        authorize_audited(permission, permission.value, secret)


def rotate_now(
    runtime: Runtime,
    secret: str,
    *,
    actor: str,
    trigger: str = "manual",
    since: datetime | None = None,
) -> Triggered:
    """Start a run for ``secret`` now, or return the active one; never starts a second. With
    ``since``, a run that started at or after it and succeeded counts as done (returned, no
    new run): checked after the active run, so a run ending meanwhile is one or the other."""
    validate_name(secret)
    authorize_rotation(actor, Permission.ROTATE, secret)
    if trigger not in TRIGGERS:
        raise ConfigurationError(f"Unknown trigger {trigger!r}; use one of {', '.join(TRIGGERS)}.")
    now = runtime.clock()
    with runtime.ledger.transaction() as session:
        active = session.execute(
            select(Run.id, Run.state).where(
                Run.secret == secret, Run.state.in_([s.value for s in ACTIVE_STATES])
            )
        ).first()
        if active is not None:
            return Triggered(secret, active[0], False, active[1])
        if since is not None:
            done = session.scalar(
                select(func.max(Run.id)).where(
                    Run.secret == secret,
                    Run.created_at >= since,
                    Run.state == RunState.SUCCEEDED.value,
                )
            )
            if done is not None:
                return Triggered(secret, done, False, RunState.SUCCEEDED.value)
        schedule = session.execute(
            select(Schedule).where(Schedule.secret == secret).with_for_update()
        ).scalar_one_or_none()
        if schedule is None or schedule.removed_at is not None:
            # a secret created since the last glob re-listing (or one whose policy was removed):
            # adopt it now if a policy matches
            schedule = _adopt(runtime, session, secret, schedule)
        row = session.get(PolicyRow, schedule.policy_name)
        assert row is not None  # schedules cascade with their policy
        run = new_run(
            session,
            secret=secret,
            policy_row=row,
            policy=runtime.policy(row),
            trigger=trigger,
            actor=actor,
            now=now,
        )
        if run is None:  # a run started between our check and insert
            raced = session.execute(
                select(Run.id, Run.state).where(
                    Run.secret == secret, Run.state.in_([s.value for s in ACTIVE_STATES])
                )
            ).one()
            return Triggered(secret, raced[0], False, raced[1])
        schedule.next_due_at = None
        return Triggered(secret, run.id, True, run.state)


def _adopt(runtime: Runtime, session: Session, secret: str, removed: Schedule | None) -> Schedule:
    """The schedule of a secret no sync has seen yet (or whose schedule was removed, kept with
    its history), under the policy whose patterns match it (an exact name wins over a glob);
    the secret must exist in that policy's backend."""
    exact, globbed = [], []
    live = select(PolicyRow).where(PolicyRow.removed_at.is_(None)).order_by(PolicyRow.name)
    for row in session.scalars(live):
        policy = runtime.policy(row)
        if secret in policy.patterns:
            exact.append(row)
        elif policy.matches(secret):
            globbed.append(row)
    candidates = exact or globbed
    if len(candidates) != 1:
        detail = (
            f"policies {', '.join(r.name for r in candidates)} all match it"
            if candidates
            else "add it to a policy in schedules/*.yaml (check with `keyturn policies check`)"
        )
        raise ConfigurationError(f"No rotation policy governs secret {secret!r}: {detail}.")
    row = candidates[0]
    runtime.provider(runtime.policy(row).provider).read(secret)  # SecretNotFound if absent
    if removed is not None:
        removed.policy_name, removed.missing_since, removed.removed_at = row.name, None, None
        return removed
    schedule = Schedule(secret=secret, policy_name=row.name, next_due_at=None)
    session.add(schedule)
    session.flush()
    return schedule


def matching_secrets(runtime: Runtime, pattern: str) -> list[str]:
    """Scheduled secrets containing ``pattern``, or matching it as a glob."""
    if not pattern or any(ord(c) < 32 for c in pattern):
        raise InvalidSecretName("rotate_all needs a non-empty pattern without control characters.")
    with runtime.ledger.sessions() as session:
        names = session.scalars(
            select(Schedule.secret).where(Schedule.removed_at.is_(None)).order_by(Schedule.secret)
        ).all()
    return [n for n in names if matches_pattern(n, pattern)]


def rotate_all(
    runtime: Runtime,
    pattern: str,
    *,
    actor: str,
    trigger: str = "manual",
    since: datetime | None = None,
) -> list[Triggered]:
    """``rotate_now`` for every scheduled secret matching ``pattern`` (see ``matching_secrets``),
    each with ``since``."""
    authorize_rotation(actor, Permission.ROTATE_ALL, None)
    return [
        rotate_now(runtime, name, actor=actor, trigger=trigger, since=since)
        for name in matching_secrets(runtime, pattern)
    ]
