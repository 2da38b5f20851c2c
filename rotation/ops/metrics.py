"""Prometheus metrics computed from the ledger at each scrape (``keyturn metrics``).

Everything comes from Postgres (or the embedded SQLite ledger); nothing is counted in memory,
so any number of exporters report the same numbers and a restart loses nothing. Labels carry
secret and policy names only, never values. Every query is bounded: per-secret series by
``max_secrets`` (most urgent first, through ``ix_schedules_next_due_at``), step durations by the
last ``max_events`` events (a backward scan of the primary key) within ``window``.
"""

from __future__ import annotations

import logging
import math
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime, timedelta

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeHistogramMetricFamily,
    GaugeMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, aliased

from rotation.ledger.db import Ledger
from rotation.ledger.models import DispatcherTick, PolicyRow, Run, RunEvent, Schedule
from rotation.run.runtime import Clock
from rotation.run.states import FINAL_STATES, RunState

__all__ = ["DURATION_BUCKETS", "LedgerCollector"]

log = logging.getLogger("keyturn.metrics")

#: Upper bounds (seconds) of the step-duration buckets: milliseconds in memory, minutes when a
#: queue backs up or a target database is slow.
DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)

#: Outcomes after which the next interval is a deliberate wait (grace, backoff), not work.
_WAITING_OUTCOMES = frozenset({"wait", "retry", "throttled"})


class LedgerCollector(Collector):
    """A custom collector: queries the ledger on each ``collect()``."""

    def __init__(
        self,
        ledger: Ledger,
        *,
        clock: Clock | None = None,
        window: timedelta = timedelta(hours=24),
        max_events: int = 5000,
        max_secrets: int = 10000,
    ) -> None:
        self.ledger = ledger
        self.clock = clock
        self.window = window
        self.max_events = max_events
        self.max_secrets = max_secrets

    def describe(self) -> Iterable[Metric]:
        # no queries at registration time: the ledger may not be reachable yet
        return []

    def collect(self) -> Iterator[Metric]:
        started = time.perf_counter()
        try:
            # the database's time, as every decision of the engine (tests give their own)
            now = self.clock() if self.clock is not None else self.ledger.now()
            with self.ledger.sessions() as session:
                families = [
                    *self._schedules(session, now),
                    *self._dispatcher(session, now),
                    *self._runs(session),
                    self._step_durations(session, now),
                ]
        except SQLAlchemyError as exc:
            log.warning(
                "ledger unreachable during scrape: %s",
                type(exc).__name__,
                extra={"action": "metrics.ledger_down"},
            )
            families = []
        up = GaugeMetricFamily("keyturn_ledger_up", "1 if the last scrape could read the ledger.")
        up.add_metric([], 1.0 if families else 0.0)
        yield up
        yield from families
        elapsed = GaugeMetricFamily(
            "keyturn_scrape_duration_seconds", "Time spent querying the ledger for this scrape."
        )
        elapsed.add_metric([], time.perf_counter() - started)
        yield elapsed

    # --- the dispatcher ----------------------------------------------------------------------

    def _dispatcher(self, session: Session, now: datetime) -> list[Metric]:
        tick = session.get(DispatcherTick, 1)
        if tick is None:
            return []
        age = GaugeMetricFamily(
            "keyturn_dispatcher_last_tick_age_seconds",
            "Seconds since a dispatcher tick last ran (database time; beat sends one every "
            "KEYTURN_TICK_SECONDS); absent until the first tick.",
        )
        age.add_metric([], max(0.0, (now - tick.at).total_seconds()))
        return [age]

    # --- schedules -------------------------------------------------------------------------

    def _schedules(self, session: Session, now: datetime) -> list[Metric]:
        rows = session.execute(
            select(
                Schedule.secret,
                Schedule.policy_name,
                Schedule.next_due_at,
                Schedule.last_rotated_at,
            )
            .where(Schedule.removed_at.is_(None))
            .order_by(Schedule.next_due_at.asc().nulls_last(), Schedule.secret)
            .limit(self.max_secrets)
        ).all()
        age = GaugeMetricFamily(
            "keyturn_secret_age_seconds",
            "Seconds since the secret's last successful rotation (absent if never rotated).",
            labels=["secret", "policy"],
        )
        due = GaugeMetricFamily(
            "keyturn_secret_next_due_seconds",
            "Seconds until the next rotation is due; negative when overdue "
            "(absent while a run holds the secret).",
            labels=["secret", "policy"],
        )
        for secret, policy, next_due_at, last_rotated_at in rows:
            if last_rotated_at is not None:
                age.add_metric([secret, policy], (now - last_rotated_at).total_seconds())
            if next_due_at is not None:
                due.add_metric([secret, policy], (next_due_at - now).total_seconds())
        overdue = session.scalar(
            select(func.count()).select_from(Schedule).where(Schedule.next_due_at < now)
        )
        total = session.scalar(
            select(func.count()).select_from(Schedule).where(Schedule.removed_at.is_(None))
        )
        expiry = GaugeMetricFamily(
            "keyturn_certificate_expiry_seconds",
            "Seconds until the current certificate's not_after (negative once expired; kinds "
            "whose credentials expire, as read by the dispatcher).",
            labels=["secret", "policy"],
        )
        for secret, policy, expires_at in session.execute(
            select(Schedule.secret, Schedule.policy_name, Schedule.expires_at)
            .where(Schedule.removed_at.is_(None), Schedule.expires_at.is_not(None))
            .order_by(Schedule.expires_at, Schedule.secret)
            .limit(self.max_secrets)
        ):
            if expires_at is not None:
                expiry.add_metric([secret, policy], (expires_at - now).total_seconds())
        paused = GaugeMetricFamily(
            "keyturn_policy_paused",
            "1 if the policy is paused (its due secrets wait, and are not overdue), else 0.",
            labels=["policy"],
        )
        for name, is_paused in session.execute(
            select(PolicyRow.name, PolicyRow.paused)
            .where(PolicyRow.removed_at.is_(None))
            .order_by(PolicyRow.name)
        ):
            paused.add_metric([name], 1.0 if is_paused else 0.0)
        return [
            paused,
            age,
            due,
            expiry,
            GaugeMetricFamily(
                "keyturn_overdue_secrets",
                "Secrets whose next rotation is due but has not started.",
                value=float(overdue or 0),
            ),
            GaugeMetricFamily(
                "keyturn_scheduled_secrets",
                "Secrets governed by a policy (per-secret series stop at the exporter's limit).",
                value=float(total or 0),
            ),
        ]

    # --- runs ------------------------------------------------------------------------------

    def _runs(self, session: Session) -> list[Metric]:
        counts: dict[str, int] = {state.value: 0 for state in RunState}
        for state, count in session.execute(select(Run.state, func.count()).group_by(Run.state)):
            counts[state] = int(count)
        finished = CounterMetricFamily(
            "keyturn_runs",
            "Runs that ended, by outcome (state succeeded, failed or needs_attention).",
            labels=["state"],
        )
        active = GaugeMetricFamily(
            "keyturn_runs_active", "Runs in progress, by current state.", labels=["state"]
        )
        for state in RunState:
            family = finished if state in FINAL_STATES else active
            family.add_metric([state.value], float(counts.get(state.value, 0)))
        attention = GaugeMetricFamily(
            "keyturn_runs_needing_attention",
            "Runs stopped for a human (attempts exhausted or rollback impossible).",
            value=float(counts[RunState.NEEDS_ATTENTION.value]),
        )
        return [finished, active, attention]

    # --- step durations --------------------------------------------------------------------

    def _step_durations(self, session: Session, now: datetime) -> Metric:
        recent = (
            select(RunEvent.id, RunEvent.run_id, RunEvent.step, RunEvent.at)
            .order_by(RunEvent.id.desc())
            .limit(self.max_events)
            .subquery()
        )
        earlier = aliased(RunEvent)
        previous = aliased(RunEvent)
        previous_id = (
            select(func.max(earlier.id))
            .where(earlier.run_id == recent.c.run_id, earlier.id < recent.c.id)
            .scalar_subquery()
        )
        rows = session.execute(
            select(recent.c.step, recent.c.at, previous.at, previous.outcome, Run.created_at)
            .select_from(recent)
            .join(Run, Run.id == recent.c.run_id)
            .outerjoin(previous, previous.id == previous_id)
            .where(recent.c.at >= now - self.window)
        ).all()
        durations: dict[str, list[float]] = defaultdict(list)
        for step, at, previous_at, previous_outcome, created_at in rows:
            if previous_outcome in _WAITING_OUTCOMES:
                continue
            start = created_at if previous_at is None else previous_at
            durations[step].append(max(0.0, (at - start).total_seconds()))
        family = GaugeHistogramMetricFamily(
            "keyturn_step_duration_seconds",
            f"Seconds from a run's previous transition to each step's outcome, over the last "
            f"{_human(self.window)} (queue wait included; deliberate waits excluded).",
            labels=["step"],
        )
        for step in sorted(durations):
            values = durations[step]
            family.add_metric([step], _buckets(values, DURATION_BUCKETS), math.fsum(values))
        return family


def _buckets(values: Sequence[float], bounds: Sequence[float]) -> list[tuple[str, float]]:
    """Cumulative bucket counts, ``+Inf`` last."""
    out = [(repr(bound), float(sum(1 for v in values if v <= bound))) for bound in bounds]
    out.append(("+Inf", float(len(values))))
    return out


def _human(window: timedelta) -> str:
    seconds = int(window.total_seconds())
    if seconds % 3600 == 0:
        return f"{seconds // 3600}h"
    return f"{seconds}s"
