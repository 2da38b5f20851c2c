"""Due-ness: when a secret's next rotation is due under its policy. All times are aware UTC.

Everything here is a pure function of its arguments, so two beats (or a beat before and
after a restart) always compute the same due time.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from croniter import croniter

from rotation.policy import DAYS, Policy

__all__ = ["in_window", "is_due", "jitter_for", "next_due", "next_window_start", "renewal_time"]


def next_due(
    policy: Policy,
    secret: str,
    last_rotated_at: datetime | None,
    now: datetime,
    expires_at: datetime | None = None,
) -> datetime:
    """When ``secret`` is next due: after its interval or cron firing, plus jitter, in the window.

    A secret never rotated is due ``now`` (no jitter: added to a moving ``now`` it would
    postpone the first rotation at every tick). The result may be in the past; the window only
    ever moves it forward.

    With ``renew_before``, ``expires_at`` (the current credential's expiry, when known) makes
    it due at :func:`renewal_time`, or at the interval/cron time if that comes first; a secret
    never rotated whose expiry is known waits for its renewal time. An unknown expiry counts
    only without ``every``/``cron``: due (the dispatcher reads the expiry before it claims).
    """
    now = _utc(now, "now")
    renew_before = policy.schedule.renew_before
    if last_rotated_at is None:
        if renew_before is not None and expires_at is not None and _periodic(policy) is None:
            return next_window_start(policy, _utc(expires_at, "expires_at") - renew_before)
        return next_window_start(policy, now)
    last = _utc(last_rotated_at, "last_rotated_at")
    candidates = []
    periodic = _periodic(policy)
    if periodic is not None:
        candidates.append(periodic(last))
    if renew_before is not None:
        if expires_at is not None:
            candidates.append(renewal_time(_utc(expires_at, "expires_at"), renew_before, last))
        elif periodic is None:
            candidates.append(last)
    base = min(candidates)
    return next_window_start(policy, base + jitter_for(policy, secret, last))


def renewal_time(expires_at: datetime, renew_before: timedelta, last: datetime) -> datetime:
    """``renew_before`` ahead of ``expires_at``, but never before two thirds of the life the
    credential had left at its last rotation: a certificate shorter-lived than ``renew_before``
    (an issuer that caps the TTL) renews at 2/3 of its life instead of at once, in a loop."""
    renewal = expires_at - renew_before
    if expires_at > last:
        renewal = max(renewal, last + (expires_at - last) * 2 / 3)
    return renewal


def _periodic(policy: Policy) -> Callable[[datetime], datetime] | None:
    if policy.schedule.every is not None:
        every = policy.schedule.every
        return lambda last: last + every
    if policy.schedule.cron is not None:
        cron = policy.schedule.cron
        return lambda last: croniter(cron, last).get_next(datetime).astimezone(UTC)
    return None


def is_due(policy: Policy, secret: str, last_rotated_at: datetime | None, now: datetime) -> bool:
    """True if a rotation of ``secret`` may start at ``now``: not paused, due, inside the window."""
    now = _utc(now, "now")
    return (
        not policy.paused
        and next_due(policy, secret, last_rotated_at, now) <= now
        and in_window(policy, now)
    )


def jitter_for(policy: Policy, secret: str, last_rotated_at: datetime | None) -> timedelta:
    """A delay in ``[0, policy.jitter)`` derived from the secret and its last rotation time."""
    span = policy.jitter // timedelta(microseconds=1)
    if span <= 0:
        return timedelta(0)
    stamp = "never" if last_rotated_at is None else _utc(last_rotated_at, "last").isoformat()
    digest = hashlib.sha256(f"{secret}\0{stamp}".encode()).digest()
    return timedelta(microseconds=int.from_bytes(digest[:8], "big") % span)


def in_window(policy: Policy, at: datetime) -> bool:
    """True if ``at`` is inside the policy's window (always, without a window)."""
    at = _utc(at, "at")
    return next_window_start(policy, at) == at


def next_window_start(policy: Policy, after: datetime) -> datetime:
    """The first moment at or after ``after`` when a rotation may start.

    ``after`` itself when it is inside the window (or there is no window), else the window's
    next opening. ``days`` name the day a window opens: ``fri 22:00-02:00`` runs into Saturday.
    """
    after = _utc(after, "after")
    window = policy.window
    if window is None:
        return after
    length = window.length
    # Yesterday's overnight window may still be open; a week and a day covers every case.
    for offset in range(-1, 8):
        day = after.date() + timedelta(days=offset)
        if DAYS[day.weekday()] not in window.days:
            continue
        opening = datetime.combine(day, window.opens, tzinfo=UTC)
        if opening <= after < opening + length:
            return after
        if opening >= after:
            return opening
    raise AssertionError("a valid window opens at least once a week")  # pragma: no cover


def _utc(at: datetime, name: str) -> datetime:
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"{name} must be a timezone-aware datetime, not naive {at.isoformat()}")
    return at.astimezone(UTC)
