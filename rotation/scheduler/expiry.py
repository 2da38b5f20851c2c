"""When each current credential expires, for kinds whose credentials do (certificates).

The dispatcher reads the current value of such a secret through its backend and records the
kind's ``expires_at(value)`` in ``schedules.expires_at``: for a schedule never read, one rotated
since its last read, and every ``refresh`` otherwise (a certificate replaced by hand is noticed).
With ``renew_before`` the schedule's next due time follows (:func:`rotation.policy.due.next_due`),
and such a schedule is not claimed until its expiry was read since its last rotation: the
engine, which ends a run without reading the new value, leaves a provisional due time.

Each write is a compare-and-set on ``last_rotated_at``, so a rotation that ended while the
value was being read is read again at the next tick, never recorded with the old expiry. The
value itself is never kept or logged; a read that fails is logged with its error class only.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import or_, select, update

from rotation.errors import ConfigurationError
from rotation.ledger.models import PolicyRow, Schedule
from rotation.policy import Policy
from rotation.policy.due import next_due
from rotation.rotators.registry import expiry_reader
from rotation.run.runtime import Runtime
from rotation.values import SecretValue

__all__ = [
    "EXPIRY_REFRESH",
    "ExpiringPolicy",
    "expiring_policies",
    "needs_read",
    "refresh_expiries",
    "waits_for_expiry",
]

log = logging.getLogger("keyturn.dispatcher")

#: How often the expiry of an unchanged secret is read again.
EXPIRY_REFRESH = timedelta(minutes=10)


@dataclass(frozen=True)
class ExpiringPolicy:
    """A policy whose kind's credentials expire, and the kind's reader."""

    policy: Policy
    read: Callable[[SecretValue], datetime | None]

    @property
    def gates_claims(self) -> bool:
        """Whether due-ness depends on the expiry (``renew_before``)."""
        return self.policy.schedule.renew_before is not None


def expiring_policies(runtime: Runtime, rows: list[PolicyRow]) -> dict[str, ExpiringPolicy]:
    """The policies among ``rows`` whose kind has an expiry, by name."""
    found: dict[str, ExpiringPolicy] = {}
    for row in rows:
        try:
            policy = runtime.policy(row)
            reader = expiry_reader(policy.kind)
        except ConfigurationError:
            continue
        if reader is not None:
            found[row.name] = ExpiringPolicy(policy, reader)
    return found


def needs_read(expiry_checked_at: datetime | None, last_rotated_at: datetime | None) -> bool:
    """Whether a schedule's expiry was never read, or not since its last rotation."""
    if expiry_checked_at is None:
        return True
    # equal times: the read may have come first (a coarse clock, the embedded ledger's)
    return last_rotated_at is not None and expiry_checked_at <= last_rotated_at


def waits_for_expiry(
    policy: Policy, expiry_checked_at: datetime | None, last_rotated_at: datetime | None
) -> bool:
    """A due schedule that must not be claimed yet: its due time depends on an expiry that
    was not read since its last rotation (the next tick reads it first)."""
    if policy.schedule.renew_before is None:
        return False
    try:
        reader = expiry_reader(policy.kind)
    except ConfigurationError:
        return False
    return reader is not None and needs_read(expiry_checked_at, last_rotated_at)


def refresh_expiries(
    runtime: Runtime, now: datetime, *, refresh: timedelta = EXPIRY_REFRESH, batch: int = 200
) -> int:
    """Read and record the expiry of the schedules that need it; returns how many were read."""
    with runtime.ledger.sessions() as session:
        rows = list(session.scalars(select(PolicyRow).where(PolicyRow.removed_at.is_(None))))
        policies = expiring_policies(runtime, rows)
        if not policies:
            return 0
        stale = list(
            session.scalars(
                select(Schedule)
                .where(
                    Schedule.policy_name.in_(policies),
                    Schedule.removed_at.is_(None),
                    or_(
                        Schedule.expiry_checked_at.is_(None),
                        Schedule.expiry_checked_at <= Schedule.last_rotated_at,
                        Schedule.expiry_checked_at < now - refresh,
                    ),
                )
                .order_by(Schedule.expiry_checked_at.asc().nulls_first(), Schedule.secret)
                .limit(batch)
            )
        )
    for schedule in stale:
        _refresh_one(runtime, policies[schedule.policy_name], schedule, now)
    return len(stale)


def _refresh_one(
    runtime: Runtime, expiring: ExpiringPolicy, schedule: Schedule, now: datetime
) -> None:
    policy, secret = expiring.policy, schedule.secret
    values: dict[str, object] = {"expiry_checked_at": now}
    try:
        value = runtime.provider(policy.provider).read(secret).value
        expires_at = expiring.read(value)
    except Exception as exc:  # the backend is down, the secret is gone: try at the next refresh
        log.warning(
            "cannot read the expiry of %s: %s",
            secret,
            type(exc).__name__,
            extra={"action": "expiry.read_failed", "secret": secret},
        )
        expires_at = schedule.expires_at
    else:
        values["expires_at"] = expires_at
        if expires_at is None:
            log.warning(
                "the current value of %s holds no expiry its kind can read",
                secret,
                extra={"action": "expiry.unknown", "secret": secret},
            )
    same_rotation = (
        Schedule.last_rotated_at.is_(None)
        if schedule.last_rotated_at is None
        else Schedule.last_rotated_at == schedule.last_rotated_at
    )
    with runtime.ledger.transaction() as session:
        session.execute(
            update(Schedule)
            .where(Schedule.secret == secret, Schedule.policy_name == policy.name, same_rotation)
            .values(**values)
        )
        if expiring.gates_claims and "expires_at" in values:
            # a run holds the schedule when next_due_at is NULL: its end sets the next one
            session.execute(
                update(Schedule)
                .where(
                    Schedule.secret == secret,
                    Schedule.policy_name == policy.name,
                    Schedule.next_due_at.is_not(None),
                    same_rotation,
                )
                .values(
                    next_due_at=next_due(policy, secret, schedule.last_rotated_at, now, expires_at)
                )
            )
