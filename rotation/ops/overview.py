"""What the dashboard shows, read from the ledger: secrets with their flags, a run's step
timeline, what needs a human (with the command that resolves it) and the forecast.

:class:`Overview` is the dashboard's only door to Keyturn: it holds the per-process resources
(the ledger, the policies' parsed specs) and answers plain data classes, never a value (the
ledger holds none). ``keyturn plan`` shares :func:`scheduled_secrets` with it.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select

from rotation.ledger.db import Ledger
from rotation.ledger.models import PolicyRow, Run, RunEvent, Schedule
from rotation.ops.forecast import COLLISION_GAP, Forecast, Scheduled, forecast
from rotation.ops.operations import StatusRow, Thresholds, find_runs, get_run, status_rows
from rotation.run.runtime import Runtime
from rotation.run.states import ACTIVE_STATES, RunState

__all__ = [
    "Attention",
    "Overview",
    "RunTimeline",
    "SecretView",
    "TimelineStep",
    "resolve_commands",
    "scheduled_secrets",
    "timeline_of",
]

#: Outcomes after which the time to the next event is a deliberate wait (grace, backoff).
WAITING_OUTCOMES = frozenset({"wait", "retry", "throttled"})


@dataclass(frozen=True)
class SecretView:
    """One row of the secrets table: ``keyturn status``'s row and, for kinds that have one,
    when the current credential expires (``schedules.expires_at``)."""

    status: StatusRow
    expires_at: datetime | None = None

    @property
    def overdue(self) -> bool:
        return self.status.problem == "overdue"

    @property
    def stalled(self) -> bool:
        return self.status.problem == "stalled"

    @property
    def needs_attention(self) -> bool:
        return self.status.problem == "needs_attention"


@dataclass(frozen=True)
class TimelineStep:
    """One event of a run as a span: from the run's previous event (or its creation) to it."""

    step: str
    start: datetime
    end: datetime
    outcome: str
    from_state: str
    to_state: str
    attempt: int
    worker: str | None
    message: str | None
    #: The span began with a deliberate wait (retire grace, a retry's backoff).
    waited: bool

    @property
    def duration(self) -> timedelta:
        return self.end - self.start


@dataclass(frozen=True)
class RunTimeline:
    """A run and its steps in order; ``waiting_until`` when it waits right now."""

    run: Run
    steps: tuple[TimelineStep, ...]
    waiting_until: datetime | None


@dataclass(frozen=True)
class Attention:
    """A secret that needs a human: why, since when, and the commands that resolve it."""

    secret: str
    problem: str
    run_id: int | None
    state: str
    #: The step the run stopped at (its last event), when there is a run.
    step: str | None
    since: datetime | None
    detail: str
    commands: tuple[str, ...]


def resolve_commands(secret: str) -> tuple[str, ...]:
    """The commands that take a ``needs_attention`` run out of its state (``keyturn resolve``)."""
    name = shlex.quote(secret)
    return (f"keyturn resolve {name} --retry", f"keyturn resolve {name} --abandon")


def timeline_of(run: Run, events: Sequence[RunEvent], now: datetime) -> RunTimeline:
    """The run's events as consecutive spans (the same intervals as the step-duration metric)."""
    steps: list[TimelineStep] = []
    start = run.created_at
    previous_outcome: str | None = None
    for event in events:
        steps.append(
            TimelineStep(
                step=event.step,
                start=start,
                end=max(event.at, start),
                outcome=event.outcome,
                from_state=event.from_state,
                to_state=event.to_state,
                attempt=event.attempt,
                worker=event.worker,
                message=event.message,
                waited=previous_outcome in WAITING_OUTCOMES,
            )
        )
        start = max(event.at, start)
        previous_outcome = event.outcome
    waiting = run.next_attempt_at
    open_run = RunState(run.state) in ACTIVE_STATES and run.state != RunState.NEEDS_ATTENTION
    return RunTimeline(
        run, tuple(steps), waiting if open_run and waiting and waiting > now else None
    )


def scheduled_secrets(runtime: Runtime) -> list[Scheduled]:
    """Every schedule in the ledger with its policy; a secret being rotated counts as busy."""
    with runtime.ledger.sessions() as session:
        rows = session.execute(
            select(Schedule, PolicyRow)
            .join(PolicyRow, PolicyRow.name == Schedule.policy_name)
            .where(Schedule.removed_at.is_(None), PolicyRow.removed_at.is_(None))
        ).all()
        busy = set(
            session.scalars(
                select(Run.secret).where(Run.state.in_([s.value for s in ACTIVE_STATES]))
            )
        )
    items: list[Scheduled] = []
    for schedule, row in rows:
        policy = runtime.policy(row)
        items.append(
            Scheduled(
                secret=schedule.secret,
                policy=policy,
                provider=policy.provider or runtime.default_provider,
                last_rotated_at=schedule.last_rotated_at,
                next_due_at=schedule.next_due_at,
                busy=schedule.secret in busy,
                expires_at=schedule.expires_at,
            )
        )
    return items


class Overview:
    """Read-only questions about the ledger, for the dashboard (one per process)."""

    def __init__(self, runtime: Runtime, thresholds: Thresholds | None = None) -> None:
        self.runtime = runtime
        self.thresholds = thresholds or Thresholds.from_env(runtime.environ)

    @classmethod
    def open(cls, url: str | None = None) -> Overview:
        """Over ``url`` (default ``KEYTURN_DATABASE_URL``)."""
        return cls(Runtime(Ledger(url)))

    @property
    def ledger_url(self) -> str:
        return self.runtime.ledger.url

    def now(self) -> datetime:
        return self.runtime.clock()

    def close(self) -> None:
        self.runtime.close()

    def secrets(self, now: datetime) -> list[SecretView]:
        rows = status_rows(self.runtime, now, self.thresholds)
        return [SecretView(row, row.expires_at) for row in rows]

    def recent_runs(self, limit: int = 50, secret: str | None = None) -> list[Run]:
        return find_runs(self.runtime, secret=secret, limit=limit)

    def run(self, run_id: int, now: datetime) -> RunTimeline | None:
        run = get_run(self.runtime, run_id)
        if run is None:
            return None
        with self.runtime.ledger.sessions() as session:
            events = list(
                session.scalars(
                    select(RunEvent).where(RunEvent.run_id == run_id).order_by(RunEvent.id)
                )
            )
        return timeline_of(run, events, now)

    def attention(self, now: datetime) -> list[Attention]:
        """Needs-attention runs first, then stalled runs, then overdue secrets."""
        found: list[Attention] = []
        rows = [r for r in status_rows(self.runtime, now, self.thresholds) if r.problem]
        last_steps = self._last_steps([r.run_id for r in rows if r.run_id is not None])
        order = {"needs_attention": 0, "stalled": 1, "overdue": 2}
        for row in sorted(rows, key=lambda r: (order.get(r.problem or "", 3), r.secret)):
            found.append(_attention(row, last_steps.get(row.run_id or 0)))
        return found

    def forecast(
        self, now: datetime, days: int, budget: int, gap: timedelta = COLLISION_GAP
    ) -> Forecast:
        return forecast(scheduled_secrets(self.runtime), now, days, budget=budget, gap=gap)

    # --- helpers ---------------------------------------------------------------------------

    def _last_steps(self, run_ids: Sequence[int]) -> dict[int, RunEvent]:
        if not run_ids:
            return {}
        last = (
            select(func.max(RunEvent.id))
            .where(RunEvent.run_id.in_(run_ids))
            .group_by(RunEvent.run_id)
            .scalar_subquery()
        )
        with self.runtime.ledger.sessions() as session:
            return {
                e.run_id: e for e in session.scalars(select(RunEvent).where(RunEvent.id.in_(last)))
            }


def _attention(row: StatusRow, last: RunEvent | None) -> Attention:
    if row.problem == "needs_attention":
        return Attention(
            secret=row.secret,
            problem="needs_attention",
            run_id=row.run_id,
            state=row.state,
            step=last.step if last is not None else None,
            since=last.at if last is not None else None,
            detail=row.last_error or "no error recorded",
            commands=resolve_commands(row.secret),
        )
    if row.problem == "stalled":
        return Attention(
            secret=row.secret,
            problem="stalled",
            run_id=row.run_id,
            state=row.state,
            step=last.step if last is not None else None,
            since=last.at if last is not None else None,
            detail=f"no progress in {row.state}: is a worker consuming the queue?",
            commands=("keyturn doctor", f"keyturn history {shlex.quote(row.secret)}"),
        )
    return Attention(
        secret=row.secret,
        problem="overdue",
        run_id=row.run_id,
        state=row.state,
        step=None,
        since=row.next_due_at,
        detail="due, and no run started it: are beat and a worker running?",
        commands=("keyturn doctor", f"keyturn rotate {shlex.quote(row.secret)}"),
    )
