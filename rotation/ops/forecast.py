"""The rotation forecast behind ``keyturn plan``: every rotation due over a horizon, per day.

It flags what hurts in production: rotations of different secrets on one backend within minutes
of each other (Vault issue #18738: two roles meant to rotate months apart rotated seconds apart
and caused an outage), and days with more rotations than a budget. Pure: it takes the schedules
and a start time, reads no ledger, backend or clock.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from rotation.config import DEFAULT_DAILY_BUDGET
from rotation.policy import Policy
from rotation.policy.due import next_due, next_window_start

__all__ = [
    "COLLISION_GAP",
    "DEFAULT_BUDGET",
    "Collision",
    "DayLoad",
    "Forecast",
    "Rotation",
    "Scheduled",
    "find_collisions",
    "forecast",
    "rotations_of",
]

#: Rotations of two secrets on one backend closer than this are a collision.
COLLISION_GAP = timedelta(minutes=10)
#: Rotations per day before a day is flagged (``KEYTURN_DAILY_BUDGET`` overrides it in the CLI).
DEFAULT_BUDGET = DEFAULT_DAILY_BUDGET
#: A policy rotating every few seconds would forecast millions of rows: stop counting here.
MAX_PER_SECRET = 10_000


@dataclass(frozen=True)
class Scheduled:
    """One secret under one policy, as the ledger (or a policy file) knows it."""

    secret: str
    policy: Policy
    #: The backend alias the secret lives in.
    provider: str
    last_rotated_at: datetime | None = None
    #: The ledger's due time; None means "compute it from ``last_rotated_at``".
    next_due_at: datetime | None = None
    #: A run is rotating the secret now: the next rotation counts from the forecast's start.
    busy: bool = False
    #: When the current credential expires (kinds whose credentials do: certificates).
    expires_at: datetime | None = None

    @property
    def lifetime(self) -> timedelta | None:
        """How long a renewed credential is assumed to live: the current one's life since its
        last rotation (None when unknown)."""
        if self.expires_at is None or self.last_rotated_at is None:
            return None
        life = self.expires_at - self.last_rotated_at
        return life if life > timedelta(0) else None


@dataclass(frozen=True, order=True)
class Rotation:
    """One rotation the schedule will start."""

    at: datetime
    secret: str
    policy: str
    provider: str
    #: A renewal: the expiry of the credential it replaces (``renew_before`` policies).
    renews: datetime | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Collision:
    """Rotations of different secrets on one backend, each within the gap of the one before."""

    provider: str
    rotations: tuple[Rotation, ...]

    @property
    def secrets(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(r.secret for r in self.rotations))

    @property
    def start(self) -> datetime:
        return self.rotations[0].at

    @property
    def span(self) -> timedelta:
        return self.rotations[-1].at - self.rotations[0].at


@dataclass(frozen=True)
class DayLoad:
    """The rotations of one UTC day."""

    day: date
    rotations: tuple[Rotation, ...]
    over_budget: bool
    collisions: int = 0

    @property
    def by_provider(self) -> dict[str, int]:
        return dict(sorted(Counter(r.provider for r in self.rotations).items()))


@dataclass
class Forecast:
    """Every rotation from ``start`` to ``end``, the collisions and the days over budget."""

    start: datetime
    end: datetime
    budget: int
    rotations: list[Rotation] = field(default_factory=list)
    collisions: list[Collision] = field(default_factory=list)
    #: Secrets whose rotations were cut at :data:`MAX_PER_SECRET`.
    truncated: list[str] = field(default_factory=list)

    def days(self) -> list[DayLoad]:
        """Days with at least one rotation, in order."""
        clashes = Counter(c.start.date() for c in self.collisions)
        loads = []
        for day, group in itertools.groupby(self.rotations, key=lambda r: r.at.date()):
            rotations = tuple(group)
            over = len(rotations) > self.budget
            loads.append(DayLoad(day, rotations, over, clashes.get(day, 0)))
        return loads

    @property
    def over_budget(self) -> list[DayLoad]:
        return [d for d in self.days() if d.over_budget]

    @property
    def flagged(self) -> bool:
        return bool(self.collisions or self.over_budget)


def rotations_of(item: Scheduled, start: datetime, end: datetime) -> tuple[list[Rotation], bool]:
    """When ``item`` rotates in ``[start, end)``, as the dispatcher and engine would do it.

    An overdue secret starts at ``start`` (or its window's next opening); after each rotation
    the next due time counts from the run's end (the start plus the policy's ``retire_after``).
    Returns the rotations and whether they were cut at :data:`MAX_PER_SECRET`.
    """
    policy = item.policy
    if policy.paused:
        return [], False
    # with renew_before: the current expiry, then each renewal's (assumed to live as long)
    renewing = policy.schedule.renew_before is not None
    expires = item.expires_at if renewing else None
    life = item.lifetime if renewing else None
    if item.busy:
        expires = start + life if life is not None else None
        due = next_due(policy, item.secret, start, start, expires)
    elif item.next_due_at is not None:
        due = item.next_due_at
    else:
        due = next_due(policy, item.secret, item.last_rotated_at, start, expires)
    if due < start:
        due = next_window_start(policy, start)
    found: list[Rotation] = []
    while due < end:
        if len(found) == MAX_PER_SECRET:
            return found, True
        found.append(Rotation(due, item.secret, policy.name, item.provider, expires))
        finished = due + policy.retire_after
        periodic = policy.schedule.every is not None or policy.schedule.cron is not None
        if renewing and life is None and not periodic:
            break  # renew_before alone, and how long a new credential lives is unknown
        expires = due + life if life is not None else None
        due = next_due(policy, item.secret, finished, finished, expires)
    return found, False


def find_collisions(
    rotations: Iterable[Rotation], gap: timedelta = COLLISION_GAP
) -> list[Collision]:
    """Clusters of rotations on one backend, each within ``gap`` of the previous, that involve
    more than one secret; in time order."""
    by_provider: dict[str, list[Rotation]] = {}
    for rotation in sorted(rotations):
        by_provider.setdefault(rotation.provider, []).append(rotation)
    found: list[Collision] = []
    for provider, timeline in by_provider.items():
        cluster: list[Rotation] = []
        for rotation in timeline:
            if cluster and rotation.at - cluster[-1].at > gap:
                found.extend(_collision(provider, cluster))
                cluster = []
            cluster.append(rotation)
        found.extend(_collision(provider, cluster))
    return sorted(found, key=lambda c: (c.start, c.provider))


def _collision(provider: str, cluster: list[Rotation]) -> list[Collision]:
    if len({r.secret for r in cluster}) < 2:
        return []
    return [Collision(provider, tuple(cluster))]


def forecast(
    items: Iterable[Scheduled],
    start: datetime,
    days: int,
    *,
    budget: int = DEFAULT_BUDGET,
    gap: timedelta = COLLISION_GAP,
) -> Forecast:
    """The rotations of ``items`` over ``days`` days from ``start``, with what to worry about."""
    if days < 1:
        raise ValueError("days must be at least 1")
    end = start + timedelta(days=days)
    result = Forecast(start, end, budget)
    for item in items:
        rotations, cut = rotations_of(item, start, end)
        result.rotations.extend(rotations)
        if cut:
            result.truncated.append(item.secret)
    result.rotations.sort()
    result.collisions = find_collisions(result.rotations, gap)
    return result
